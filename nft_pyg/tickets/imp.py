r"""Iterative magnitude pruning (IMP) with rewinding, batched over networks.

The lottery-ticket procedure of Frankle & Carbin ("The Lottery Ticket
Hypothesis", ICLR 2019) for small ReLU MLPs and CNNs on the 8x8
scikit-learn digits:

1. train the initialisation :math:`\theta_0` densely;
2. for ``rounds`` rounds: in every weight layer keep the largest-magnitude
   trained weights among those still kept (layer-wise pruning), rewind the
   kept weights to :math:`\theta_0` and train again under the mask.

Biases are never pruned. Hidden layers keep a fraction ``(1 - sparsity)``
of their weights at the end, removed evenly over the rounds (each round keeps
``(1 - sparsity) ** (1 / rounds)`` of the previous count); the output layer
is pruned at ``output_rate`` times that per-round rate (Frankle & Carbin
prune the output layer of their MLPs at half the rate), so it keeps more.

``R`` networks of one architecture train together: their parameters are
stacked (``[R, out, in(, 3, 3)]``) and every layer is one batched matmul or
grouped convolution, and
``torch.optim.Adam`` (elementwise) on the stacked tensors equals ``R``
independent optimisers because the loss is a sum of per-network losses.
Everything is deterministic given the seeds (run with one thread).
"""
from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..utils.extras import optional_import

#: images held out for testing (the rest trains)
NUM_TEST_DIGITS = 450


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[Tensor, Tensor]:
    digits = optional_import("sklearn.datasets", "IMP on the digits").load_digits()
    return (torch.tensor(digits.data, dtype=torch.float32) / 16.0,
            torch.tensor(digits.target, dtype=torch.long))


