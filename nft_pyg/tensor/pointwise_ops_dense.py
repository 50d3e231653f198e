r"""Dense twins of the pointwise weight-space modules (encodings, norms, maps).

Each function states on a :class:`~nft_pyg.tensor.WeightSpace` what the
graph module of the same name in :mod:`nft_pyg.nn` computes, with the
module's parameters passed in as plain tensors. Unless said otherwise the
weight space is *folded* (``weights[i]`` ``[B, C, n_i, n_{i-1}]``, kernel
positions moved into channels by :meth:`WeightSpace.fold_kernels`); the
channel dimension is dim 1. Only tensor algebra is used here (no scatter,
no graph), so the graph code and these functions check each other.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from .weight_space import WeightSpace


def _channel_view(vector: Tensor, ndim: int) -> Tensor:
    """``[C]`` -> ``[1, C, 1, ...]`` broadcasting against a ``ndim``-D tensor."""
    return vector.reshape(1, -1, *([1] * (ndim - 2)))


def activation_dense(ws: WeightSpace, act: Callable[[Tensor], Tensor]) -> WeightSpace:
    """``act`` applied to every entry (any weight space, folded or not)."""
    return ws.map(act)


def linear_dense(ws: WeightSpace, weight: Tensor, bias: Tensor | None) -> WeightSpace:
    """``W h + b`` on the channels of every entry; ``weight`` ``[C', C]``, ``bias`` ``[C']``."""
    def mix(t: Tensor) -> Tensor:
        out = torch.einsum("oc,bc...->bo...", weight, t)
        return out if bias is None else out + _channel_view(bias, out.dim())
    return ws.map(mix)


def layer_norm_dense(ws: WeightSpace, weight: Tensor | None, bias: Tensor | None,
                     eps: float) -> WeightSpace:
    """Layer norm over the channels (dim 1) of every entry, shared affine ``[C]``."""
    def norm(t: Tensor) -> Tensor:
        mean = t.mean(dim=1, keepdim=True)
        var = (t - mean).pow(2).mean(dim=1, keepdim=True)
        out = (t - mean) / torch.sqrt(var + eps)
        if weight is not None:
            out = out * _channel_view(weight, out.dim())
        if bias is not None:
            out = out + _channel_view(bias, out.dim())
        return out
    return ws.map(norm)


def fourier_features_dense(ws: WeightSpace, frequencies: Tensor) -> WeightSpace:
    r"""Per-entry Gaussian Fourier features; ``frequencies`` ``[C, F]``.

    Channel ``c`` of an entry becomes the ``2F`` channels
    ``[sin(2 pi B_c1 w), ..., sin(2 pi B_cF w), cos(2 pi B_c1 w), ..., cos(...)]``
    (channel-major): ``[B, C, ...]`` -> ``[B, 2 C F, ...]``.
    """
    channels, num_frequencies = frequencies.shape

    def encode(t: Tensor) -> Tensor:
        rest = t.shape[2:]
        scale = frequencies.reshape(1, channels, num_frequencies, *([1] * len(rest)))
        angles = 2 * math.pi * t.unsqueeze(2) * scale
        out = torch.cat([torch.sin(angles), torch.cos(angles)], dim=2)
        return out.reshape(t.size(0), channels * 2 * num_frequencies, *rest)
    return ws.map(encode)


def layer_encoding_dense(ws: WeightSpace, weight_table: Tensor,
                         bias_table: Tensor) -> WeightSpace:
    """Add ``weight_table[l-1]`` to every entry of ``W_l`` and ``bias_table[l-1]`` to ``b_l``."""
    weights = [w + _channel_view(weight_table[i], w.dim()) for i, w in enumerate(ws.weights)]
    biases = [b + _channel_view(bias_table[i], b.dim()) for i, b in enumerate(ws.biases)]
    return WeightSpace(weights, biases, ws.layout)


def io_position_dense(ws: WeightSpace, input_table: Tensor,
                      output_table: Tensor) -> WeightSpace:
    r"""Add input / output position embeddings (folded weight space).

    ``W_1[:, :, i, j] += input_table[j]`` (column ``j`` = input neuron ``j``),
    ``W_L[:, :, i, j] += output_table[i]`` and ``b_L[:, :, i] += output_table[i]``.
    """
    weights, biases = list(ws.weights), list(ws.biases)
    num_inputs, num_outputs = ws.neuron_layer_sizes[0], ws.neuron_layer_sizes[-1]
    inputs = input_table[:num_inputs].t()        # [C, n_0]
    outputs = output_table[:num_outputs].t()     # [C, n_L]
    weights[0] = weights[0] + inputs.reshape(1, -1, 1, num_inputs)
    weights[-1] = weights[-1] + outputs.reshape(1, -1, num_outputs, 1)
    biases[-1] = biases[-1] + outputs.reshape(1, -1, num_outputs)
    return WeightSpace(weights, biases, ws.layout)


def kernel_projection_dense(ws: WeightSpace, edge_weight: Tensor, edge_bias: Tensor,
                            node_weight: Tensor, node_bias: Tensor,
                            kernel_sizes: Sequence[int]) -> WeightSpace:
    r"""Per-layer projection of raw kernels to ``C`` channels.

    ``ws`` is raw (one channel, kernel dimensions kept). For weight layer
    ``l`` with ``S_l`` kernel positions,
    ``W'_l[b, :, i, j] = edge_weight[l, :S_l]^T vec(W_l[b, 0, i, j]) + edge_bias[l]`` and
    ``b'_l[b, :, i] = node_weight[l] b_l[b, 0, i] + node_bias[l]``.
    ``edge_weight`` ``[L, S, C]``, the others ``[L, C]``. A layer with fewer
    than ``S_l`` positions is zero padded. Gives a folded weight space with
    ``C`` channels.
    """
    if ws.channels != 1:
        raise ValueError(f"kernel_projection_dense: expects a raw weight space (C = 1), got "
                         f"C = {ws.channels}")
    weights, biases = [], []
    for i, (w, b) in enumerate(zip(ws.weights, ws.biases)):
        size = kernel_sizes[i]
        flat = w.reshape(w.size(0), w.size(2), w.size(3), -1)
        if flat.size(-1) > size:
            raise ValueError(f"kernel_projection_dense: layer {i + 1} has {flat.size(-1)} "
                             f"kernel positions, the projection takes {size}")
        # a smaller kernel is zero padded, as in a raw graph of a wider batch
        flat = torch.nn.functional.pad(flat, (0, size - flat.size(-1)))
        out = torch.einsum("bnms,sc->bcnm", flat, edge_weight[i, :size])
        weights.append(out + _channel_view(edge_bias[i], out.dim()))
        biases.append(b * _channel_view(node_weight[i], 3) + _channel_view(node_bias[i], 3))
    return WeightSpace(weights, biases, ws.layout)


def kernel_readout_dense(ws: WeightSpace, edge_weight: Tensor, edge_bias: Tensor,
                         node_weight: Tensor, node_bias: Tensor,
                         kernel_shapes: Sequence[tuple[int, ...]],
                         layer_bias: Sequence[bool]) -> WeightSpace:
    r"""Per-layer read-out of ``C`` channels to raw kernels (inverse direction).

    ``W'_l[b, 0, i, j] = unvec(edge_weight[l, :, :S_l]^T W_l[b, :, i, j] + edge_bias[l, :S_l])``
    with the kernel shape of layer ``l``, and
    ``b'_l[b, 0, i] = node_weight[l] . b_l[b, :, i] + node_bias[l]`` (zero for a
    layer without bias). ``edge_weight`` ``[L, C, S]``, ``edge_bias`` ``[L, S]``,
    ``node_weight`` ``[L, C]``, ``node_bias`` ``[L]``. Gives a raw weight space.
    """
    weights, biases = [], []
    for i, (w, b) in enumerate(zip(ws.weights, ws.biases)):
        shape = tuple(kernel_shapes[i])
        size = math.prod(shape)
        kernel = torch.einsum("bcnm,cs->bnms", w, edge_weight[i, :, :size]) + edge_bias[i, :size]
        weights.append(kernel.reshape(w.size(0), 1, w.size(2), w.size(3), *shape))
        bias = torch.einsum("bcn,c->bn", b, node_weight[i]) + node_bias[i]
        biases.append((bias if layer_bias[i] else torch.zeros_like(bias)).unsqueeze(1))
    return WeightSpace(weights, biases, ws.layout)
