r"""Dense twin of :class:`~nft_pyg.nn.conv.nft_attention.NFTAttention`.

Written on a folded :class:`WeightSpace` (``weights[i]`` ``[B, C, n_i,
n_{i-1}]``, ``biases[i]`` ``[B, C, n_i]``) with einsum and softmax only:
the tokens of neuron layer ``i`` are the columns of ``W_i``, the bias
``b_i`` and the rows of ``W_{i+1}``, stacked into ``[B, T_i, n_i, C]``.
It shares no code with the graph path, so the two check each other.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from .weight_space import WeightSpace

if TYPE_CHECKING:
    from ..nn.conv.nft_attention import NFTAttention


def nft_attention_dense(attn: "NFTAttention", ws: WeightSpace,
                        return_attention_weights: bool = False):
    """Apply ``attn`` (its parameters and flags) to a folded weight space.

    Returns a :class:`WeightSpace` of the same shapes; with
    ``return_attention_weights=True`` also the cross-term weights, one
    ``[B, H, T_i, T_i]`` tensor per neuron layer ``i = 0..L`` (tokens in the
    order columns of ``W_i``, bias, rows of ``W_{i+1}``), or ``None``
    without the cross term.
    """
    if any(w.dim() != 4 for w in ws.weights):
        raise ValueError("NFTAttention.forward_dense: needs a folded weight space "
                         "(ws.fold_kernels()), got kernel dimensions")
    if ws.channels != attn.channels:
        raise ValueError(f"NFTAttention.forward_dense: built for {attn.channels} channels, "
                         f"the weight space has {ws.channels}")
    attn.check_num_layers(ws.num_layers)
    # channels last: W [B, n_i, n_{i-1}, C], b [B, n_i, C]
    weights = [w.permute(0, 2, 3, 1) for w in ws.weights]
    biases = [b.permute(0, 2, 1) for b in ws.biases]
    weight_sums = [torch.zeros_like(w) for w in weights]
    bias_sums = [torch.zeros_like(b) for b in biases]
    cross_weights = None
    if attn.cross_term:
        cross_weights = _cross(attn, weights, biases, weight_sums, bias_sums)
    if attn.global_term:
        _global(attn, weights, biases, weight_sums, bias_sums)
    out = WeightSpace([attn.out(w).permute(0, 3, 1, 2) for w in weight_sums],
                      [attn.out(b).permute(0, 2, 1) for b in bias_sums], ws.layout)
    return (out, cross_weights) if return_attention_weights else out


def _heads(attn: "NFTAttention", tensor: Tensor) -> Tensor:
    return tensor.reshape(*tensor.shape[:-1], attn.heads, attn.head_channels)


def _cross(attn, weights, biases, weight_sums, bias_sums) -> list[Tensor]:
    num_layers = len(weights)
    all_alpha = []
    for i in range(num_layers + 1):  # neuron layer i
        parts = []
        if i > 0:
            parts.append(weights[i - 1].transpose(1, 2))  # columns of W_i: [B, n_{i-1}, n_i, C]
            parts.append(biases[i - 1].unsqueeze(1))       # bias b_i: [B, 1, n_i, C]
        if i < num_layers:
            parts.append(weights[i])                       # rows of W_{i+1}: [B, n_{i+1}, n_i, C]
        tokens = torch.cat(parts, dim=1)                   # [B, T, n_i, C]
        query = _heads(attn, attn.query(tokens))
        key = _heads(attn, attn.key(tokens))
        value = _heads(attn, attn.value(tokens))
        width = tokens.size(2)
        logits = torch.einsum("btvhd,bsvhd->bhts", query, key) / math.sqrt(
            attn.head_channels * width)
        alpha = logits.softmax(dim=-1)
        all_alpha.append(alpha)
        alpha = F.dropout(alpha, p=attn.dropout, training=attn.training)
        out = torch.einsum("bhts,bsvhd->btvhd", alpha, value).flatten(-2)
        if i > 0:
            columns = weights[i - 1].size(2)
            weight_sums[i - 1] += out[:, :columns].transpose(1, 2)
            bias_sums[i - 1] += out[:, columns]
            out = out[:, columns + 1:]
        if i < num_layers:
            weight_sums[i] += out
    return all_alpha


def _global(attn, weights, biases, weight_sums, bias_sums) -> None:
    tokens = torch.stack([w.mean(dim=(1, 2)) for w in weights] +
                         [b.mean(dim=1) for b in biases], dim=1)  # [B, 2L, C]
    query = _heads(attn, attn.query(tokens))
    key = _heads(attn, attn.key(tokens))
    value = _heads(attn, attn.value(tokens))
    logits = torch.einsum("bthd,bshd->bhts", query, key) / math.sqrt(attn.head_channels)
    alpha = F.dropout(logits.softmax(dim=-1), p=attn.dropout, training=attn.training)
    out = torch.einsum("bhts,bshd->bthd", alpha, value).flatten(-2)  # [B, 2L, C]
    num_layers = len(weights)
    for l in range(num_layers):
        weight_sums[l] += out[:, l, None, None]
        bias_sums[l] += out[:, num_layers + l, None]
