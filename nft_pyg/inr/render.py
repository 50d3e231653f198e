"""Batched, differentiable rendering of SIRENs given as weight tensors.

The central function :func:`render_weights` evaluates ``B`` SIRENs with the
same architecture at once from their stacked parameters, with batched matrix
products (no Python loop over the batch). It is the functional counterpart of
the modules built by :func:`nft_pyg.inr.siren` and is differentiable with
respect to both the parameters and the coordinates.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .siren import siren_layers

__all__ = ["render_weights", "make_grid", "render_image", "render_module"]

Resolution = int | Sequence[int]


def _drop_channel(t: Tensor, kind: str, i: int, rank: int) -> Tensor:
    """Accept ``t`` of rank ``rank`` or ``rank + 1`` with a size-1 channel dim 1."""
    if t.dim() == rank + 1:
        if t.shape[1] != 1:
            raise ValueError(
                f"{kind}[{i}] has shape {tuple(t.shape)}: a rank-{rank + 1} "
                f"{kind} tensor is read as [B, C, ...] and needs C == 1 channel, "
                f"got C = {t.shape[1]}"
            )
        return t.squeeze(1)
    if t.dim() != rank:
        expected = "[B, n_i, n_{i-1}]" if kind == "weights" else "[B, n_i]"
        raise ValueError(
            f"{kind}[{i}] must have shape {expected} (or with a size-1 channel "
            f"dim at position 1), got shape {tuple(t.shape)}"
        )
    return t


def check_weights(
    weights: Sequence[Tensor], biases: Sequence[Tensor]
) -> tuple[list[Tensor], list[Tensor]]:
    """Validate stacked SIREN parameters and drop a size-1 channel dimension.

    Args:
        weights: ``L`` tensors ``[B, n_i, n_{i-1}]`` or ``[B, 1, n_i, n_{i-1}]``.
        biases: ``L`` tensors ``[B, n_i]`` or ``[B, 1, n_i]``.

    Returns:
        ``(weights, biases)`` as lists of ``[B, n_i, n_{i-1}]`` / ``[B, n_i]``.

    Raises:
        ValueError: on wrong ranks, a channel dimension larger than one,
            mismatched batch sizes or layer sizes that do not chain.
    """
    if isinstance(weights, Tensor) or isinstance(biases, Tensor):
        raise ValueError("weights and biases must be sequences of tensors, one per layer")
    if len(weights) == 0 or len(weights) != len(biases):
        raise ValueError(
            f"need one bias per weight and at least one layer, got "
            f"{len(weights)} weights and {len(biases)} biases"
        )
    ws = [_drop_channel(w, "weights", i, 3) for i, w in enumerate(weights)]
    bs = [_drop_channel(b, "biases", i, 2) for i, b in enumerate(biases)]
    batch = ws[0].shape[0]
    for i, (w, b) in enumerate(zip(ws, bs)):
        if w.shape[0] != batch or b.shape[0] != batch:
            raise ValueError(
                f"batch sizes differ: weights[0] has B={batch}, layer {i} has "
                f"weights B={w.shape[0]} and biases B={b.shape[0]}"
            )
        if b.shape[1] != w.shape[1]:
            raise ValueError(
                f"layer {i}: biases[{i}] has {b.shape[1]} entries but weights[{i}] "
                f"has {w.shape[1]} output rows (shape {tuple(w.shape)})"
            )
        if i > 0 and w.shape[2] != ws[i - 1].shape[1]:
            raise ValueError(
                f"layer {i}: weights[{i}] expects {w.shape[2]} inputs but layer "
                f"{i - 1} has {ws[i - 1].shape[1]} outputs"
            )
    return ws, bs


def _forward(
    weights: list[Tensor], biases: list[Tensor], coords: Tensor, w0s: Sequence[float]
) -> Tensor:
    """Evaluate validated stacked SIRENs; ``w0s[i]`` follows layer ``i``."""
    batch = weights[0].shape[0]
    h = coords if coords.dim() == 3 else coords.unsqueeze(0).expand(batch, -1, -1)
    last = len(weights) - 1
    for i, (w, b) in enumerate(zip(weights, biases)):
        # h: [B, P, n_{i-1}], w: [B, n_i, n_{i-1}] -> [B, P, n_i]
        if i < last:
            # baddbmm fuses the bias and the w0 factor: w0 * (b + h @ w^T).
            h = torch.sin(torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2),
                                        beta=w0s[i], alpha=w0s[i]))
        else:
            h = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
    return h


def render_weights(
    weights: Sequence[Tensor],
    biases: Sequence[Tensor],
    coords: Tensor,
    w0: float = 30.0,
    w0_first: float = 30.0,
) -> Tensor:
    """Evaluate ``B`` SIRENs of identical architecture at given coordinates.

    Computes, for every INR in the batch, the same function as the module
    built by :func:`nft_pyg.inr.siren` (``Sine(w0_first)`` after the first
    layer, ``Sine(w0)`` after the other hidden layers, linear output).

    Args:
        weights: ``L`` tensors, ``weights[i]`` of shape ``[B, n_i, n_{i-1}]``
            (``n_0`` = coordinate dim). The 4-D ``WeightSpace`` layout
            ``[B, 1, n_i, n_{i-1}]`` is also accepted.
        biases: ``L`` tensors, ``biases[i]`` of shape ``[B, n_i]`` (or
            ``[B, 1, n_i]``).
        coords: ``[P, n_0]`` coordinates shared by all INRs, or ``[B, P, n_0]``
            per-INR coordinates. Cast to the dtype/device of ``weights[0]``.
        w0: Frequency of the hidden sine activations.
        w0_first: Frequency of the sine after the first layer.

    Returns:
        Tensor of shape ``[B, P, n_L]``, differentiable w.r.t. all inputs.

    Raises:
        ValueError: on malformed or inconsistent shapes.
    """
    ws, bs = check_weights(weights, biases)
    if coords.dim() not in (2, 3):
        raise ValueError(
            f"coords must have shape [P, in] or [B, P, in], got shape {tuple(coords.shape)}"
        )
    if coords.dim() == 3 and coords.shape[0] != ws[0].shape[0]:
        raise ValueError(
            f"batch sizes differ: coords has B={coords.shape[0]}, weights have "
            f"B={ws[0].shape[0]}"
        )
    if coords.shape[-1] != ws[0].shape[2]:
        raise ValueError(
            f"coords have {coords.shape[-1]} features but weights[0] expects "
            f"{ws[0].shape[2]} (shape {tuple(ws[0].shape)})"
        )
    coords = coords.to(dtype=ws[0].dtype, device=ws[0].device)
    w0s = [w0_first] + [w0] * (len(ws) - 2)
    return _forward(ws, bs, coords, w0s)


def _resolution(resolution: Resolution, dim: int) -> tuple[int, ...]:
    if isinstance(resolution, int):
        res = (resolution,) * dim
    else:
        res = tuple(int(r) for r in resolution)
    if len(res) != dim or any(r <= 0 for r in res):
        raise ValueError(
            f"resolution must be a positive int or {dim} positive ints, got {resolution!r}"
        )
    return res


def make_grid(
    resolution: Resolution,
    dim: int = 2,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
) -> Tensor:
    """Regular grid of coordinates in ``[-1, 1]^dim``, as in the SIREN paper.

    Along an axis of size ``n`` the coordinates are ``linspace(-1, 1, n)``,
    so the outermost samples lie exactly on ``-1`` and ``1`` (not on pixel
    centres). Points are in row-major (C) order, and coordinate ``k`` runs
    along axis ``k``: for an image, ``grid[r * W + c] == (y_r, x_c)``, so the
    first coordinate indexes rows.

    Args:
        resolution: Samples per axis, an int (same for every axis) or ``dim``
            ints (e.g. ``(H, W)``).
        dim: Number of axes.
        dtype: Floating dtype (default: ``torch.get_default_dtype()``).
        device: Device of the result.

    Returns:
        Tensor of shape ``[prod(resolution), dim]``.
    """
    res = _resolution(resolution, dim)
    axes = [torch.linspace(-1.0, 1.0, n, dtype=dtype, device=device) for n in res]
    mesh = torch.meshgrid(*axes, indexing="ij")
    return torch.stack(mesh, dim=-1).reshape(-1, dim)


def render_image(
    weights: Sequence[Tensor],
    biases: Sequence[Tensor],
    resolution: Resolution,
    w0: float = 30.0,
    w0_first: float = 30.0,
) -> Tensor:
    """Render stacked SIRENs on a :func:`make_grid` grid.

    The grid dimension is the input size of the first layer, so this renders
    images (2-D) but also signals (1-D) or volumes (3-D).

    Args:
        weights, biases: As in :func:`render_weights`.
        resolution: ``(H, W)`` or an int for a square image (in general one
            size per coordinate dimension).
        w0, w0_first: Sine frequencies, as in :func:`render_weights`.

    Returns:
        Tensor of shape ``[B, out, H, W]`` (in general ``[B, out, *resolution]``).
    """
    ws, bs = check_weights(weights, biases)
    dim = ws[0].shape[2]
    res = _resolution(resolution, dim)
    grid = make_grid(res, dim, dtype=ws[0].dtype, device=ws[0].device)
    out = render_weights(ws, bs, grid, w0=w0, w0_first=w0_first)  # [B, P, C]
    batch, _, channels = out.shape
    return out.reshape(batch, *res, channels).movedim(-1, 1)


def render_module(module: nn.Module, resolution: Resolution) -> Tensor:
    """Render a single SIREN ``nn.Sequential`` on a :func:`make_grid` grid.

    The frequencies are read from the module's :class:`~nft_pyg.inr.Sine`
    layers (they may differ per layer). Differentiable w.r.t. the module's
    parameters.

    Args:
        module: ``Sequential(Linear, Sine, ..., Linear)`` as built by
            :func:`nft_pyg.inr.siren`.
        resolution: ``(H, W)`` or an int (one size per input feature).

    Returns:
        Tensor of shape ``[out, H, W]`` (in general ``[out, *resolution]``).

    Raises:
        ValueError: naming the module if it is not a SIREN ``nn.Sequential``.
    """
    linears, w0s = siren_layers(module)
    ws = [l.weight.unsqueeze(0) for l in linears]
    bs = [l.bias.unsqueeze(0) for l in linears]
    dim = ws[0].shape[2]
    res = _resolution(resolution, dim)
    grid = make_grid(res, dim, dtype=ws[0].dtype, device=ws[0].device)
    out = _forward(ws, bs, grid, w0s)[0]  # [P, C]
    return out.reshape(*res, out.shape[-1]).movedim(-1, 0)
