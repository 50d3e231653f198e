"""``DigitsCNNZoo``: small CNNs trained on the scikit-learn digits.

A zoo in the style of the Small CNN Zoo (Unterthiner et al., "Predicting
Neural Network Accuracy from Weights", arXiv 2002.11448), small enough to
build on a laptop CPU: every run trains the same kind of network

    Conv2d(1, w, 3, padding=1) - act - [Dropout]
    Conv2d(w, w, 3, stride=2, padding=1) - act - [Dropout]
    Conv2d(w, w, 3, stride=2, padding=1) - act - [Dropout]
    AdaptiveAvgPool2d(1) - Flatten - Linear(w, 10)

on the 8x8 digits (pixels scaled to ``[-1, 1]``) with its own random
hyper-parameters (learning rate, weight decay, init scale, dropout, train
fraction, activation, optimizer, width) and keeps several checkpoints, each
with its train and test accuracy.

Runs that share width, activation and optimizer train together: their
parameters are stacked and every conv is one grouped convolution over the
runs, so a group of 32 runs costs about as much as one larger network.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..graph.convert import from_state_dict, layout_of
from ..graph.layout import Layout
from ..graph.neuron_graph import NeuronGraph
from ..graph.types import Activation
from ..utils.extras import optional_import
from ..utils.threads import one_thread
from .generated import SPLITS, GeneratedDataset, assign_splits

#: columns of ``graph.hparams`` (activation: an :class:`Activation` code;
#: optimizer: index into :data:`OPTIMIZERS`)
HPARAMS = ("learning_rate", "weight_decay", "init_scale", "dropout", "train_fraction",
           "activation", "optimizer", "width")
ACTIVATIONS = ("relu", "tanh", "gelu")
OPTIMIZERS = ("sgd", "adam")
TRAIN_FRACTIONS = (0.1, 0.25, 0.5, 1.0)
SIZES: dict[str, dict[str, Any]] = {
    "small": {"num_runs": 15, "epochs": 5, "checkpoints": (0, 1, 3, 5), "widths": (4, 8)},
    "full": {"num_runs": 480, "epochs": 20, "checkpoints": (0, 1, 2, 5, 10, 20),
             "widths": (8, 16)},
}
_ACT_MODULES: dict[str, Callable[[], nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh,
                                                    "gelu": nn.GELU}
_ACT_FUNCTIONS: dict[str, Callable[[Tensor], Tensor]] = {"relu": F.relu, "tanh": torch.tanh,
                                                         "gelu": F.gelu}
_CONV_STRIDES = (1, 2, 2)


def load_digits_tensors() -> tuple[Tensor, Tensor]:
    """The 1,797 scikit-learn digits: images ``[1797, 1, 8, 8]`` in ``[0, 1]``
    (float32) and labels ``[1797]`` (long). Bundled with scikit-learn."""
    digits = optional_import("sklearn.datasets", "the digits datasets").load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    return images, torch.tensor(digits.target, dtype=torch.long)


def zoo_cnn(width: int, activation: str, dropout: float = 0.0, num_classes: int = 10
            ) -> nn.Sequential:
    """One network of the zoo (see the module docstring)."""
    layers: list[nn.Module] = []
    channels = 1
    for stride in _CONV_STRIDES:
        layers += [nn.Conv2d(channels, width, 3, stride=stride, padding=1),
                   _ACT_MODULES[activation]()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        channels = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes)]
    return nn.Sequential(*layers)


def _param_names(width: int, activation: str, dropout: float) -> list[str]:
    return list(zoo_cnn(width, activation, dropout).state_dict())


class _Runs:
    """Stacked parameters of ``R`` zoo CNNs of one width and activation."""

    def __init__(self, width: int, activation: str, init_scale: Tensor,
                 generator: torch.Generator):
        runs = init_scale.numel()
        self.activation = _ACT_FUNCTIONS[activation]
        self.width = width
        self.params: list[Tensor] = []
        channels = 1
        for _ in _CONV_STRIDES:
            fan_in = channels * 9
            weight = torch.randn(runs, width, channels, 3, 3, generator=generator)
            self.params += [weight * (init_scale / math.sqrt(fan_in)).view(-1, 1, 1, 1, 1),
                            torch.zeros(runs, width)]
            channels = width
        weight = torch.randn(runs, 10, width, generator=generator)
        self.params += [weight * (init_scale / math.sqrt(width)).view(-1, 1, 1),
                        torch.zeros(runs, 10)]
        for param in self.params:
            param.requires_grad_(True)

    def logits(self, images: Tensor, dropout: Tensor | None = None,
               generator: torch.Generator | None = None) -> Tensor:
        """``images`` ``[R, b, 1, 8, 8]`` (or ``[b, 1, 8, 8]`` shared) -> ``[b, R, 10]``."""
        runs = self.params[0].shape[0]
        if images.dim() == 4:
            images = images.unsqueeze(0).expand(runs, -1, -1, -1, -1)
        batch = images.shape[1]
        h = images.transpose(0, 1).reshape(batch, runs, *images.shape[-2:])
        for layer, stride in enumerate(_CONV_STRIDES):
            weight, bias = self.params[2 * layer], self.params[2 * layer + 1]
            h = F.conv2d(h, weight.flatten(0, 1), bias.flatten(), stride=stride, padding=1,
                         groups=runs)
            h = self.activation(h)
            if dropout is not None:
                keep = 1.0 - dropout.view(1, runs, 1, 1, 1)
                h5 = h.view(batch, runs, self.width, *h.shape[-2:])
                mask = torch.rand(h5.shape, generator=generator) < keep
                h = (h5 * mask / keep).view_as(h)
        pooled = h.mean(dim=(2, 3)).view(batch, runs, self.width)
        return torch.einsum("brw,row->bro", pooled, self.params[-2]) + self.params[-1]

    def accuracy(self, images: Tensor, labels: Tensor, mask: Tensor | None = None) -> Tensor:
        """Per-run accuracy on shared ``images``; ``mask`` ``[n, R]`` selects each
        run's own examples."""
        with torch.no_grad():
            correct = (self.logits(images).argmax(-1) == labels.view(-1, 1)).float()
        if mask is None:
            return correct.mean(0)
        return (correct * mask).sum(0) / mask.sum(0)

    def snapshot(self) -> list[Tensor]:
        return [param.detach().clone() for param in self.params]


