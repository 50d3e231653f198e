r"""Fast path of the NFT cross term: padded dense blocks (:class:`.nft_index.DenseLayout`).

The projected entries are put into padded weight blocks ``[B, m_l, m_{l-1},
3C]`` and bias blocks ``[B, m_l, 3C]`` (for a batch of one fully connected
layout in :func:`~nft_pyg.from_module` order these are views of the
projected rows, no copy). The tokens of neuron layer :math:`i` are then
permuted views of those blocks, and the cross term is one ``cat`` and two
batched matrix products per neuron layer, the computation of the dense twin.
Absent entries are zero rows (so they add nothing to logits or outputs) and
pairs of tokens sharing no neuron are masked out of the softmax.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .nft_index import DenseLayout


def _padded(rows: Tensor, slot: Tensor | None, count: int) -> Tensor:
    if slot is None:
        return rows
    return rows.new_zeros(count, rows.size(1)).index_copy(0, slot, rows)


def dense_cross(edge_qkv: Tensor, node_qkv: Tensor, layout: DenseLayout, num_graphs: int,
                heads: int, dropout: float, training: bool) -> tuple[Tensor, Tensor]:
    """``(edge_sum [E, C], node_sum [N, C])``: the cross-term output
    :math:`o` of every edge (its column and row entries summed) and node, from
    the ``[E, 3C]`` / ``[N, 3C]`` query, key and value projections."""
    B, m = num_graphs, layout.sizes
    L = len(m) - 1
    width = edge_qkv.size(1)
    channels = width // 3
    dim = channels // heads
    weight_counts = layout.weight_counts
    edge_rows = _padded(edge_qkv, layout.edge_slot, B * sum(weight_counts))
    node_rows = _padded(node_qkv, layout.node_slot, B * sum(m))
    # q, k, v as [B, m_l, m_{l-1}, 3, H, d] (weights) and [B, m_l, 3, H, d] (biases)
    weights = [w.unflatten(1, (m[l + 1], m[l])).unflatten(-1, (3, heads, dim)) for l, w in
               enumerate(edge_rows.reshape(B, -1, width).split(weight_counts, dim=1))]
    biases = [b.unflatten(-1, (3, heads, dim)) for b in
              node_rows.reshape(B, -1, width).split(list(m), dim=1)[1:]]
    weight_terms: list[list[Tensor]] = [[] for _ in range(L)]  # [B, m_l, m_{l-1}, H, d]
    bias_terms: list[Tensor] = []                               # [B, m_l, H, d]
    for i in range(L + 1):
        parts = []  # tokens as [3, B, H, T, m_i, d]: columns of W_i, b_i, rows of W_{i+1}
        if i > 0:
            parts.append(weights[i - 1].permute(3, 0, 4, 2, 1, 5))
            parts.append(biases[i - 1].permute(2, 0, 3, 1, 4).unsqueeze(3))
        if i < L:
            parts.append(weights[i].permute(3, 0, 4, 1, 2, 5))
        tokens = torch.cat(parts, dim=3)
        count = tokens.size(3)
        query, key, value = tokens.reshape(3, B * heads, count, m[i] * dim).unbind(0)
        logits = torch.bmm(query, key.transpose(1, 2)).view(B, heads, count, count)
        scale = layout.scales[i]
        if isinstance(scale, Tensor):
            scale = scale.to(logits.dtype).view(B, 1, 1, 1)
        logits = logits * (scale / math.sqrt(dim))
        if layout.blocked[i] is not None:
            logits = logits.masked_fill(layout.blocked[i].unsqueeze(1), float("-inf"))
        alpha = F.dropout(logits.softmax(dim=-1), p=dropout, training=training)
        out = torch.bmm(alpha.view(B * heads, count, count), value)
        pieces = out.view(B, heads, count, m[i], dim).split(
            ([m[i - 1], 1] if i > 0 else []) + ([m[i + 1]] if i < L else []), dim=2)
        if i > 0:  # o_u(v) of column u at v, as weight layer i [B, m_i, m_{i-1}, H, d]
            weight_terms[i - 1].append(pieces[0].permute(0, 3, 2, 1, 4))
            bias_terms.append(pieces[1].squeeze(2).transpose(1, 2))
        if i < L:  # o_w(v) of row w at v, as weight layer i + 1
            weight_terms[i].append(pieces[-1].permute(0, 2, 3, 1, 4))
    edge_sum = torch.cat([(a + b).reshape(B, -1, channels) for a, b in weight_terms], dim=1)
    node_sum = torch.cat([edge_sum.new_zeros(B, m[0], channels)] +
                         [b.reshape(B, -1, channels) for b in bias_terms], dim=1)
    edge_sum, node_sum = edge_sum.reshape(-1, channels), node_sum.reshape(-1, channels)
    if layout.edge_slot is not None:
        edge_sum = edge_sum.index_select(0, layout.edge_slot)
    if layout.node_slot is not None:
        node_sum = node_sum.index_select(0, layout.node_slot)
    return edge_sum, node_sum
