"""Training of the weight-space models on PyTorch Lightning.

:class:`Trainer` trains a model on a :class:`TaskSpec` with
:class:`lightning.pytorch.Trainer` (the module, the run-folder callback and
the checkpoint writer are in :mod:`nft_pyg.tasks.engine`):

- **Devices.** ``accelerator`` / ``devices`` / ``num_nodes`` / ``strategy`` /
  ``precision`` of :class:`TrainConfig` go to Lightning, which moves the
  model and the batches (pinned memory and non-blocking copies on CUDA).
  ``"auto"`` picks a GPU when there is one.
- **Distributed.** With several devices, nodes, or under ``torchrun`` /
  SLURM, Lightning runs DistributedDataParallel (``gloo`` on CPUs, ``nccl``
  on GPUs). ``batch_size`` is the *global* batch: every step trains on the
  same global batches as one process, split evenly between the ranks
  (:func:`~nft_pyg.tasks.engine.graph_loader`), and DDP's averaged
  gradient is the gradient of the global batch; :class:`~nft_pyg.nn.norm.PoolNorm`
  takes its statistics over the global batch.
- **Run folder** ``runs/<task>/<model>/<seed>/``: ``config.json``,
  ``metrics.jsonl`` (one record per epoch, then a ``"final"`` record with the
  test metrics of the best validation epoch, the train time and the
  parameter count; the records ``nft-pyg results`` reads), Lightning's
  ``last.ckpt`` (written atomically, read with ``weights_only=True``; it
  holds the best model so far) and the CSV logger's ``logs/metrics.csv``.
  ``resume=True`` continues an interrupted run from ``last.ckpt``; a folder
  that already holds a run is only started again with ``overwrite=True``.
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch.distributed as dist
from torch import Tensor, nn

from ..utils.io import atomic_write_text, safe_load
from .engine import AtomicCheckpointIO, RunRecorder, TaskModule, append_record

CONFIG, METRICS = "config.json", "metrics.jsonl"
#: Lightning's checkpoint of the last finished epoch
CHECKPOINT = "last.ckpt"
#: the checkpoint of the trainer before Lightning (cannot be resumed)
LEGACY_CHECKPOINT = "checkpoint.pt"
#: the CSV logger's folder inside a run folder
LOGS = "logs"


class ConfigurationError(ValueError):
    """A training setting, option or run folder that cannot be used as given."""


class RunFolderError(ConfigurationError):
    """The run folder already holds a run and neither resume nor overwrite was asked."""


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of processes: from ``torch.distributed``
    once it is started, else from the launcher's ``RANK`` / ``WORLD_SIZE``
    (``torchrun``, SLURM through Lightning) before it is."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    for rank, world in (("RANK", "WORLD_SIZE"), ("SLURM_PROCID", "SLURM_NTASKS")):
        if rank in os.environ and world in os.environ:
            return int(os.environ[rank]), int(os.environ[world])
    return 0, 1


def is_first_process() -> bool:
    """Whether this is global rank 0, the process that checks and writes the run
    folder, also before ``torch.distributed`` starts: under ``torchrun`` /
    SLURM from ``RANK`` / ``SLURM_PROCID``; the processes Lightning starts
    itself for several devices (``LOCAL_RANK`` > 0 or ``NODE_RANK`` > 0) are
    not."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    for key in ("RANK", "SLURM_PROCID"):
        if key in os.environ:
            return int(os.environ[key]) == 0
    return int(os.environ.get("LOCAL_RANK", 0)) == 0 and int(os.environ.get("NODE_RANK", 0)) == 0


# --- the task interface -----------------------------------------------------------------
@dataclass
class TaskSpec:
    """What the trainer needs to know about a task.

    Attributes:
        loss: ``loss(model, batch) -> scalar`` (mean over the batch's graphs).
        select: the validation metric that picks the best epoch.
        maximize: whether larger ``select`` is better.
        metrics: ``metrics() -> {name: torchmetrics.Metric}``, fresh metrics
            for one evaluation of one split.
        update: ``update(model, batch, metrics)`` feeds one batch to them.
        finish: optional ``finish(values) -> values`` applied to the computed
            metrics (e.g. a NaN that means "no skill").
    """

    loss: Callable[[nn.Module, Any], Tensor]
    select: str
    maximize: bool
    metrics: Callable[[], dict]
    update: Callable[[nn.Module, Any, dict], None]
    finish: Callable[[dict[str, float]], dict[str, float]] | None = None


#: the learning-rate schedules of :class:`TrainConfig`
LR_SCHEDULES = ("constant", "cosine")


