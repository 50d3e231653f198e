"""A small training loop around plain PyTorch, with DDP when it is initialised.

- **Distributed.** When ``torch.distributed`` is initialised (or the
  ``torchrun`` environment variables ``WORLD_SIZE`` / ``RANK`` /
  ``MASTER_ADDR`` are set, in which case :func:`init_distributed` starts the
  process group: ``gloo`` on CPU, ``nccl`` on GPUs), the model is wrapped in
  :class:`torch.nn.parallel.DistributedDataParallel`, each global batch is
  split between the ranks (:class:`ShardedBatchSampler`) and DDP all-reduces
  the gradients. The per-rank loss is rescaled by its share of the global
  batch, so the averaged gradient equals the single-process gradient of the
  same global batch, also for a last batch that does not split evenly.
- **Run folder** ``runs/<task>/<model>/<seed>/``: ``config.json``,
  ``metrics.jsonl`` (one record per epoch, then a ``"final"`` record with
  the test metrics of the best validation epoch, the train time and the
  parameter count) and ``checkpoint.pt`` (model, optimizer, epoch, RNG
  states, best model so far; written with
  :func:`~nft_pyg.datasets.io.atomic_save`, read with
  :func:`~nft_pyg.datasets.io.safe_load`). ``resume=True`` continues an
  interrupted run from its checkpoint.
"""
from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import Sampler
from ..graph.collate import GraphLoader as DataLoader, collate_graphs
from tqdm.auto import tqdm

from ..utils.io import atomic_save, atomic_write_text, safe_load

CHECKPOINT, CONFIG, METRICS = "checkpoint.pt", "config.json", "metrics.jsonl"


# --- distributed ---------------------------------------------------------------------
def init_distributed(backend: str | None = None) -> bool:
    """Start the process group from ``torchrun``'s environment variables if
    they are set and it is not started yet; ``True`` when running distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size() > 1
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or "MASTER_ADDR" not in os.environ:
        return False
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend)
    return dist.get_world_size() > 1


def rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class ShardedBatchSampler(Sampler[list[int]]):
    """Global batches of a seeded per-epoch shuffle, each split between ranks.

    Every rank draws the same permutation (seed + epoch), cuts it into global
    batches of ``batch_size`` and keeps positions ``rank, rank + world, ...``
    of each batch. A last global batch with fewer items than ranks is
    dropped (every rank must take part in every step).
    """

    def __init__(self, num_items: int, batch_size: int, seed: int, rank: int = 0,
                 world: int = 1, shuffle: bool = True):
        if batch_size < world:
            raise ValueError(f"ShardedBatchSampler: the global batch size {batch_size} is "
                             f"smaller than the number of processes {world}")
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.rank, self.world, self.shuffle, self.epoch = rank, world, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def global_batches(self) -> list[list[int]]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.num_items, generator=generator).tolist()
        else:
            order = list(range(self.num_items))
        batches = [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        return [b for b in batches if len(b) >= self.world]

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.global_batches():
            yield batch[self.rank::self.world]

    def __len__(self) -> int:
        return len(self.global_batches())


# --- the task interface -----------------------------------------------------------------
@dataclass
class TaskSpec:
    """What the trainer needs to know about a task.

    Attributes:
        loss: ``loss(model, batch) -> scalar`` (mean over the batch's graphs).
        evaluate: ``evaluate(model, loader) -> dict`` of metrics on a split.
        select: the validation metric that picks the best epoch.
        maximize: whether larger ``select`` is better.
    """

    loss: Callable[[nn.Module, Any], Tensor]
    evaluate: Callable[[nn.Module, Any], dict[str, float]]
    select: str
    maximize: bool


#: the learning-rate schedules of :class:`TrainConfig`
LR_SCHEDULES = ("constant", "cosine")


@dataclass
class TrainConfig:
    """Optimisation settings of one run (the model's settings live with the task)."""

    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    grad_clip: float | None = 1.0
    eval_every: int = 1
    eval_batch_size: int = 64
    find_unused_parameters: bool = True
    max_train_seconds: float | None = None
    #: ``"constant"`` or ``"cosine"`` (from ``lr`` down to 0 over all
    #: ``epochs``, step by step; derived from the step index, so a resumed run
    #: continues the same schedule)
    lr_schedule: str = "constant"
    #: before every evaluation, recompute the running statistics of the
    #: model's :class:`~nft_pyg.nn.norm.PoolNorm` layers over up to this many
    #: training batches with the current weights (0: keep the running
    #: averages of training). Running averages lag behind weights that move,
    #: and a pooled feature whose spread across networks is small next to
    #: that lag is normalised wrongly in eval mode. No effect on models
    #: without PoolNorm.
    recalibrate_batches: int = 32

    def __post_init__(self):
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"TrainConfig: lr_schedule must be one of {LR_SCHEDULES}, got "
                             f"{self.lr_schedule!r}")

    def lr_at(self, step: int, total_steps: int) -> float:
        """The learning rate of optimiser step ``step`` (0-based) of ``total_steps``."""
        if self.lr_schedule == "constant":
            return self.lr
        return 0.5 * self.lr * (1.0 + math.cos(math.pi * step / max(total_steps, 1)))


def recalibrate_pool_norms(model: nn.Module, dataset, batch_size: int, max_batches: int,
                           rank: int = 0, world: int = 1) -> int:
    """Reset the running statistics of every :class:`~nft_pyg.nn.norm.PoolNorm`
    of ``model`` and recompute them as the plain average of the batch
    statistics of up to ``max_batches`` batches of ``dataset`` (evenly
    spaced items, in order), with the current weights. Every other module
    runs in eval mode, as in the evaluation that follows (no dropout, other
    norms untouched). The random state is left as it was. Under
    :mod:`torch.distributed` rank ``r`` forwards items
    ``r, r + world, ...`` of each batch and :class:`PoolNorm` all-reduces,
    so every rank gets the statistics of the whole batches. Returns the
    number of recalibrated layers."""
    from ..nn.norm import PoolNorm

    norms = [m for m in model.modules() if isinstance(m, PoolNorm) and m.track_running_stats]
    if not norms or max_batches < 1:
        return 0
    count = min(len(dataset), batch_size * max_batches)
    stride = len(dataset) / count
    indices = [int(i * stride) for i in range(count)]
    chunks = [indices[i:i + batch_size] for i in range(0, count, batch_size)]
    chunks = [chunk for chunk in chunks if len(chunk) >= max(world, 2)]
    momenta = [m.momentum for m in norms]
    was_training = model.training
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None          # cumulative average over the batches below
    model.eval()
    for norm in norms:
        norm.train()
    try:
        with torch.no_grad(), torch.random.fork_rng():
            for chunk in chunks:
                local = chunk[rank::world]
                model(collate_graphs([dataset[i] for i in local]))
    finally:
        for norm, momentum in zip(norms, momenta):
            norm.momentum = momentum
        model.train(was_training)
    return len(norms)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "python": list(random.getstate()[1])}


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), None))


