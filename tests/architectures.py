"""Seeded generators of random networks that nft_pyg supports, for tests.

Every generator takes ``rng`` (a :class:`random.Random`, or an ``int`` seed)
and returns ``(module, example_input)``: the module is in eval mode, its
parameters and norm buffers are random (drawn from ``rng``, not from torch's
global generator, so a seed always gives the same network), and
``example_input`` is a small batch it accepts. Sizes are small so tests stay
fast.

    from architectures import random_architecture   # tests/ is on sys.path
    module, x = random_architecture(random.Random(0))

Covered module kinds: Linear, Conv1d/2d/3d (any kernel size, stride,
padding, dilation, bias-free), every supported activation (ReLU, LeakyReLU,
GELU, SiLU, Tanh, Sigmoid, ELU, Identity, Sine), Flatten after a conv stack
with and without spatial positions left, AvgPool/MaxPool/AdaptiveAvgPool/
AdaptiveMaxPool, Dropout, BatchNorm1d/2d/3d, LayerNorm, nested Sequentials
and fx-traced custom modules (:class:`ChainMLP`, :class:`ChainCNN`).
"""
from __future__ import annotations

import math
import random
from collections.abc import Callable

import torch
from torch import nn

from nft_pyg.graph.modules import Sine

ACTIVATIONS: tuple[Callable[[random.Random], nn.Module], ...] = (
    lambda rng: nn.ReLU(),
    lambda rng: nn.LeakyReLU(negative_slope=rng.choice([0.01, 0.2])),
    lambda rng: nn.GELU(approximate=rng.choice(["none", "tanh"])),
    lambda rng: nn.SiLU(),
    lambda rng: nn.Tanh(),
    lambda rng: nn.Sigmoid(),
    lambda rng: nn.ELU(alpha=rng.choice([1.0, 0.5])),
    lambda rng: nn.Identity(),
    lambda rng: Sine(w0=rng.choice([1.0, 30.0])),
)

_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_BATCHNORM = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_POOL = {1: (nn.AvgPool1d, nn.MaxPool1d), 2: (nn.AvgPool2d, nn.MaxPool2d),
         3: (nn.AvgPool3d, nn.MaxPool3d)}
_ADAPTIVE = {1: (nn.AdaptiveAvgPool1d, nn.AdaptiveMaxPool1d),
             2: (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d),
             3: (nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool3d)}
_DROPOUT = {1: nn.Dropout1d, 2: nn.Dropout2d, 3: nn.Dropout3d}
BATCH_SIZE = 2


def as_rng(rng: random.Random | int) -> random.Random:
    return rng if isinstance(rng, random.Random) else random.Random(rng)


def random_activation(rng: random.Random) -> nn.Module:
    return rng.choice(ACTIVATIONS)(rng)


@torch.no_grad()
def randomize(module: nn.Module, rng: random.Random | int) -> nn.Module:
    """Draw every parameter and norm buffer of ``module`` from ``rng`` (in place).

    Running variances stay positive and ``num_batches_tracked`` gets a
    random count, so round trips of norm layers are not trivially satisfied
    by the defaults.
    """
    rng = as_rng(rng)
    generator = torch.Generator().manual_seed(rng.getrandbits(62))
    for name, tensor in list(module.named_parameters()) + list(module.named_buffers()):
        if name.endswith("num_batches_tracked"):
            tensor.fill_(rng.randrange(1000))
        elif name.endswith("running_var"):
            tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
        else:
            tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.5)
    return module


def _finish(module: nn.Module, example: torch.Tensor, rng: random.Random,
            dtype: torch.dtype) -> tuple[nn.Module, torch.Tensor]:
    module = randomize(module, rng).to(dtype).eval()
    return module, example.to(dtype)


