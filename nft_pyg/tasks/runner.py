"""One run of a task with one model: data, model, trainer, run folder."""
from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch
from torch_geometric.transforms import Compose

from ..transforms.augment import AUGMENTATIONS
from .data import TASK_DATASET, load_splits
from .models import TASK_MODELS, build_model
from .specs import SPECS
from .trainer import ConfigurationError, TrainConfig, Trainer, check_run_folder, is_first_process

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
        raise ConfigurationError(f"unknown augmentation(s) {', '.join(map(repr, unknown))}; "
                                 f"choose from {', '.join(sorted(AUGMENTATIONS))}")
    if not augment:
        return dataset
    transforms = [AUGMENTATIONS[name]() for name in augment]
    if dataset.transform is not None:
        transforms.insert(0, dataset.transform)
    augmented = copy.copy(dataset)
    augmented.transform = Compose(transforms)
    return augmented


#: what each model option that has no default holds
EXTRA_OPTION_KINDS = {"dropout": "number", "head_hidden": "number", "fourier_features": "number",
                      "init_scale": "number", "decoder_channels": "number", "pool": "text",
                      "append_stats": "flag", "io_embedding": "flag"}
_KIND_NAMES = {"number": "a number", "numbers": "a number or a list of numbers",
               "text": "a string", "flag": "true or false"}


def _kind(value) -> str | None:
    if isinstance(value, bool):
        return "flag"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list) and all(_kind(v) == "number" for v in value):
        return "numbers"
    return None


def check_model_options(model: str, options: dict | None) -> None:
    """Raise :class:`ConfigurationError` for a model option whose value is of
    the wrong kind (``hidden=abc``; a list of numbers where a number is
    expected is left to the model)."""
    from .models import DEFAULTS

    for key, value in (options or {}).items():
        default = DEFAULTS.get(model, {}).get(key)
        expected = _kind(default) if default is not None else EXTRA_OPTION_KINDS.get(key)
        if expected is None:
            continue
        got = _kind(value)
        fits = got == expected or (expected in ("number", "numbers") and
                                   got in ("number", "numbers"))
        if not fits:
            raise ConfigurationError(f"model option {key}={json.dumps(value)} of {model!r}: "
                                     f"expected {_KIND_NAMES[expected]}")


def run_folder(runs_root: str | os.PathLike, task: str, model: str, seed: int) -> Path:
    return Path(runs_root) / task / model / str(seed)


def run_task(task: str, model: str, seed: int = 0, size: str = "small",
             data_root: str | os.PathLike = "data", runs_root: str | os.PathLike = "runs",
             resume: bool = False, progress: bool = True, splits: dict | None = None,
             model_options: dict | None = None, run_dir: str | os.PathLike | None = None,
             data_options: dict | None = None, augment: Sequence[str] = (),
             overwrite: bool = False, dataset: str | None = None,
             model_factory: Callable | None = None, **train_options) -> dict[str, Any]:
    """Train ``model`` on ``task`` and return the final record (test metrics
    at the best validation epoch, train time, parameter count).

    Args:
        task: ``"classification"``, ``"generalization"`` or ``"editing"``.
        model: one of :data:`~nft_pyg.tasks.models.TASK_MODELS` ``[task]``.
        seed: model initialisation and batch order (the dataset's seed is fixed).
        size: dataset size (``"small"`` or ``"full"``).
        data_root, runs_root: folders of the datasets and of the runs.
        resume: continue from the run folder's checkpoint.
        overwrite: start again in a run folder that already holds a run
            (without it, or ``resume``, such a folder is an error).
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
        train_options: fields of :class:`~nft_pyg.tasks.trainer.TrainConfig`
            (including ``accelerator``, ``devices``, ``strategy``, ``precision``).

    Raises:
        ConfigurationError: a setting, option, augmentation or run folder that
            cannot be used (checked before any data is loaded).
    """
    if task not in TASKS:
        raise ConfigurationError(f"unknown task {task!r}; choose from {TASKS}")
    known = {f.name for f in fields(TrainConfig)}
    unknown = set(train_options) - known
    if unknown:
        raise ConfigurationError(f"run_task: unknown training options {sorted(unknown)}")
    # None is a value here (grad_clip=None: no clipping); callers leave out what they do not set
    config = TrainConfig(**{**TASK_DEFAULTS[task], **train_options})
    unknown_augment = [name for name in augment if name not in AUGMENTATIONS]
    if unknown_augment:
        with_augmentations(None, unknown_augment)   # raises, naming them
    check_model_options(model, model_options)
    folder = run_folder(runs_root, task, model, seed) if run_dir is None else Path(run_dir)
    first = is_first_process()
    if first:    # the other processes start after it wrote the folder
        check_run_folder(folder, resume, overwrite)
    dataset = dataset or TASK_DATASET[task]
    if dataset not in TASK_DATASETS[task]:
        raise ConfigurationError(f"run_task: task {task!r} runs on one of "
                                 f"{TASK_DATASETS[task]}, not {dataset!r}")
    if splits is None:
        splits = load_splits(dataset, data_root, size, progress=progress and first,
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
    run_config = {"name": f"{task}/{model}/{seed}", "task": task, "model": model,
                  "dataset": dataset, "size": size, "data_options": data_options or {},
                  "model_options": model_options or {}, "augment": list(augment),
                  "model_repr": repr(net),
                  "num_train": len(splits["train"]), "num_val": len(splits["val"]),
                  "num_test": len(splits["test"]), "torch_threads": torch.get_num_threads()}
    trainer = Trainer(net, SPECS[task], train_set, splits["val"], splits["test"], config,
                      folder, run_config, seed=seed, resume=resume, overwrite=overwrite,
                      progress=progress)
    final = trainer.fit()
    if task == "editing" and is_first_process():
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