def _positive(name: str, value, kind=int, allow_zero: bool = False) -> None:
    ok = isinstance(value, (int, float) if kind is float else int) and not isinstance(
        value, bool) and math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        what = "a non-negative" if allow_zero else "a positive"
        noun = "number" if kind is float else "integer"
        raise ConfigurationError(f"TrainConfig: {name} must be {what} {noun}, got {value!r}")


@dataclass
class TrainConfig:
    """Optimisation and device settings of one run (the model's settings live
    with the task)."""

    epochs: int = 10
    #: the global batch size (split between the processes)
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
    #: linear warm-up: the rate of step ``s`` is multiplied by ``min(1, s /
    #: warmup_steps)`` (step 0 at rate 0, as the papers' reference code);
    #: a cosine schedule then decays over the steps after the warm-up
    warmup_steps: int = 0
    #: before every evaluation, recompute the running statistics of the
    #: model's :class:`~nft_pyg.nn.norm.PoolNorm` layers over up to this many
    #: training batches with the current weights (0: keep the running
    #: averages of training). Running averages lag behind weights that move,
    #: and a pooled feature whose spread across networks is small next to
    #: that lag is normalised wrongly in eval mode. No effect on models
    #: without PoolNorm.
    recalibrate_batches: int = 32
    #: Lightning's ``accelerator``: ``"auto"`` (a GPU when there is one),
    #: ``"cpu"``, ``"gpu"`` / ``"cuda"``
    accelerator: str = "auto"
    #: devices per node: ``"auto"``, a count, or a list of GPU indices; under
    #: ``torchrun`` ``"auto"`` means the processes it started on this node
    devices: Any = "auto"
    num_nodes: int = 1
    #: ``"auto"``, ``"ddp"``, ``"ddp_spawn"``, ... (Lightning's strategies)
    strategy: str = "auto"
    #: Lightning's ``precision``: ``"32-true"``, ``"bf16-mixed"`` (GPUs), ``"64-true"``
    precision: str = "32-true"

    def __post_init__(self):
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigurationError(f"TrainConfig: lr_schedule must be one of {LR_SCHEDULES}, "
                                     f"got {self.lr_schedule!r}")
        for name in ("epochs", "batch_size", "eval_every", "eval_batch_size", "num_nodes"):
            _positive(name, getattr(self, name))
        _positive("lr", self.lr, float)
        _positive("weight_decay", self.weight_decay, float, allow_zero=True)
        _positive("recalibrate_batches", self.recalibrate_batches, allow_zero=True)
        _positive("warmup_steps", self.warmup_steps, allow_zero=True)
        if self.grad_clip is not None:
            _positive("grad_clip", self.grad_clip, float)
        if self.max_train_seconds is not None:
            _positive("max_train_seconds", self.max_train_seconds, float)

    def lr_at(self, step: int, total_steps: int) -> float:
        """The learning rate of optimiser step ``step`` (0-based) of ``total_steps``."""
        warm = min(1.0, step / self.warmup_steps) if self.warmup_steps else 1.0
        if self.lr_schedule == "constant":
            return self.lr * warm
        decay_steps = max(total_steps - self.warmup_steps, 1)
        progress = min(max(step - self.warmup_steps, 0) / decay_steps, 1.0)
        return warm * 0.5 * self.lr * (1.0 + math.cos(math.pi * progress))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def read_records(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / METRICS
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_state(run_dir: str | os.PathLike) -> str | None:
    """``"finished"`` (a final record), ``"interrupted"`` (a configuration or
    records but no final record) or ``None`` (no run) for a run folder."""
    folder = Path(run_dir)
    if any(r.get("final") for r in read_records(folder)):
        return "finished"
    if any((folder / name).exists() for name in (CONFIG, METRICS, CHECKPOINT,
                                                 LEGACY_CHECKPOINT)):
        return "interrupted"
    return None


def check_run_folder(run_dir: str | os.PathLike, resume: bool, overwrite: bool) -> None:
    """Raise :class:`RunFolderError` when ``run_dir`` holds a run that neither
    ``resume`` nor ``overwrite`` allows to touch, or a run of the earlier
    trainer that ``resume`` cannot continue."""
    run_dir = Path(run_dir)
    state = run_state(run_dir)
    if state is None or overwrite:
        return
    if resume:
        if not (run_dir / CHECKPOINT).exists() and (run_dir / LEGACY_CHECKPOINT).exists():
            raise RunFolderError(f"{run_dir} holds a run of the earlier trainer "
                                 f"({LEGACY_CHECKPOINT}), which cannot be resumed; pass "
                                 f"--overwrite to start it again")
        return
    raise RunFolderError(f"{run_dir} already holds a{'n' if state[0] == 'i' else ''} {state} "
                         f"run; pass --resume to continue it or --overwrite to start again")


class _NoAdvertising(logging.Filter):
    """Drops Lightning's tips to install other products (not about the run)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip:" not in record.getMessage()


def _lightning_quiet(banners: bool) -> None:
    """Lightning's banners (devices found and used) only with ``banners``, and
    no advice to add loader workers: the graphs are in memory and a worker
    costs more to start than it saves here."""
    # Lightning 2.6 on torch 2.13 warns on import, not about our code
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    import lightning.pytorch  # noqa: F401  (it sets its loggers' level on import)
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.INFO if banners else logging.WARNING)
        # the logger its banners and tips are logged on
        rank_zero = logging.getLogger(f"{name}.utilities.rank_zero")
        if not any(isinstance(f, _NoAdvertising) for f in rank_zero.filters):
            rank_zero.addFilter(_NoAdvertising())
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    # every rank evaluates the whole split: there is nothing to synchronise
    warnings.filterwarnings("ignore", message=r".*when logging on epoch level in distributed "
                                              r"setting.*")
    warnings.filterwarnings("ignore", message=r".*Checkpoint directory .* exists and is not "
                                              r"empty.*")
    warnings.filterwarnings("ignore", message=r".*Previous log files in this directory will "
                                              r"be deleted.*")   # see the CSV logger below


class Trainer:
    """Train ``model`` on ``train_set`` for a :class:`TaskSpec`, writing a run folder.

    Args:
        model: the model (Lightning moves it and wraps it for DDP).
        task: the :class:`TaskSpec`.
        train_set, val_set, test_set: PyG datasets (or lists of graphs).
        config: :class:`TrainConfig`.
        run_dir: the run folder (``None``: nothing is written).
        run_config: the JSON-serialisable description saved as ``config.json``.
        seed: seeds the shuffles (and is recorded).
        resume: continue from ``run_dir/last.ckpt`` if it exists (else start).
        overwrite: start again in a folder that already holds a run.
        progress: show progress bars (rank 0 only).
        callbacks: more Lightning callbacks (e.g. ``LearningRateMonitor``),
            run after the trainer's own run recorder.

    Raises:
        RunFolderError: ``run_dir`` holds a finished or interrupted run and
            neither ``resume`` nor ``overwrite`` is set, or ``resume`` is asked
            of a run of the earlier trainer (``checkpoint.pt``).
    """

    def __init__(self, model: nn.Module, task: TaskSpec, train_set, val_set, test_set,
                 config: TrainConfig, run_dir: str | os.PathLike | None = None,
                 run_config: dict | None = None, seed: int = 0, resume: bool = False,
                 overwrite: bool = False, progress: bool = True,
                 callbacks: Sequence[Any] = ()):
        self.model, self.task, self.config = model, task, config
        self.callbacks = list(callbacks)
        self.train_set, self.val_set, self.test_set = train_set, val_set, test_set
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.run_config = dict(run_config or {})
        self.seed, self.resume, self.overwrite = int(seed), bool(resume), bool(overwrite)
        self.progress = progress
        self.check_run_dir()

    def check_run_dir(self) -> None:
        """Raise :class:`RunFolderError` when the folder's run may not be touched."""
        if self.run_dir is not None and is_first_process():
            check_run_folder(self.run_dir, self.resume, self.overwrite)

    # --- run folder ------------------------------------------------------------------
    def _checkpoint_to_resume(self) -> Path | None:
        if self.run_dir is None or not self.resume:
            return None
        checkpoint = self.run_dir / CHECKPOINT
        return checkpoint if checkpoint.exists() else None

    def _prepare_run_dir(self, checkpoint: Path | None, writer: bool, world: int) -> None:
        if self.run_dir is None or not writer:
            return
        if checkpoint is not None:
            # drop the records of epochs after the checkpoint, and a final record
            epoch = int(_checkpoint_epoch(checkpoint))
            kept = [r for r in read_records(self.run_dir)
                    if r.get("epoch", 0) <= epoch and not r.get("final")]
            atomic_write_text("".join(json.dumps(r) + "\n" for r in kept),
                              self.run_dir / METRICS)
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for name in (CHECKPOINT, LEGACY_CHECKPOINT, METRICS):
            (self.run_dir / name).unlink(missing_ok=True)
        shutil.rmtree(self.run_dir / LOGS, ignore_errors=True)
        config = {**self.run_config, "train": asdict(self.config), "seed": self.seed,
                  "world_size": world}
        atomic_write_text(json.dumps(config, indent=2, default=str) + "\n",
                          self.run_dir / CONFIG)

    def _lightning_trainer(self, callbacks: list, logs: str | None):
        import lightning.pytorch as pl
        from lightning.pytorch.loggers import CSVLogger
        from lightning.pytorch.strategies import DDPStrategy

        config = self.config
        devices, num_nodes = config.devices, config.num_nodes
        local_world = os.environ.get("LOCAL_WORLD_SIZE")
        if devices == "auto" and local_world is not None and "GROUP_RANK" in os.environ:
            # under torchrun: one device per process it started on this node
            devices = int(local_world)
            num_nodes = max(num_nodes, int(os.environ["WORLD_SIZE"]) // devices)
        strategy = config.strategy
        if strategy == "ddp":
            strategy = DDPStrategy(find_unused_parameters=config.find_unused_parameters)
        elif strategy == "auto" and (num_nodes > 1 or devices not in ("auto", 1, "1")):
            strategy = DDPStrategy(find_unused_parameters=config.find_unused_parameters)
        # a resumed run logs to a folder of its own: Lightning's CSV logger
        # deletes the metrics.csv of the folder it starts in
        logger = (CSVLogger(self.run_dir, name="", version=logs) if logs is not None
                  else False)
        return pl.Trainer(
            accelerator=config.accelerator, devices=devices, num_nodes=num_nodes,
            strategy=strategy, precision=config.precision, max_epochs=config.epochs,
            gradient_clip_val=config.grad_clip, gradient_clip_algorithm="norm",
            check_val_every_n_epoch=config.eval_every, num_sanity_val_steps=0,
            use_distributed_sampler=False, logger=logger, log_every_n_steps=1,
            callbacks=callbacks, enable_checkpointing=self.run_dir is not None,
            enable_model_summary=False, enable_progress_bar=self.progress,
            plugins=[AtomicCheckpointIO()], default_root_dir=self.run_dir,
            inference_mode=False)

    def fit(self) -> dict[str, Any]:
        """Train, keep the best model by validation metric, evaluate it on the
        test split; returns the final record (also appended to metrics.jsonl)."""
        _lightning_quiet(banners=self.progress)
        from lightning.pytorch.callbacks import ModelCheckpoint

        module = TaskModule(self.model, self.task, self.config, self.train_set,
                            self.val_set, self.test_set, seed=self.seed)
        callbacks = [RunRecorder(self.run_dir, self.config), *self.callbacks]
        if self.run_dir is not None:
            # no monitor, top 1: the latest epoch, always under the same name
            callbacks.append(ModelCheckpoint(dirpath=self.run_dir, filename=CHECKPOINT[:-5],
                                             save_top_k=1, save_on_train_epoch_end=True,
                                             enable_version_counter=False))
        checkpoint = self._checkpoint_to_resume()
        logs = None
        if self.run_dir is not None:
            logs = LOGS if checkpoint is None else os.path.join(
                LOGS, f"resumed_after_epoch_{_checkpoint_epoch(checkpoint)}")
        trainer = self._lightning_trainer(callbacks, logs)
        # before fit Lightning does not know the ranks of the processes it starts
        self._prepare_run_dir(checkpoint, is_first_process(), trainer.world_size)
        trainer.fit(module, ckpt_path=checkpoint)
        if module.best_state is not None:
            self.model.load_state_dict(module.best_state)
        trainer.test(module, verbose=False)
        final = {"final": True, "best_epoch": module.best_epoch,
                 f"val_{self.task.select}": module.best_value,
                 **{f"test_{k}": v for k, v in module.last_test.items()},
                 "train_seconds": module.elapsed,
                 "num_parameters": count_parameters(self.model)}
        append_record(self.run_dir, final, trainer.is_global_zero)
        return final


def load_run_weights(run_dir: str | os.PathLike, best: bool = False) -> dict[str, Tensor]:
    """The model's state dict from a run folder's checkpoint: the last epoch's
    weights, or with ``best`` those of the best validation epoch so far
    (``last.ckpt``; a run of the earlier trainer: ``checkpoint.pt``)."""

    folder = Path(run_dir)
    if (folder / CHECKPOINT).exists():
        checkpoint = safe_load(folder / CHECKPOINT)
        if best:
            return checkpoint["nft_pyg"]["best_model"]
        return {key[len("model."):]: value for key, value in checkpoint["state_dict"].items()
                if key.startswith("model.")}
    legacy = safe_load(folder / LEGACY_CHECKPOINT)
    return legacy["best_model"] if best else legacy["model"]


def _checkpoint_epoch(path: Path) -> int:
    """The number of epochs finished in a Lightning checkpoint (written at the
    end of a training epoch, after its validation)."""
    progress = safe_load(path)["loops"]["fit_loop"]["epoch_progress"]["current"]
    return int(progress["processed"])
