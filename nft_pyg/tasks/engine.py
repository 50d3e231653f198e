"""The PyTorch Lightning side of the trainer: the module, the run-folder
callback and atomic checkpoints.

:class:`~nft_pyg.tasks.trainer.Trainer` builds these; nothing here is needed
to use a model outside training.
"""
from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch import Tensor, nn
from torch.utils.data import DistributedSampler

from ..graph.collate import GraphLoader, collate_graphs
from ..nn.norm import PoolNorm
from ..utils.io import atomic_save, safe_load

#: the run folder's per-epoch records and final record
METRICS = "metrics.jsonl"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoints written with :func:`~nft_pyg.utils.io.atomic_save`
    (temporary file + rename, the user's umask) and read back with
    :func:`~nft_pyg.utils.io.safe_load` (``weights_only=True``)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        atomic_save(checkpoint, path)

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict[str, Any]:
        return safe_load(path)


def graph_loader(dataset, batch_size: int, *, shuffle: bool, seed: int = 0, rank: int = 0,
                 world: int = 1, pin_memory: bool = False) -> GraphLoader:
    """A loader of ``dataset`` for rank ``rank`` of ``world``.

    Training loaders (``shuffle=True``) draw every epoch the same seeded
    permutation on every rank (torch's :class:`DistributedSampler`, whose
    epoch Lightning sets) and give rank ``r`` positions ``r, r + world, ...``;
    with ``batch_size`` the global batch size, every step then trains on
    ``batch_size`` consecutive items of the permutation, split evenly between
    the ranks, the same global batches as one process. Under ``world > 1`` the
    last ``len(dataset) % world`` items of each permutation are dropped, so
    that every rank takes part in every step with the same number of graphs
    (and DDP's averaged gradient is the gradient of the global batch).
    Evaluation loaders (``shuffle=False``) give every rank the whole split.
    """
    if not shuffle:
        return GraphLoader(dataset, batch_size=batch_size, shuffle=False, pin_memory=pin_memory)
    if batch_size % world:
        raise ValueError(f"the global batch size {batch_size} must be a multiple of the "
                         f"number of processes {world}")
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True,
                                 seed=seed, drop_last=world > 1)
    return GraphLoader(dataset, batch_size=batch_size // world, sampler=sampler,
                       pin_memory=pin_memory)


def fresh_metrics(task, device: torch.device) -> dict:
    """The task's torchmetrics on ``device``, accumulating in float64 (where the
    device has it; torchmetrics' ``to`` resets the dtype, hence the order)."""
    dtype = torch.float32 if torch.device(device).type == "mps" else torch.float64
    return {name: metric.to(device).set_dtype(dtype) for name, metric in task.metrics().items()}


class EpochTally:
    """A training epoch's running loss, graph count and wall-clock marks: a
    plain object, so the per-step updates skip ``nn.Module.__setattr__``."""

    def __init__(self, device: torch.device):
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        self.count = 0
        self.started = self.train_ended = time.perf_counter()

    def add(self, loss: Tensor, num_graphs: int) -> None:
        self.loss_sum += loss.detach().double() * num_graphs
        self.count += num_graphs