def _example(rng: random.Random, *shape: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(rng.getrandbits(62))
    return torch.randn(BATCH_SIZE, *shape, generator=generator)


def _linear_block(rng: random.Random, fan_in: int, fan_out: int, last: bool,
                  norms: bool, dropout: bool) -> list[nn.Module]:
    """A Linear, then (unless last) a random mix of norm, activation, dropout."""
    layers: list[nn.Module] = [nn.Linear(fan_in, fan_out, bias=rng.random() < 0.8)]
    if last:
        return layers
    if norms and rng.random() < 0.3:
        layers.append(rng.choice([nn.BatchNorm1d, nn.LayerNorm])(fan_out))
    layers.append(random_activation(rng))
    if dropout and rng.random() < 0.2:
        layers.append(nn.Dropout(p=0.1))
    return layers


def random_mlp(rng: random.Random | int, *, depth: int | None = None,
               in_features: int | None = None, out_features: int | None = None,
               max_width: int = 5, norms: bool = True, dropout: bool = True,
               dtype: torch.dtype = torch.float32) -> tuple[nn.Module, torch.Tensor]:
    """A random MLP (``depth`` Linear layers) and an input batch ``[2, in]``."""
    rng = as_rng(rng)
    depth = depth or rng.randint(1, 4)
    widths = [in_features or rng.randint(1, max_width)]
    widths += [rng.randint(1, max_width) for _ in range(depth - 1)]
    widths.append(out_features or rng.randint(1, max_width))
    layers: list[nn.Module] = []
    for layer in range(depth):
        layers += _linear_block(rng, widths[layer], widths[layer + 1], layer == depth - 1,
                                norms, dropout)
    if rng.random() < 0.2:
        layers.append(random_activation(rng))  # an activation on the outputs
    return _finish(nn.Sequential(*layers), _example(rng, widths[0]), rng, dtype)


def _conv_out(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _random_conv(rng: random.Random, dim: int, fan_in: int, fan_out: int,
                 spatial: list[int], max_kernel: int) -> tuple[nn.Module, list[int]]:
    """A conv with random (per-axis) kernel, stride, padding, dilation that
    keeps every spatial size >= 1; returns it and the new spatial sizes."""
    kernel, stride, padding, dilation, out = [], [], [], [], []
    for size in spatial:
        while True:
            k, s = rng.randint(1, max_kernel), rng.randint(1, 2)
            p, d = rng.randint(0, 1), rng.randint(1, 2)
            if _conv_out(size, k, s, p, d) >= 1:
                break
        kernel.append(k), stride.append(s), padding.append(p), dilation.append(d)
        out.append(_conv_out(size, k, s, p, d))
    conv = _CONV[dim](fan_in, fan_out, tuple(kernel), stride=tuple(stride),
                      padding=tuple(padding), dilation=tuple(dilation),
                      bias=rng.random() < 0.8)
    return conv, out


def random_cnn(rng: random.Random | int, dim: int = 2, *, depth: int | None = None,
               head: str | None = None, max_channels: int = 4, norms: bool = True,
               dropout: bool = True, dtype: torch.dtype = torch.float32
               ) -> tuple[nn.Module, torch.Tensor]:
    """A random ``dim``-D CNN and an input batch ``[2, C, *spatial]``.

    Args:
        depth: number of conv layers (default 1-3).
        head: ``"none"`` (the conv map is the output), ``"pooled"`` (global
            pooling, Flatten, Linear: no spatial positions left), ``"spatial"``
            (Flatten with spatial positions left, Linear), or ``None`` (random).
    """
    rng = as_rng(rng)
    depth = depth or rng.randint(1, 3)
    head = head or rng.choice(["none", "pooled", "spatial"])
    max_kernel = {1: 4, 2: 3, 3: 2}[dim]
    spatial = [rng.randint(5, 8) if dim < 3 else rng.randint(3, 5) for _ in range(dim)]
    in_shape = [rng.randint(1, max_channels)] + spatial
    channels = in_shape[0]
    layers: list[nn.Module] = []
    for layer in range(depth):
        out_channels = rng.randint(1, max_channels)
        conv, spatial = _random_conv(rng, dim, channels, out_channels, spatial, max_kernel)
        layers.append(conv)
        channels = out_channels
        if head == "none" and layer == depth - 1:
            break
        if norms and rng.random() < 0.3:
            layers.append(_BATCHNORM[dim](channels))
        layers.append(random_activation(rng))
        if rng.random() < 0.3 and min(spatial) >= 2:
            layers.append(rng.choice(_POOL[dim])(2))
            spatial = [size // 2 for size in spatial]
        if dropout and rng.random() < 0.2:
            layers.append(rng.choice([nn.Dropout(0.1), _DROPOUT[dim](0.1)]))
    if head == "pooled":
        layers += [rng.choice(_ADAPTIVE[dim])(1), nn.Flatten()]
        spatial = [1] * dim
    elif head == "spatial":
        if math.prod(spatial) > 8 or rng.random() < 0.3:
            target = [min(size, 2) for size in spatial]
            layers.append(rng.choice(_ADAPTIVE[dim])(tuple(target)))
            spatial = target
        layers.append(nn.Flatten())
    if head != "none":
        features = channels * math.prod(spatial)
        widths = [rng.randint(1, 5) for _ in range(rng.randint(1, 2))]
        layers += _linear_block(rng, features, widths[0], len(widths) == 1, norms, dropout)
        if len(widths) == 2:
            layers += _linear_block(rng, widths[0], widths[1], True, norms, dropout)
    return _finish(nn.Sequential(*layers), _example(rng, *in_shape), rng, dtype)


class ChainMLP(nn.Module):
    """A custom (non-Sequential) MLP: attributes and a chain forward (fx-traced)."""

    def __init__(self, sizes: list[int], bias: bool = True):
        super().__init__()
        self.sizes = list(sizes)
        self.inp = nn.Linear(sizes[0], sizes[1], bias=bias)
        self.hidden = nn.Linear(sizes[1], sizes[2])
        self.out = nn.Linear(sizes[2], sizes[3])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.inp(x))
        x = torch.tanh(self.hidden(x))
        return self.out(x)


class ChainCNN(nn.Module):
    """A custom 2-D CNN whose forward calls ``torch.relu`` and ``torch.flatten``."""

    def __init__(self, channels: int, hidden: int, classes: int, pooled: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, hidden, 3, padding=1)
        self.conv2 = nn.Conv2d(hidden, hidden, 3, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(pooled)
        self.fc = nn.Linear(hidden * pooled * pooled, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x))
        x = self.conv2(x).relu()
        x = torch.flatten(self.pool(x), 1)
        return self.fc(x)


def random_custom(rng: random.Random | int, dtype: torch.dtype = torch.float32
                  ) -> tuple[nn.Module, torch.Tensor]:
    """A :class:`ChainMLP` or :class:`ChainCNN` with random sizes."""
    rng = as_rng(rng)
    if rng.random() < 0.5:
        sizes = [rng.randint(1, 5) for _ in range(4)]
        return _finish(ChainMLP(sizes, bias=rng.random() < 0.7), _example(rng, sizes[0]),
                       rng, dtype)
    channels = rng.randint(1, 3)
    module = ChainCNN(channels, rng.randint(1, 4), rng.randint(1, 4), rng.randint(1, 2))
    size = rng.randint(5, 7)
    return _finish(module, _example(rng, channels, size, size), rng, dtype)


def nest(module: nn.Sequential, rng: random.Random | int) -> nn.Sequential:
    """The same network with its children grouped into nested Sequentials
    (so state-dict names get several levels, e.g. ``"1.0.2.weight"``)."""
    rng = as_rng(rng)
    children = list(module.children())
    if len(children) < 2:
        return nn.Sequential(module) if rng.random() < 0.5 else module
    groups, start = [], 0
    while start < len(children):
        stop = rng.randint(start + 1, len(children))
        part = children[start:stop]
        groups.append(nest(nn.Sequential(*part), rng) if len(part) > 1 and rng.random() < 0.7
                      else part[0] if len(part) == 1 else nn.Sequential(*part))
        start = stop
    return nn.Sequential(*groups)


KINDS = ("mlp", "cnn1d", "cnn2d", "cnn3d", "custom", "nested")


def random_architecture(rng: random.Random | int, *, kinds: tuple[str, ...] = KINDS,
                        dtype: torch.dtype = torch.float32) -> tuple[nn.Module, torch.Tensor]:
    """A random supported network of one of ``kinds`` and its example input."""
    rng = as_rng(rng)
    kind = rng.choice(kinds)
    if kind == "mlp":
        return random_mlp(rng, dtype=dtype)
    if kind.startswith("cnn"):
        return random_cnn(rng, dim=int(kind[3]), dtype=dtype)
    if kind == "custom":
        return random_custom(rng, dtype=dtype)
    if kind == "nested":
        base, example = random_architecture(rng, kinds=("mlp", "cnn1d", "cnn2d"), dtype=dtype)
        return nest(base, rng).eval(), example
    raise ValueError(f"random_architecture: unknown kind {kind!r}; choose from {KINDS}")


def random_architectures(seed: int, count: int, **kwargs) -> list[tuple[nn.Module, torch.Tensor]]:
    """``count`` random networks from one seed (a fixed, reproducible list)."""
    rng = random.Random(seed)
    return [random_architecture(rng, **kwargs) for _ in range(count)]


def leaf_types(module: nn.Module) -> set[type]:
    """The module classes used by ``module`` (to check coverage)."""
    return {type(child) for child in module.modules() if not list(child.children())}


def assert_graphs_equal(actual, expected) -> None:
    """Every attribute of two graphs is identical (values, dtypes, layout strings)."""
    assert sorted(actual.keys()) == sorted(expected.keys()), (actual.keys(), expected.keys())
    for key in expected.keys():
        a, e = actual[key], expected[key]
        if isinstance(e, torch.Tensor):
            assert isinstance(a, torch.Tensor) and a.dtype == e.dtype, (key, a, e)
            assert a.shape == e.shape and torch.equal(a, e), f"attribute '{key}' differs"
        else:
            assert a == e, f"attribute '{key}' differs: {a!r} != {e!r}"
    assert actual.num_nodes == expected.num_nodes


class ResidualMLP(nn.Module):
    """``c(h + b(h))`` with ``h = relu(a(x))``: one residual connection, sizes 3-4-4-2."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(3, 4), nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x):
        h = torch.relu(self.a(x))
        return self.c(h + self.b(h))
