"""The offline datasets of the tasks, by name."""
from __future__ import annotations

import inspect
import os
from pathlib import Path

from .trainer import ConfigurationError

DATASETS = ("digits_inr", "digits_cnn_zoo", "mnist_inr")
#: the dataset each task trains on by default (``run_task(dataset=...)`` picks
#: another one of the same kind: ``mnist_inr`` for the INR tasks)
TASK_DATASET = {"classification": "digits_inr", "generalization": "digits_cnn_zoo",
                "editing": "digits_inr"}


def dataset_class(name: str):
    if name == "digits_inr":
        from ..datasets.digits_inr import DigitsINR
        return DigitsINR
    if name == "digits_cnn_zoo":
        from ..datasets.digits_cnn_zoo import DigitsCNNZoo
        return DigitsCNNZoo
    if name == "mnist_inr":
        from ..datasets.mnist_inr import MNISTINR
        return MNISTINR
    raise ValueError(f"unknown dataset {name!r}; choose from {DATASETS}")


def load_splits(name: str, root: str | os.PathLike = "data", size: str = "small",
                seed: int = 0, progress: bool = True, **options) -> dict:
    """``{"train", "val", "test"}`` of dataset ``name`` under ``root/name``
    (built on first use; ``options`` go to the dataset class)."""
    cls = dataset_class(name)
    known = set(inspect.signature(cls.__init__).parameters) - {"self", "root", "split"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigurationError(f"{cls.__name__} has no option {', '.join(unknown)}; its "
                                 f"options: {', '.join(sorted(known))}")
    folder = Path(root) / name
    try:
        return {split: cls(str(folder), split, size=size, seed=seed, progress=progress,
                           **options) for split in ("train", "val", "test")}
    except ValueError as err:   # an option value the dataset rejects, naming it
        raise ConfigurationError(str(err)) from None
