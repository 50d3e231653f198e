"""SIREN implicit neural representations as plain ``nn.Sequential`` modules.

A SIREN (Sitzmann et al., 2020, "Implicit Neural Representations with
Periodic Activation Functions") is an MLP with sine activations::

    Linear -> Sine(w0_first) -> Linear -> Sine(w0) -> ... -> Linear

:class:`Sine` multiplies by ``w0`` *inside* the activation, so the weights
stored in the :class:`~torch.nn.Linear` layers are the raw (unscaled) ones.
This is the convention assumed everywhere in :mod:`nft_pyg.inr` and is what a
weight-space model sees when it reads the parameters of an INR.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..graph.convert import layout_of
from ..graph.modules import Sine, UnsupportedModuleError

__all__ = ["Sine", "siren", "init_bounds", "siren_layers", "stack_modules"]


def init_bounds(sizes: Sequence[int], w0: float) -> list[tuple[float, float]]:
    """SIREN initialisation bounds ``(weight_bound, bias_bound)`` per layer.

    Parameters of layer ``i`` (``sizes[i] -> sizes[i + 1]``) are drawn from
    ``U(-bound, bound)``; see :func:`siren` for the rule.

    Args:
        sizes: Layer sizes ``[n_0, n_1, ..., n_L]`` (input first).
        w0: Frequency of the hidden sine activations.
    """
    bounds = []
    for i, n_in in enumerate(sizes[:-1]):
        w_bound = 1.0 / n_in if i == 0 else math.sqrt(6.0 / n_in) / w0
        bounds.append((w_bound, 1.0 / math.sqrt(n_in)))
    return bounds


def _uniform_(tensor: Tensor, bound: float, generator: torch.Generator | None) -> None:
    """Fill ``tensor`` in place with samples of U(-bound, bound)."""
    with torch.no_grad():
        tensor.uniform_(-bound, bound, generator=generator)


def siren(
    in_features: int = 2,
    hidden: Sequence[int] = (32, 32),
    out_features: int = 1,
    w0: float = 30.0,
    w0_first: float = 30.0,
    generator: torch.Generator | None = None,
) -> nn.Sequential:
    r"""Build a SIREN with the initialisation of Sitzmann et al. (2020).

    The result is exactly
    ``Sequential(Linear, Sine(w0_first), Linear, Sine(w0), ..., Linear)``:
    one :class:`~torch.nn.Linear` per layer, a :class:`Sine` after every
    layer but the last, and a linear output layer. With ``hidden=()`` it is a
    single ``Linear``.

    Initialisation (weights ``W`` of shape ``[n_out, n_in]``):

    - first layer: :math:`W \sim U(-1/n_{in}, 1/n_{in})`;
    - every later layer, including the output layer:
      :math:`W \sim U(-\sqrt{6/n_{in}}/w_0, \sqrt{6/n_{in}}/w_0)`;
    - biases: :math:`U(-1/\sqrt{n_{in}}, 1/\sqrt{n_{in}})`, i.e. the
      distribution of PyTorch's default ``nn.Linear`` bias init, which the
      reference SIREN implementation keeps. Here it is drawn from
      ``generator`` so that the whole network is reproducible from it.

    Args:
        in_features: Coordinate dimension (1 for signals, 2 for images, ...).
        hidden: Widths of the hidden layers.
        out_features: Output channels (1 for grey-scale, 3 for colour, ...).
        w0: Frequency of the hidden sine activations.
        w0_first: Frequency of the sine after the first layer.
        generator: Optional random generator; if ``None`` the global RNG is
            used. Parameters are drawn layer by layer, weight then bias.

    Returns:
        An ``nn.Sequential`` on the CPU in the default dtype (float32 unless
        changed); use ``.double()`` / ``.to(...)`` to convert.

    Shapes:
        - input: ``[*, in_features]``
        - output: ``[*, out_features]``
    """
    sizes = [int(in_features), *[int(h) for h in hidden], int(out_features)]
    if any(s <= 0 for s in sizes):
        raise ValueError(f"siren: all layer sizes must be positive, got {sizes}")
    layers: list[nn.Module] = []
    num_layers = len(sizes) - 1
    for i, (w_bound, b_bound) in enumerate(init_bounds(sizes, w0)):
        # skip_init avoids drawing (and discarding) PyTorch's default init
        # from the global RNG; every parameter is set below.
        linear = nn.utils.skip_init(nn.Linear, sizes[i], sizes[i + 1])
        _uniform_(linear.weight, w_bound, generator)
        _uniform_(linear.bias, b_bound, generator)
        layers.append(linear)
        if i < num_layers - 1:
            layers.append(Sine(w0_first if i == 0 else w0))
    return nn.Sequential(*layers)


def _sine_w0(module: nn.Module) -> float | None:
    """The frequency of a sine activation, or ``None`` if ``module`` is not one.

    Read by what the module computes, as :mod:`nft_pyg.graph` reads it (a
    module computing ``sin(w0 * x)``, whatever its class is called, with
    ``w0`` a number, an attribute, a buffer or a parameter), never by its
    class name: a look-alike computing anything else is refused.
    """
    if type(module) is Sine:      # the project's own class: its forward is known
        return float(module.w0)
    try:  # read it as the converter does, behind a one-neuron linear layer
        steps = layout_of(nn.Sequential(nn.Linear(1, 1), module)).steps
    except UnsupportedModuleError:
        return None
    if len(steps) != 2 or steps[1]["kind"] != "act" or steps[1]["act"] != "SINE":
        return None
    return float(steps[1]["params"]["w0"])


def siren_layers(module: nn.Module) -> tuple[list[nn.Linear], list[float]]:
    """Parse a SIREN ``nn.Sequential`` into its linear layers and frequencies.

    Args:
        module: ``Sequential(Linear, Sine, Linear, Sine, ..., Linear)``, as
            built by :func:`siren`. Every ``Linear`` must have a bias and
            consecutive layer sizes must match. Besides :class:`Sine`, any
            class named ``Sine`` with a numeric ``w0`` (or ``omega_0``)
            attribute counts as a sine activation (e.g. the one of
            :mod:`nft_pyg.graph`).

    Returns:
        ``(linears, w0s)`` with ``len(w0s) == len(linears) - 1``; ``w0s[i]``
        is the frequency of the sine after ``linears[i]``.

    Raises:
        ValueError: naming the module, if it does not have this structure.
    """
    name = type(module).__name__

    def fail(reason: str) -> ValueError:
        return ValueError(
            f"expected a SIREN nn.Sequential(Linear, Sine, ..., Linear), got "
            f"{name}: {reason}"
        )

    if not isinstance(module, nn.Sequential):
        raise fail("not an nn.Sequential")
    children = list(module)
    if len(children) % 2 == 0:
        raise fail(f"it has {len(children)} children; expected an odd number")
    linears: list[nn.Linear] = []
    w0s: list[float] = []
    for j, child in enumerate(children):
        if j % 2 == 0:
            if not isinstance(child, nn.Linear):
                raise fail(f"child {j} is {type(child).__name__}, expected Linear")
            if child.bias is None:
                raise fail(f"child {j} (Linear) has no bias")
            if linears and linears[-1].out_features != child.in_features:
                raise fail(
                    f"child {j} has in_features={child.in_features} but the previous "
                    f"Linear has out_features={linears[-1].out_features}"
                )
            linears.append(child)
        else:
            w0 = _sine_w0(child)
            if w0 is None:
                raise fail(f"child {j} ({type(child).__name__}) does not compute "
                           "sin(w0 * x)")
            w0s.append(w0)
    return linears, w0s


def stack_modules(modules: Sequence[nn.Module]) -> tuple[list[Tensor], list[Tensor]]:
    """Stack the parameters of equally shaped SIRENs into batched tensors.

    This is the inverse of :func:`nft_pyg.inr.to_modules` (the frequencies are
    not returned; see :func:`siren_layers`). The result is detached.

    Args:
        modules: ``B >= 1`` SIRENs with identical layer sizes.

    Returns:
        ``(weights, biases)`` with ``weights[i]`` of shape ``[B, n_i, n_{i-1}]``
        and ``biases[i]`` of shape ``[B, n_i]``.
    """
    if len(modules) == 0:
        raise ValueError("stack_modules: need at least one module")
    parsed = [siren_layers(m)[0] for m in modules]
    shapes = [tuple(l.weight.shape for l in p) for p in parsed]
    if any(s != shapes[0] for s in shapes):
        raise ValueError(
            f"stack_modules: all modules must have the same layer shapes, got "
            f"{sorted(set(shapes))}"
        )
    depth = len(parsed[0])
    weights = [torch.stack([p[i].weight.detach() for p in parsed]) for i in range(depth)]
    biases = [torch.stack([p[i].bias.detach() for p in parsed]) for i in range(depth)]
    return weights, biases
