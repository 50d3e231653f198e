"""One run of a task with one model: data, model, trainer, run folder."""
from __future__ import annotations

import copy
import os
from dataclasses import fields
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch_geometric.transforms import Compose

from ..transforms.augment import AUGMENTATIONS
from .data import TASK_DATASET, load_splits
from .models import TASK_MODELS, build_model
from .specs import SPECS
from .trainer import TrainConfig, Trainer, init_distributed, rank_and_world

TASKS = tuple(TASK_MODELS)
#: optimisation defaults per task (overridable)
TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    "classification": {"epochs": 30, "batch_size": 32, "lr": 1e-3},
    "generalization": {"epochs": 30, "batch_size": 32, "lr": 1e-3},
    "editing": {"epochs": 30, "batch_size": 32, "lr": 1e-3},
}
NUM_CLASSES = 10
#: the datasets each task can run on
TASK_DATASETS = {"classification": ("digits_inr", "mnist_inr"),
                 "generalization": ("digits_cnn_zoo",),
                 "editing": ("digits_inr", "mnist_inr")}


def with_augmentations(dataset, augment: Sequence[str]):
    """A shallow copy of ``dataset`` whose graphs pass through the named
    augmentations (``dataset`` itself is left as it is)."""
    unknown = [name for name in augment if name not in AUGMENTATIONS]
    if unknown:
        raise ValueError(f"run_task: unknown augmentations {unknown}; choose from "
                         f"{sorted(AUGMENTATIONS)}")
    if not augment:
        return dataset
    transforms = [AUGMENTATIONS[name]() for name in augment]
    if dataset.transform is not None:
        transforms.insert(0, dataset.transform)
    augmented = copy.copy(dataset)
    augmented.transform = Compose(transforms)
    return augmented


def run_folder(runs_root: str | os.PathLike, task: str, model: str, seed: int) -> Path:
    return Path(runs_root) / task / model / str(seed)


def run_task(task: str, model: str, seed: int = 0, size: str = "small",
             data_root: str | os.PathLike = "data", runs_root: str | os.PathLike = "runs",
             resume: bool = False, progress: bool = True, splits: dict | None = None,
             model_options: dict | None = None, run_dir: str | os.PathLike | None = None,
             data_options: dict | None = None, augment: Sequence[str] = (),
             dataset: str | None = None, model_factory: Callable | None = None,
             **train_options) -> dict[str, Any]:
    """Train ``model`` on ``task`` and return the final record (test metrics
    at the best validation epoch, train time, parameter count).

    Args:
        task: ``"classification"``, ``"generalization"`` or ``"editing"``.
        model: one of :data:`~nft_pyg.tasks.models.TASK_MODELS` ``[task]``.
        seed: model initialisation and batch order (the dataset's seed is fixed).
        size: dataset size (``"small"`` or ``"full"``).
        data_root, runs_root: folders of the datasets and of the runs.
        resume: continue from the run folder's checkpoint.
        splits: already loaded ``{"train", "val", "test"}`` datasets.
        model_options: overrides of the model's defaults (e.g. ``hidden``).
        run_dir: the run folder (default ``runs_root/task/model/seed``).
        data_options: passed to the dataset class (e.g. ``num_images``).
        augment: names of function-preserving augmentations of the training
            graphs (:data:`~nft_pyg.transforms.augment.AUGMENTATIONS`:
            ``"sign_flip"``, ``"permute"``), drawn anew every epoch.
        dataset: the dataset (default :data:`~nft_pyg.tasks.data.TASK_DATASET` ``[task]``;
            ``"mnist_inr"`` for the INR tasks on real MNIST digits).
        model_factory: ``model_factory(train_set, out, model_options) -> nn.Module``
            builds the model instead of
            :func:`~nft_pyg.tasks.models.build_model` (benchmark-only models,
            e.g. the published ``nfn`` package's layers); ``model`` then only
            names the run.
        train_options: fields of :class:`~nft_pyg.tasks.trainer.TrainConfig`.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose from {TASKS}")
    init_distributed()
    known = {f.name for f in fields(TrainConfig)}
    unknown = set(train_options) - known
    if unknown:
        raise ValueError(f"run_task: unknown training options {sorted(unknown)}")
    config = TrainConfig(**{**TASK_DEFAULTS[task], **{k: v for k, v in train_options.items()
                                                      if v is not None}})
    dataset = dataset or TASK_DATASET[task]
    if dataset not in TASK_DATASETS[task]:
        raise ValueError(f"run_task: task {task!r} runs on one of {TASK_DATASETS[task]}, "
                         f"not {dataset!r}")
    rank, _ = rank_and_world()
    if splits is None:
        splits = load_splits(dataset, data_root, size, progress=progress and rank == 0,
                             **(data_options or {}))
    if task == "editing" and getattr(splits["train"], "output_shift", 0.0):
        raise ValueError("run_task: the editing task renders SIRENs without an output shift; "
                         "build the MNISTINR with recipe='nfn' (the DWSNets recipe shifts "
                         "the output by +0.5)")
    train_set = with_augmentations(splits["train"], augment)
    torch.manual_seed(seed)
    out = NUM_CLASSES if task == "classification" else 1
    if model_factory is not None:
        net = model_factory(splits["train"], out, model_options or {})
    else:
        net = build_model(task, model, splits["train"], out, model_options)
    folder = run_folder(runs_root, task, model, seed) if run_dir is None else Path(run_dir)
    run_config = {"name": f"{task}/{model}/{seed}", "task": task, "model": model,
                  "dataset": dataset, "size": size, "data_options": data_options or {},
                  "model_options": model_options or {}, "augment": list(augment),
                  "model_repr": repr(net),
                  "num_train": len(splits["train"]), "num_val": len(splits["val"]),
                  "num_test": len(splits["test"]), "torch_threads": torch.get_num_threads()}
    trainer = Trainer(net, SPECS[task], train_set, splits["val"], splits["test"], config,
                      folder, run_config, seed=seed, resume=resume, progress=progress)
    final = trainer.fit()
    if task == "editing" and rank == 0:
        from .figures import save_editing_figure
        save_editing_figure(net, splits["test"], folder / "edits.png")
    return final


def inr_classification(model: str = "nft", **kwargs) -> dict[str, Any]:
    """Classify the digit of each SIREN of :class:`~nft_pyg.datasets.digits_inr.DigitsINR`
    (test accuracy); see :func:`run_task` for the arguments."""
    return run_task("classification", model, **kwargs)


def generalization_prediction(model: str = "nfn_hnp", **kwargs) -> dict[str, Any]:
    """Predict the test accuracy of each CNN of
    :class:`~nft_pyg.datasets.digits_cnn_zoo.DigitsCNNZoo` from its weights
    (Kendall tau and R^2); see :func:`run_task`."""
    return run_task("generalization", model, **kwargs)


def inr_editing(model: str = "nfn_np", **kwargs) -> dict[str, Any]:
    """Edit each SIREN of :class:`~nft_pyg.datasets.digits_inr.DigitsINR`, as
    ``U + f(U)``, so that it renders its dilated digit (test MSE of the
    renderings); see :func:`run_task`."""
    return run_task("editing", model, **kwargs)
