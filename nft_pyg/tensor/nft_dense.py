r"""Dense twin of NFT weight-space self-attention (``NFTAttention``).

Written on a folded :class:`WeightSpace` (``weights[i]`` ``[B, C, n_i,
n_{i-1}]``, ``biases[i]`` ``[B, C, n_i]``) with einsum and softmax only:
the tokens of neuron layer ``i`` are the columns of ``W_i``, the bias
``b_i`` and the rows of ``W_{i+1}``, stacked into ``[B, T_i, n_i, C]``.
It takes the four channel maps as plain callables and shares no code with
the graph operator, so the two check each other.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .weight_space import WeightSpace

ChannelMap = Callable[[Tensor], Tensor]


def nft_attention_dense(ws: WeightSpace, query: ChannelMap, key: ChannelMap,
                        value: ChannelMap, out: ChannelMap, heads: int, *,
                        global_term: bool = True, cross_term: bool = True,
                        dropout: float = 0.0, training: bool = False,
                        return_attention_weights: bool = False):
    """NFT self-attention on a folded weight space.

    Args:
        ws: folded weight space with ``C`` channels.
        query, key, value, out: maps ``[..., C] -> [..., C]`` of the last axis.
        heads: attention heads ``H`` (divides ``C``).
        global_term, cross_term: which terms to use.
        dropout, training: dropout on the attention weights when ``training``.

    Returns a :class:`WeightSpace` of the same shapes; with
    ``return_attention_weights=True`` also the cross-term weights, one
    ``[B, H, T_i, T_i]`` tensor per neuron layer ``i = 0..L`` (tokens in the
    order columns of ``W_i``, bias, rows of ``W_{i+1}``), or ``None``
    without the cross term.
    """
    if any(w.dim() != 4 for w in ws.weights):
        raise ValueError("nft_attention_dense: needs a folded weight space "
                         "(ws.fold_kernels()), got kernel dimensions")
    if ws.channels % heads:
        raise ValueError(f"nft_attention_dense: {ws.channels} channels do not split into "
                         f"{heads} heads")
    head_dim = ws.channels // heads

    def qkv(tokens: Tensor):
        return [f(tokens).unflatten(-1, (heads, head_dim)) for f in (query, key, value)]

    def attend(logits: Tensor) -> Tensor:
        return F.dropout(logits.softmax(dim=-1), p=dropout, training=training)

    # channels last: W [B, n_i, n_{i-1}, C], b [B, n_i, C]
    weights = [w.permute(0, 2, 3, 1) for w in ws.weights]
    biases = [b.permute(0, 2, 1) for b in ws.biases]
    weight_sums = [torch.zeros_like(w) for w in weights]
    bias_sums = [torch.zeros_like(b) for b in biases]
    num_layers = len(weights)
    cross_weights = [] if cross_term else None
    if cross_term:
        for i in range(num_layers + 1):  # neuron layer i
            parts = []
            if i > 0:
                parts.append(weights[i - 1].transpose(1, 2))  # columns of W_i [B, n_{i-1}, n_i, C]
                parts.append(biases[i - 1].unsqueeze(1))       # bias b_i [B, 1, n_i, C]
            if i < num_layers:
                parts.append(weights[i])  # rows of W_{i+1} [B, n_{i+1}, n_i, C]
            tokens = torch.cat(parts, dim=1)                   # [B, T, n_i, C]
            q, k, v = qkv(tokens)
            logits = torch.einsum("btvhd,bsvhd->bhts", q, k) / math.sqrt(
                head_dim * tokens.size(2))
            alpha = logits.softmax(dim=-1)
            cross_weights.append(alpha)
            alpha = F.dropout(alpha, p=dropout, training=training)
            o = torch.einsum("bhts,bsvhd->btvhd", alpha, v).flatten(-2)
            if i > 0:
                columns = weights[i - 1].size(2)
                weight_sums[i - 1] += o[:, :columns].transpose(1, 2)
                bias_sums[i - 1] += o[:, columns]
                o = o[:, columns + 1:]
            if i < num_layers:
                weight_sums[i] += o
    if global_term:
        tokens = torch.stack([w.mean(dim=(1, 2)) for w in weights] +
                             [b.mean(dim=1) for b in biases], dim=1)  # [B, 2L, C]
        q, k, v = qkv(tokens)
        alpha = attend(torch.einsum("bthd,bshd->bhts", q, k) / math.sqrt(head_dim))
        g = torch.einsum("bhts,bshd->bthd", alpha, v).flatten(-2)   # [B, 2L, C]
        for l in range(num_layers):
            weight_sums[l] += g[:, l, None, None]
            bias_sums[l] += g[:, num_layers + l, None]
    result = WeightSpace([out(w).permute(0, 3, 1, 2) for w in weight_sums],
                         [out(b).permute(0, 2, 1) for b in bias_sums], ws.layout)
    return (result, cross_weights) if return_attention_weights else result