class TaskModule(pl.LightningModule):
    """A model trained on a :class:`~nft_pyg.tasks.trainer.TaskSpec`.

    Training: the task's loss, AdamW, the learning rate of
    :meth:`TrainConfig.lr_at` set step by step. Validation and test: every
    rank evaluates the whole split with the task's torchmetrics, after
    recalibrating the PoolNorm statistics. The best
    validation state so far, the train time and the random state travel
    with Lightning's checkpoint.
    """

    def __init__(self, model: nn.Module, task, config, train_set, val_set, test_set,
                 seed: int = 0):
        super().__init__()
        self.model, self.task, self.config, self.seed = model, task, config, int(seed)
        self.train_set, self.val_set, self.test_set = train_set, val_set, test_set
        self.elapsed = 0.0
        self.best_value: float | None = None
        self.best_epoch = 0
        self.best_state: dict[str, Tensor] | None = None
        self.last_val: dict[str, float] = {}
        self.last_test: dict[str, float] = {}
        self._metrics: dict | None = None
        self._metric_cache: tuple | None = None
        self.tally: EpochTally | None = None

    # --- data --------------------------------------------------------------------------
    def _pin(self) -> bool:
        return self.trainer is not None and self.trainer.strategy.root_device.type == "cuda"

    def train_dataloader(self):
        return graph_loader(self.train_set, self.config.batch_size, shuffle=True,
                            seed=self.seed, rank=self.global_rank,
                            world=self.trainer.world_size, pin_memory=self._pin())

    def val_dataloader(self):
        return graph_loader(self.val_set, self.config.eval_batch_size, shuffle=False,
                            pin_memory=self._pin())

    def test_dataloader(self):
        return graph_loader(self.test_set, self.config.eval_batch_size, shuffle=False,
                            pin_memory=self._pin())

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        if device.type == "cpu":      # the loaders build batches there: nothing to move
            return batch
        # Lightning's default copies a PyG Batch blocking; PyG's ``to`` can overlap
        # the copy of pinned memory with compute
        if hasattr(batch, "to") and device.type == "cuda":
            return batch.to(device, non_blocking=True)
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    # --- optimisation ------------------------------------------------------------------
    def configure_optimizers(self):
        config = self.config
        optimizer = torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad],
                                      lr=config.lr, weight_decay=config.weight_decay)
        if config.lr_schedule == "constant" and not config.warmup_steps:
            return optimizer
        total = int(self.trainer.estimated_stepping_batches)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: config.lr_at(step, total) / config.lr)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def forward(self, batch):
        return self.model(batch)

    def on_train_epoch_start(self) -> None:
        self.tally = EpochTally(self.device)

    def training_step(self, batch, batch_idx):
        loss = self.task.loss(self.model, batch)
        if self.logger is not None:
            self.log("train_loss", loss.detach(), batch_size=batch.num_graphs, on_step=True,
                     on_epoch=False, prog_bar=True)
        self.tally.add(loss, batch.num_graphs)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        self.tally.train_ended = time.perf_counter()

    def epoch_train_loss(self) -> float:
        """The mean loss per graph of this epoch's training steps, over all ranks."""
        tally = self.tally
        totals = torch.stack([tally.loss_sum, tally.loss_sum.new_tensor(float(tally.count))])
        totals = self.trainer.strategy.reduce(totals, reduce_op="sum")
        return float(totals[0] / totals[1].clamp(min=1))

    # --- evaluation ----------------------------------------------------------------------
    def _start_evaluation(self) -> None:
        # built once per device (a torchmetrics object costs ~1 ms to make), reset
        if self._metric_cache is None or self._metric_cache[0] != self.device:
            self._metric_cache = (self.device, fresh_metrics(self.task, self.device))
        self._metrics = self._metric_cache[1]
        for metric in self._metrics.values():
            metric.reset()

    def _evaluation_step(self, batch) -> None:
        self.task.update(self.model, batch, self._metrics)

    def _finish_evaluation(self) -> dict[str, float]:
        values = {name: float(metric.compute()) for name, metric in self._metrics.items()}
        if self.task.finish is not None:
            values = self.task.finish(values)
        self._metrics = None
        return values

    def on_validation_epoch_start(self) -> None:
        if not self.trainer.sanity_checking:
            recalibrate_pool_norms(self.model, self.train_set, self.config.batch_size,
                                   self.config.recalibrate_batches, self.global_rank,
                                   self.trainer.world_size, device=self.device)
        self._start_evaluation()

    def validation_step(self, batch, batch_idx):
        self._evaluation_step(batch)

    def on_validation_epoch_end(self) -> None:
        values = self._finish_evaluation()
        self.last_val = values
        value = float(values[self.task.select])
        if self._is_better(value):
            self.best_value, self.best_epoch = value, self.current_epoch + 1
            self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self._log_epoch_metrics({f"val_{k}": v for k, v in values.items()})

    def on_test_epoch_start(self) -> None:
        self._start_evaluation()

    def test_step(self, batch, batch_idx):
        self._evaluation_step(batch)

    def on_test_epoch_end(self) -> None:
        self.last_test = self._finish_evaluation()
        self._log_epoch_metrics({f"test_{k}": v for k, v in self.last_test.items()})

    def _log_epoch_metrics(self, values: dict[str, float]) -> None:
        # for callbacks that monitor a metric (EarlyStopping, ModelCheckpoint);
        # every rank evaluated the whole split, so there is nothing to reduce
        self.log_dict(values, logger=False, on_step=False, on_epoch=True)
        # the logger straight: Lightning would log these under its own step keys
        if self.trainer.is_global_zero and self.logger is not None:
            self.logger.log_metrics({**values, "epoch": self.current_epoch},
                                    step=self.global_step)

    def _is_better(self, value: float) -> bool:
        if self.best_value is None or math.isnan(self.best_value):
            return not math.isnan(value)
        return value > self.best_value if self.task.maximize else value < self.best_value

    # --- checkpoints -------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["nft_pyg"] = {
            "elapsed": self.elapsed, "best_value": self.best_value,
            "best_epoch": self.best_epoch, "best_model": self.best_state,
            "rng": {"torch": torch.get_rng_state(),
                    "python": list(random.getstate()[1]),
                    "cuda": (torch.cuda.get_rng_state_all() if torch.cuda.is_available()
                             else [])}}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint["nft_pyg"]
        self.elapsed = float(state["elapsed"])
        self.best_value, self.best_epoch = state["best_value"], int(state["best_epoch"])
        self.best_state = state["best_model"]
        torch.set_rng_state(state["rng"]["torch"])
        random.setstate((3, tuple(state["rng"]["python"]), None))
        if state["rng"]["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])


class RunRecorder(pl.Callback):
    """After every training epoch (Lightning validates before this point):
    the epoch's train time and loss, the validation metrics, one record in
    ``metrics.jsonl`` (rank 0), and the stop of a run that spent its
    ``max_train_seconds``. Also evaluates on the last epoch when
    ``eval_every`` does not divide ``epochs``."""

    def __init__(self, run_dir: Path | None, config):
        self.run_dir, self.config = run_dir, config

    def on_train_epoch_start(self, trainer, module: TaskModule) -> None:
        last = trainer.current_epoch + 1 == trainer.max_epochs
        trainer.check_val_every_n_epoch = 1 if last else self.config.eval_every

    def on_train_epoch_end(self, trainer, module: TaskModule) -> None:
        module.elapsed += module.tally.train_ended - module.tally.started
        epoch = trainer.current_epoch + 1
        record = {"epoch": epoch, "train_loss": module.epoch_train_loss(),
                  "train_seconds": module.elapsed}
        evaluated = epoch % self.config.eval_every == 0 or epoch == trainer.max_epochs
        if evaluated and module.last_val:
            record.update({f"val_{k}": v for k, v in module.last_val.items()})
        append_record(self.run_dir, record, trainer.is_global_zero)
        budget = self.config.max_train_seconds
        if budget is not None:
            spent = trainer.strategy.reduce_boolean_decision(module.elapsed > budget,
                                                             all=False)
            trainer.should_stop = trainer.should_stop or spent


def append_record(run_dir: Path | None, record: dict, writer: bool = True) -> None:
    if run_dir is None or not writer:
        return
    with open(run_dir / METRICS, "a") as handle:
        handle.write(json.dumps(record) + "\n")


def recalibrate_pool_norms(model: nn.Module, dataset, batch_size: int, max_batches: int,
                           rank: int = 0, world: int = 1,
                           device: torch.device | str | None = None) -> int:
    """Reset the running statistics of every :class:`~nft_pyg.nn.norm.PoolNorm`
    of ``model`` and recompute them as the plain average of the batch
    statistics of up to ``max_batches`` batches of ``dataset`` (evenly
    spaced items, in order), with the current weights. Every other module
    runs in eval mode, as in the evaluation that follows (no dropout, other
    norms untouched). The random state is left as it was. Under
    :mod:`torch.distributed` rank ``r`` forwards items
    ``r, r + world, ...`` of each batch and :class:`PoolNorm` all-reduces,
    so every rank gets the statistics of the whole batches. Batches go to
    ``device`` (default: where the model's first parameter is). Returns the
    number of recalibrated layers."""
    norms = [m for m in model.modules() if isinstance(m, PoolNorm) and m.track_running_stats]
    if not norms or max_batches < 1:
        return 0
    if device is None:
        device = next(model.parameters()).device
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
    forks = [torch.device(device).index or 0] if torch.device(device).type == "cuda" else []
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=forks):
            for chunk in chunks:
                local = chunk[rank::world]
                model(collate_graphs([dataset[i] for i in local]).to(device))
    finally:
        for norm, momentum in zip(norms, momenta):
            norm.momentum = momentum
        model.train(was_training)
    return len(norms)