def digits_split(seed: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(train_x [1347, 64], train_y, test_x [450, 64], test_y)``: the scikit-learn
    digits (pixels scaled to ``[0, 1]``, float32), split by ``seed``."""
    images, labels = _digits()
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    test, train = order[:NUM_TEST_DIGITS], order[NUM_TEST_DIGITS:]
    return images[train], labels[train], images[test], labels[test]


@dataclass(frozen=True)
class TrainConfig:
    """How every network is trained (dense, IMP rounds, baselines, predicted masks)."""

    epochs: int = 10
    batch_size: int = 64
    lr: float = 3e-3

    def to_dict(self) -> dict:
        return asdict(self)


#: network families: ``"mlp"`` (``widths`` are layer widths, 64 inputs) and
#: ``"cnn"`` (``widths`` ``(1, c_1, c_2, 10)``: two 3x3 convs, the second with
#: stride 2, then ``Flatten`` and a ``Linear`` reading the ``4x4`` maps)
ARCHS = ("mlp", "cnn")
_CNN_STRIDES = (1, 2)
_CNN_MAP = 4  # side of the feature map the final Linear reads (8 / 2)


@dataclass(frozen=True)
class IMPConfig:
    """IMP settings (see the module docstring)."""

    widths: tuple[int, ...] = (64, 32, 32, 10)
    sparsity: float = 0.95
    rounds: int = 5
    output_rate: float = 0.5
    train: TrainConfig = field(default_factory=TrainConfig)
    arch: str = "mlp"

    def __post_init__(self):
        if not 0.0 < self.sparsity < 1.0:
            raise ValueError(f"IMPConfig: sparsity must be in (0, 1), got {self.sparsity}")
        if self.rounds < 1:
            raise ValueError(f"IMPConfig: rounds must be >= 1, got {self.rounds}")
        if self.arch not in ARCHS:
            raise ValueError(f"IMPConfig: arch must be one of {ARCHS}, got {self.arch!r}")
        if self.arch == "mlp" and (len(self.widths) < 2 or self.widths[0] != 64
                                   or self.widths[-1] != 10):
            raise ValueError(f"IMPConfig: MLP widths must run from 64 inputs to 10 classes, "
                             f"got {self.widths}")
        if self.arch == "cnn" and (len(self.widths) != 4 or self.widths[0] != 1
                                   or self.widths[-1] != 10):
            raise ValueError(f"IMPConfig: CNN widths must be (1, c_1, c_2, 10), "
                             f"got {self.widths}")

    def to_dict(self) -> dict:
        return {**asdict(self), "widths": list(self.widths)}

    @property
    def layer_sizes(self) -> list[int]:
        """Weights per layer (kernel entries included)."""
        return [math.prod(shape) for shape in weight_shapes(self.arch, self.widths)]

    def keep_counts(self, round_: int | None = None) -> list[int]:
        """Weights kept per layer after ``round_`` rounds (default: all rounds)."""
        t = self.rounds if round_ is None else round_
        hidden = (1.0 - self.sparsity) ** (1.0 / self.rounds)
        output = 1.0 - self.output_rate * (1.0 - hidden)
        sizes = self.layer_sizes
        return [max(1, round(size * (output if layer == len(sizes) - 1 else hidden) ** t))
                for layer, size in enumerate(sizes)]

    def module(self) -> nn.Sequential:
        """The ``nn.Sequential`` whose parameters the stacked networks hold."""
        return mlp(self.widths) if self.arch == "mlp" else cnn(self.widths)

    def init(self, count: int, generator: torch.Generator) -> StackedNet:
        """``count`` initialisations (``nn.Linear`` / ``nn.Conv2d`` default init)."""
        kind = StackedMLP if self.arch == "mlp" else StackedCNN
        return kind.init(self.widths, count, generator)


def weight_shapes(arch: str, widths: Sequence[int]) -> list[tuple[int, ...]]:
    """Shape of each weight of :meth:`IMPConfig.module`."""
    if arch == "mlp":
        return [(n_out, n_in) for n_in, n_out in zip(widths[:-1], widths[1:])]
    return [(widths[1], widths[0], 3, 3), (widths[2], widths[1], 3, 3),
            (widths[3], widths[2] * _CNN_MAP * _CNN_MAP)]


def mlp(widths: Sequence[int]) -> nn.Sequential:
    """``Linear - ReLU - ... - Linear``: the module the stacked parameters describe."""
    layers: list[nn.Module] = []
    for index, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if index < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def cnn(widths: Sequence[int]) -> nn.Sequential:
    """``Conv2d(1, c_1, 3, p=1) - ReLU - Conv2d(c_1, c_2, 3, s=2, p=1) - ReLU -
    Flatten - Linear(16 c_2, 10)`` on ``[n, 1, 8, 8]`` digits."""
    return nn.Sequential(nn.Conv2d(widths[0], widths[1], 3, padding=1), nn.ReLU(),
                         nn.Conv2d(widths[1], widths[2], 3, stride=2, padding=1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(widths[2] * _CNN_MAP * _CNN_MAP, widths[3]))


def weight_names(widths: Sequence[int], arch: str = "mlp") -> list[str]:
    """State-dict names of the weights of :func:`mlp` / :func:`cnn`."""
    if arch == "cnn":
        return ["0.weight", "2.weight", "5.weight"]
    return [f"{2 * index}.weight" for index in range(len(widths) - 1)]


@dataclass
class StackedNet:
    """Parameters of ``R`` networks of one architecture, stacked on dim 0:
    ``weights[l] [R, *weight_shape]``, ``biases[l] [R, out]``."""

    weights: list[Tensor]
    biases: list[Tensor]

    @classmethod
    def init(cls, widths: Sequence[int], count: int, generator: torch.Generator
             ) -> StackedNet:
        """``nn.Linear`` / ``nn.Conv2d``'s default initialisation (uniform, bound
        ``1/sqrt(fan_in)``)."""
        weights, biases = [], []
        for shape in cls.shapes(widths):
            bound = 1.0 / math.sqrt(math.prod(shape[1:]))
            weights.append((torch.rand(count, *shape, generator=generator) * 2 - 1) * bound)
            biases.append((torch.rand(count, shape[0], generator=generator) * 2 - 1) * bound)
        return cls(weights, biases)

    @staticmethod
    def shapes(widths: Sequence[int]) -> list[tuple[int, ...]]:
        raise NotImplementedError

    @property
    def count(self) -> int:
        return self.weights[0].size(0)

    def clone(self) -> StackedNet:
        return type(self)([w.detach().clone() for w in self.weights],
                          [b.detach().clone() for b in self.biases])

    def select(self, index: Tensor | Sequence[int]) -> StackedNet:
        index = torch.as_tensor(index, dtype=torch.long)
        return type(self)([w[index] for w in self.weights], [b[index] for b in self.biases])

    def logits(self, inputs: Tensor, masks: Sequence[Tensor] | None = None) -> Tensor:
        """``inputs [n, 64]`` (shared by all networks) -> ``[R, n, 10]``."""
        raise NotImplementedError

    def _masked(self, masks: Sequence[Tensor] | None) -> list[Tensor]:
        if masks is None:
            return list(self.weights)
        return [w * m for w, m in zip(self.weights, masks)]

    def accuracy(self, inputs: Tensor, labels: Tensor,
                 masks: Sequence[Tensor] | None = None) -> Tensor:
        """``[R]`` accuracies."""
        with torch.no_grad():
            return (self.logits(inputs, masks).argmax(-1) == labels).float().mean(1)


class StackedMLP(StackedNet):
    """``R`` MLPs of :func:`mlp`; every layer is one batched matmul."""

    @staticmethod
    def shapes(widths: Sequence[int]) -> list[tuple[int, ...]]:
        return weight_shapes("mlp", widths)

    def logits(self, inputs: Tensor, masks: Sequence[Tensor] | None = None) -> Tensor:
        h = inputs.unsqueeze(0).expand(self.count, -1, -1)
        weights = self._masked(masks)
        last = len(weights) - 1
        for layer, (weight, bias) in enumerate(zip(weights, self.biases)):
            h = torch.baddbmm(bias.unsqueeze(1), h, weight.transpose(1, 2))
            if layer < last:
                h = F.relu(h)
        return h


class StackedCNN(StackedNet):
    """``R`` CNNs of :func:`cnn`; every conv is one grouped convolution over the
    networks."""

    @staticmethod
    def shapes(widths: Sequence[int]) -> list[tuple[int, ...]]:
        return weight_shapes("cnn", widths)

    def logits(self, inputs: Tensor, masks: Sequence[Tensor] | None = None) -> Tensor:
        count, batch = self.count, inputs.size(0)
        weights = self._masked(masks)
        h = inputs.view(batch, 1, 8, 8).expand(-1, count, -1, -1)   # [n, R * 1, 8, 8]
        for weight, bias, stride in zip(weights, self.biases, _CNN_STRIDES):
            h = F.relu(F.conv2d(h, weight.flatten(0, 1), bias.flatten(), stride=stride,
                                padding=1, groups=count))
        h = h.reshape(batch, count, -1)                               # [n, R, c_2 * 16]
        return torch.einsum("nrk,rok->rno", h, weights[-1]) + self.biases[-1].unsqueeze(1)


def full_masks(params: StackedNet) -> list[Tensor]:
    return [torch.ones_like(w, dtype=torch.bool) for w in params.weights]


def train_masked(init: StackedNet, masks: Sequence[Tensor] | None, data, config: TrainConfig,
                 seed: int) -> StackedNet:
    """Train copies of ``init`` under ``masks`` (bool ``[R, out, in]`` per layer,
    ``None``: dense) with Adam on minibatches; returns the trained parameters
    (weights zero where masked). The minibatch order depends on ``seed`` only,
    so every mask of a network sees the same data order."""
    train_x, train_y = data[0], data[1]
    params = init.clone()
    tensors = params.weights + params.biases
    for tensor in tensors:
        tensor.requires_grad_(True)
    float_masks = None if masks is None else [m.to(train_x.dtype) for m in masks]
    optimizer = torch.optim.Adam(tensors, lr=config.lr)
    generator = torch.Generator().manual_seed(seed)
    count = params.count
    for _ in range(config.epochs):
        order = torch.randperm(len(train_y), generator=generator)
        for start in range(0, len(order), config.batch_size):
            batch = order[start:start + config.batch_size]
            logits = params.logits(train_x[batch], float_masks)
            # sum over networks of each network's mean loss: independent gradients
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)),
                                   train_y[batch].repeat(count), reduction="sum") / len(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    trained = params.clone()
    if masks is not None:
        trained.weights = [w * m for w, m in zip(trained.weights, float_masks)]
    return trained


def magnitude_masks(weights: Sequence[Tensor], masks: Sequence[Tensor],
                    counts: Sequence[int]) -> list[Tensor]:
    """Per network and layer, keep the ``counts[l]`` largest ``|w|`` among the
    entries ``masks`` still keeps (ties broken by position)."""
    out = []
    for weight, mask, count in zip(weights, masks, counts):
        score = weight.abs().flatten(1).masked_fill(~mask.flatten(1), -1.0)
        top = score.topk(count, dim=1).indices
        new = torch.zeros_like(mask.flatten(1)).scatter_(1, top, True)
        out.append(new.view_as(mask))
    return out


def random_masks(shapes: Sequence[torch.Size], counts: Sequence[int],
                 generator: torch.Generator) -> list[Tensor]:
    """Uniformly random masks ``[R, out, in]`` with exactly ``counts[l]`` kept per
    network and layer."""
    out = []
    for shape, count in zip(shapes, counts):
        scores = torch.rand(shape[0], math.prod(shape[1:]), generator=generator)
        top = scores.topk(count, dim=1).indices
        out.append(torch.zeros_like(scores, dtype=torch.bool).scatter_(1, top, True)
                   .view(shape))
    return out


def topk_masks(scores: Sequence[Tensor], counts: Sequence[int] | Sequence[Tensor]
               ) -> list[Tensor]:
    """Per network and layer, keep the ``counts`` highest ``scores`` (``[R, out, in]``)."""
    out = []
    for score, count in zip(scores, counts):
        flat = score.flatten(1)
        top = flat.topk(int(count), dim=1).indices
        out.append(torch.zeros_like(flat, dtype=torch.bool).scatter_(1, top, True)
                   .view_as(score))
    return out


def run_imp(init: StackedNet, config: IMPConfig, data, seed: int, mask_seed: int
            ) -> dict[str, object]:
    """IMP on every network of ``init``.

    Returns a dict with ``masks`` (the IMP tickets, bool ``[R, out, in]`` per
    layer), ``random_masks`` (same per-layer counts), the test accuracies
    ``dense_accuracy`` / ``imp_accuracy`` / ``random_accuracy`` ``[R]`` and
    ``round_accuracy`` ``[rounds + 1, R]`` (round 0: dense). Every training
    uses the data order of ``seed``.
    """
    test_x, test_y = data[2], data[3]
    dense = train_masked(init, None, data, config.train, seed)
    round_accuracy = [dense.accuracy(test_x, test_y)]
    masks = full_masks(init)
    trained = dense
    for round_ in range(1, config.rounds + 1):
        masks = magnitude_masks(trained.weights, masks, config.keep_counts(round_))
        trained = train_masked(init, masks, data, config.train, seed)
        round_accuracy.append(trained.accuracy(test_x, test_y))
    generator = torch.Generator().manual_seed(mask_seed)
    baseline = random_masks([m.shape for m in masks], config.keep_counts(), generator)
    random_trained = train_masked(init, baseline, data, config.train, seed)
    return {"masks": masks, "random_masks": baseline,
            "dense_accuracy": round_accuracy[0], "imp_accuracy": round_accuracy[-1],
            "random_accuracy": random_trained.accuracy(test_x, test_y),
            "round_accuracy": torch.stack(round_accuracy)}


def masked_accuracy(init: StackedNet, masks: Sequence[Tensor], data, config: TrainConfig,
                    seed: int) -> Tensor:
    """``[R]`` test accuracy of the initialisations trained under ``masks``."""
    return train_masked(init, masks, data, config, seed).accuracy(data[2], data[3])