class _Optimizer:
    """SGD with momentum 0.9 or Adam over stacked runs, with per-run learning
    rate and (coupled, L2) weight decay."""

    def __init__(self, kind: str, params: list[Tensor], lr: Tensor, weight_decay: Tensor):
        self.kind, self.params, self.step_count = kind, params, 0
        self.lr, self.weight_decay = lr, weight_decay
        self.first = [torch.zeros_like(p) for p in params]
        self.second = [torch.zeros_like(p) for p in params]

    def step(self) -> None:
        self.step_count += 1
        with torch.no_grad():
            for param, first, second in zip(self.params, self.first, self.second):
                shape = (-1,) + (1,) * (param.dim() - 1)
                grad = param.grad + self.weight_decay.view(shape) * param
                if self.kind == "sgd":
                    first.mul_(0.9).add_(grad)
                    update = first
                else:
                    first.mul_(0.9).add_(grad, alpha=0.1)
                    second.mul_(0.999).addcmul_(grad, grad, value=0.001)
                    update = (first / (1 - 0.9 ** self.step_count)) / (
                        (second / (1 - 0.999 ** self.step_count)).sqrt() + 1e-8)
                param.sub_(self.lr.view(shape) * update)
                param.grad = None


def sample_hparams(num_runs: int, widths: Sequence[int], seed: int) -> Tensor:
    """Random hyper-parameters ``[num_runs, len(HPARAMS)]`` (float64)."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(num_runs):
        optimizer = int(rng.integers(len(OPTIMIZERS)))
        low, high = (-2.5, -0.7) if OPTIMIZERS[optimizer] == "sgd" else (-3.5, -1.5)
        activation = ACTIVATIONS[int(rng.integers(len(ACTIVATIONS)))]
        rows.append([10 ** rng.uniform(low, high), 10 ** rng.uniform(-6, -2),
                     10 ** rng.uniform(-0.3, 0.5), rng.uniform(0.0, 0.4) * (rng.random() < 0.7),
                     TRAIN_FRACTIONS[int(rng.integers(len(TRAIN_FRACTIONS)))],
                     int(Activation[activation.upper()]), optimizer,
                     widths[int(rng.integers(len(widths)))]])
    return torch.tensor(rows, dtype=torch.float64)


class DigitsCNNZoo(GeneratedDataset):
    r"""A zoo of small CNNs trained on the scikit-learn digits, as neuron graphs.

    Each graph is one checkpoint of one run: a raw :class:`~nft_pyg.NeuronGraph`
    (4 weight layers: three 3x3 convs and the linear head) with

    - ``y`` ``[1]``: test accuracy (450 held-out digits);
    - ``train_accuracy`` ``[1]``: accuracy on the run's own training digits;
    - ``epoch`` ``[1]`` (long): the checkpoint's epoch (0 = initialisation);
    - ``run_id`` ``[1]`` (long): the run, shared by its checkpoints;
    - ``hparams`` ``[1, 8]``: the run's hyper-parameters, columns :data:`HPARAMS`.

    Splits are by run (70 / 15 / 15 %), so checkpoints of one run never
    cross splits. Runs that diverge (non-finite weights) are left out.

    Args:
        root (str): dataset folder.
        split (str): ``"train"``, ``"val"`` or ``"test"``.
        size (str): ``"small"`` (15 runs x 4 checkpoints, widths 4 / 8, 5
            epochs; seconds to build) or ``"full"`` (480 runs x 6 checkpoints,
            widths 8 / 16, 20 epochs).
        seed (int): everything (hyper-parameters, data split, inits, batches).
        num_runs, epochs, checkpoints, widths: override the size's values.
        runs_per_shard (int): runs trained together (default 32).
        batch_size (int): minibatch per run and step (drawn with replacement
            from the run's training digits; an epoch is ``ceil(1347 / batch)``
            steps whatever the train fraction).
        transform, num_workers, progress: see
            :class:`~nft_pyg.datasets.generated.GeneratedDataset`.
    """

    name = "digits_cnn_zoo"

    def __init__(self, root: str, split: str = "train", size: str = "small", seed: int = 0,
                 num_runs: int | None = None, epochs: int | None = None,
                 checkpoints: Sequence[int] | None = None, widths: Sequence[int] | None = None,
                 runs_per_shard: int = 32, batch_size: int = 32,
                 transform: Callable | None = None, num_workers: int = 2,
                 progress: bool = True):
        if size not in SIZES:
            raise ValueError(f"DigitsCNNZoo: size must be one of {sorted(SIZES)}, got {size!r}")
        preset = SIZES[size]
        self.size = size
        self.seed = int(seed)
        self.num_runs = int(num_runs if num_runs is not None else preset["num_runs"])
        self.epochs = int(epochs if epochs is not None else preset["epochs"])
        self.checkpoints = tuple(int(e) for e in (checkpoints if checkpoints is not None
                                                  else preset["checkpoints"]))
        self.widths = tuple(int(w) for w in (widths if widths is not None else preset["widths"]))
        self.runs_per_shard = int(runs_per_shard)
        self.batch_size = int(batch_size)
        if any(e < 0 or e > self.epochs for e in self.checkpoints) or \
                list(self.checkpoints) != sorted(set(self.checkpoints)):
            raise ValueError(f"DigitsCNNZoo: checkpoints must be increasing epochs in "
                             f"[0, {self.epochs}], got {self.checkpoints}")
        self.hparams = sample_hparams(self.num_runs, self.widths, self.seed)
        self.run_splits = assign_splits(self.num_runs, self.seed + 1, "DigitsCNNZoo runs")
        self.shards = self._plan_shards()
        super().__init__(root, split, transform, num_workers, progress)

    def config(self) -> dict[str, Any]:
        return {"num_runs": self.num_runs, "epochs": self.epochs,
                "checkpoints": list(self.checkpoints), "widths": list(self.widths),
                "seed": self.seed, "runs_per_shard": self.runs_per_shard,
                "batch_size": self.batch_size, "version": 1}

    def _plan_shards(self) -> list[list[int]]:
        """Runs grouped by (width, activation, optimizer), in chunks."""
        groups: dict[tuple, list[int]] = {}
        for run, row in enumerate(self.hparams.tolist()):
            groups.setdefault((row[7], row[5], row[6]), []).append(run)
        shards = []
        for key in sorted(groups):
            runs = groups[key]
            shards += [runs[i:i + self.runs_per_shard]
                       for i in range(0, len(runs), self.runs_per_shard)]
        return shards

    @property
    def num_shards(self) -> int:
        return len(self.shards)

    def _digits(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        images, labels = load_digits_tensors()
        images = images * 2 - 1
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(self.seed))
        test = order[:450]
        pool = order[450:]
        return images[pool], labels[pool], images[test], labels[test]

    def generate_shard(self, index: int) -> dict[str, Any]:
        runs = self.shards[index]
        hparams = self.hparams[runs]
        width = int(hparams[0, 7])
        activation = Activation(int(hparams[0, 5])).name.lower()
        optimizer = OPTIMIZERS[int(hparams[0, 6])]
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        with one_thread():
            return self._train(runs, hparams, width, activation, optimizer, generator)

    def _train(self, runs: list[int], hparams: Tensor, width: int, activation: str,
               optimizer: str, generator: torch.Generator) -> dict[str, Any]:
        pool_x, pool_y, test_x, test_y = self._digits()
        count = len(runs)
        # each run's training digits: the first fraction of its own permutation of the pool
        sizes = (hparams[:, 4] * len(pool_y)).round().long()
        perms = torch.stack([torch.randperm(len(pool_y), generator=generator)
                             for _ in runs])
        own = torch.zeros(len(pool_y), count)
        for r in range(count):
            own[perms[r, : sizes[r]], r] = 1.0
        model = _Runs(width, activation, hparams[:, 2].float(), generator)
        opt = _Optimizer(optimizer, model.params, hparams[:, 0].float(), hparams[:, 1].float())
        dropout = hparams[:, 3].float()
        steps_per_epoch = math.ceil(len(pool_y) / self.batch_size)
        weights, train_acc, test_acc = [], [], []

        def checkpoint() -> None:
            weights.append(model.snapshot())
            train_acc.append(model.accuracy(pool_x, pool_y, own))
            test_acc.append(model.accuracy(test_x, test_y))

        if 0 in self.checkpoints:
            checkpoint()
        for epoch in range(1, self.epochs + 1):
            for _ in range(steps_per_epoch):
                position = (torch.rand(count, self.batch_size, generator=generator)
                            * sizes.view(-1, 1)).long()
                batch = perms.gather(1, position)  # [R, b] indices into the pool
                logits = model.logits(pool_x[batch], dropout, generator)
                loss = F.cross_entropy(logits.permute(0, 2, 1), pool_y[batch].t(),
                                       reduction="none").mean(0).sum()
                loss.backward()
                opt.step()
            if epoch in self.checkpoints:
                checkpoint()
        names = _param_names(width, activation, 0.0)
        stacked = {name: torch.stack([w[i] for w in weights], dim=1)
                   for i, name in enumerate(names)}  # [R, T, ...]
        return {"runs": torch.tensor(runs), "hparams": hparams, "weights": stacked,
                "train_accuracy": torch.stack(train_acc, 1),
                "test_accuracy": torch.stack(test_acc, 1),
                "epochs": torch.tensor(self.checkpoints)}

    def shard_graphs(self, shard: dict[str, Any]) -> dict[str, list[NeuronGraph]]:
        graphs: dict[str, list[NeuronGraph]] = {split: [] for split in SPLITS}
        weights = shard["weights"]
        for r, run in enumerate(shard["runs"].tolist()):
            params = {name: value[r] for name, value in weights.items()}
            if not all(torch.isfinite(value).all() for value in params.values()):
                continue  # a diverged run
            hparams = shard["hparams"][r]
            layout = self.run_layout(hparams)
            for t, epoch in enumerate(shard["epochs"].tolist()):
                graph = from_state_dict(_renamed(params, t, layout), layout)
                graph.y = shard["test_accuracy"][r, t].view(1).float()
                graph.train_accuracy = shard["train_accuracy"][r, t].view(1).float()
                graph.epoch = torch.tensor([epoch])
                graph.run_id = torch.tensor([run])
                graph.hparams = hparams.view(1, -1).float()
                graphs[self.run_splits[run]].append(graph)
        return graphs

    @staticmethod
    def run_layout(hparams: Tensor) -> Layout:
        """The :class:`Layout` of a run from its row of ``hparams``."""
        activation = Activation(int(hparams[5])).name.lower()
        return layout_of(zoo_cnn(int(hparams[7]), activation, float(hparams[3])))


def _renamed(params: dict[str, Tensor], t: int, layout: Layout) -> dict[str, Tensor]:
    """Checkpoint ``t`` under the state-dict names of ``layout`` (which has
    dropout steps in between when the run used dropout)."""
    layers = layout.weight_layers()
    values = list(params.values())
    state = {}
    for i, layer in enumerate(layers):
        state[f"{layer.name}.weight"] = values[2 * i][t]
        state[f"{layer.name}.bias"] = values[2 * i + 1][t]
    return state