class Trainer:
    """Train ``model`` on ``train_set`` for a :class:`TaskSpec`, writing a run folder.

    Args:
        model: the model (unwrapped; DDP wrapping happens here).
        task: the :class:`TaskSpec`.
        train_set, val_set, test_set: PyG datasets (or lists of graphs).
        config: :class:`TrainConfig`.
        run_dir: the run folder (``None``: nothing is written).
        run_config: the JSON-serialisable description saved as ``config.json``.
        seed: seeds the shuffles (and is recorded).
        resume: continue from ``run_dir/checkpoint.pt`` if it exists.
        progress: show tqdm bars (rank 0 only).
    """

    def __init__(self, model: nn.Module, task: TaskSpec, train_set, val_set, test_set,
                 config: TrainConfig, run_dir: str | os.PathLike | None = None,
                 run_config: dict | None = None, seed: int = 0, resume: bool = False,
                 progress: bool = True):
        self.rank, self.world = rank_and_world()
        self.model, self.task, self.config = model, task, config
        self.train_set, self.val_set, self.test_set = train_set, val_set, test_set
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.run_config = dict(run_config or {})
        self.seed, self.resume = int(seed), bool(resume)
        self.progress = progress and self.rank == 0
        self.optimizer = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad], lr=config.lr,
            weight_decay=config.weight_decay)
        self.sampler = ShardedBatchSampler(len(train_set), config.batch_size, self.seed,
                                           self.rank, self.world)
        self.train_loader = DataLoader(train_set, batch_sampler=self.sampler)
        self.start_epoch, self.elapsed = 1, 0.0
        self.best_value: float | None = None
        self.best_epoch = 0
        self.best_state: dict[str, Tensor] | None = None
        self.ddp_model = model
        if self.world > 1:
            self.ddp_model = nn.parallel.DistributedDataParallel(
                model, find_unused_parameters=config.find_unused_parameters)

    # --- run folder ------------------------------------------------------------------
    @property
    def is_writer(self) -> bool:
        return self.run_dir is not None and self.rank == 0

    def _write_metrics(self, record: dict) -> None:
        if not self.is_writer:
            return
        with open(self.run_dir / METRICS, "a") as handle:
            handle.write(json.dumps(record) + "\n")

    def _prepare_run_dir(self) -> None:
        if self.run_dir is None:
            return
        checkpoint = self.run_dir / CHECKPOINT
        if self.resume and checkpoint.exists():
            self._load_checkpoint(checkpoint)
            if self.is_writer:   # drop records of epochs after the checkpoint
                path = self.run_dir / METRICS
                records = [json.loads(line) for line in path.read_text().splitlines()
                           if line.strip()] if path.exists() else []
                kept = [r for r in records if r.get("epoch", 0) < self.start_epoch
                        and not r.get("final")]
                atomic_write_text("".join(json.dumps(r) + "\n" for r in kept), path)
            return
        if self.is_writer:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            for name in (CHECKPOINT, METRICS):
                (self.run_dir / name).unlink(missing_ok=True)
            config = {**self.run_config, "train": {**vars(self.config)}, "seed": self.seed,
                      "world_size": self.world}
            atomic_write_text(json.dumps(config, indent=2, default=str) + "\n",
                              self.run_dir / CONFIG)

    def _save_checkpoint(self, epoch: int) -> None:
        if not self.is_writer:
            return
        atomic_save({"model": self.model.state_dict(),
                     "optimizer": self.optimizer.state_dict(), "epoch": epoch,
                     "elapsed": self.elapsed, "rng": _rng_state(),
                     "best_value": self.best_value, "best_epoch": self.best_epoch,
                     "best_model": self.best_state}, self.run_dir / CHECKPOINT)

    def _load_checkpoint(self, path: Path) -> None:
        state = safe_load(path)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.start_epoch = int(state["epoch"]) + 1
        self.elapsed = float(state["elapsed"])
        self.best_value, self.best_epoch = state["best_value"], int(state["best_epoch"])
        self.best_state = state["best_model"]
        _set_rng_state(state["rng"])

    # --- loop ------------------------------------------------------------------------
    def _is_better(self, value: float) -> bool:
        if self.best_value is None or math.isnan(self.best_value):
            return not math.isnan(value)
        return value > self.best_value if self.task.maximize else value < self.best_value

    def evaluate(self, dataset) -> dict[str, float]:
        loader = DataLoader(dataset, batch_size=self.config.eval_batch_size, shuffle=False)
        was_training = self.model.training
        self.model.eval()
        with torch.no_grad():
            metrics = self.task.evaluate(self.model, loader)
        self.model.train(was_training)
        return metrics

    def train_epoch(self, epoch: int) -> float:
        self.model.train()
        self.sampler.set_epoch(epoch)
        batches = self.sampler.global_batches()
        total, count = 0.0, 0
        bar = tqdm(zip(batches, self.train_loader), total=len(batches), leave=False,
                   desc=f"epoch {epoch}", disable=not self.progress)
        first_step, total_steps = (epoch - 1) * len(batches), self.config.epochs * len(batches)
        for step, (global_batch, batch) in enumerate(bar, start=first_step):
            for group in self.optimizer.param_groups:
                group["lr"] = self.config.lr_at(step, total_steps)
            share = batch.num_graphs * self.world / len(global_batch)
            loss = self.task.loss(self.ddp_model, batch)
            self.optimizer.zero_grad(set_to_none=True)
            (loss * share).backward()
            if self.config.grad_clip:
                nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
            self.optimizer.step()
            total += float(loss.detach()) * batch.num_graphs
            count += batch.num_graphs
            bar.set_postfix(loss=f"{float(loss.detach()):.4g}")
        return total / max(count, 1)

    def fit(self) -> dict[str, Any]:
        """Train, keep the best model by validation metric, evaluate it on the
        test split; returns the final record (also appended to metrics.jsonl)."""
        self._prepare_run_dir()
        epochs = range(self.start_epoch, self.config.epochs + 1)
        bar = tqdm(epochs, desc=self.run_config.get("name", "training"),
                   disable=not self.progress)
        for epoch in bar:
            started = time.perf_counter()
            train_loss = self.train_epoch(epoch)
            self.elapsed += time.perf_counter() - started
            record = {"epoch": epoch, "train_loss": train_loss,
                      "train_seconds": self.elapsed}
            if epoch % self.config.eval_every == 0 or epoch == self.config.epochs:
                recalibrate_pool_norms(self.model, self.train_set, self.config.batch_size,
                                       self.config.recalibrate_batches, self.rank, self.world)
                val = self.evaluate(self.val_set)
                record.update({f"val_{k}": v for k, v in val.items()})
                value = float(val[self.task.select])
                if self._is_better(value):
                    self.best_value, self.best_epoch = value, epoch
                    self.best_state = {k: v.detach().clone()
                                       for k, v in self.model.state_dict().items()}
                bar.set_postfix(loss=f"{train_loss:.4g}",
                                **{self.task.select: f"{value:.4g}"})
            self._write_metrics(record)
            self._save_checkpoint(epoch)
            budget = self.config.max_train_seconds
            if budget is not None and self.elapsed > budget:
                break
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        test = self.evaluate(self.test_set)
        final = {"final": True, "best_epoch": self.best_epoch,
                 f"val_{self.task.select}": self.best_value,
                 **{f"test_{k}": v for k, v in test.items()},
                 "train_seconds": self.elapsed, "num_parameters": count_parameters(self.model)}
        self._write_metrics(final)
        return final
