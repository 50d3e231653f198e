r"""Fast path of :class:`~nft_pyg.nn.conv.nft_attention.NFTAttention` for a
batch of fully connected networks of one layout.

In such a batch (the usual case: a model zoo of one architecture) the
nodes and edges of each graph are in canonical order, so every weight layer
of every graph is a contiguous row-major block of the edge features: the
edges of weight layer :math:`l` are ``edge_attr.view(B, E_g, C)`` rows
``[o_l, o_l + n_l n_{l-1})``, i.e. :math:`W_l` as ``[B, n_l, n_{l-1}, C]``.
The tokens of every neuron layer are then views of the projected features,
and the cross term is one ``cat`` and two batched matrix products per
neuron layer (the computation of the dense twin), with no index gathers or
scatters, and no zero-filled buffers in the backward pass (``split`` and
``cat`` are each other's backward).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class UniformLayout:
    """``B`` fully connected graphs with neuron layer sizes ``sizes``, nodes and
    edges in canonical order, graph after graph."""

    num_graphs: int
    sizes: tuple[int, ...]        # n_0 .. n_L
    edge_counts: tuple[int, ...]  # n_l * n_{l-1}, l = 1 .. L

    @classmethod
    def of(cls, structure) -> UniformLayout | None:
        """The layout of ``structure`` (cached on it), ``None`` if the batch is not
        one fully connected layout in canonical order."""
        return structure._cached("nft_uniform_layout", lambda: cls.detect(structure))

    @classmethod
    def detect(cls, s) -> UniformLayout | None:
        num_graphs, num_layers = s.num_graphs, s.num_layers
        num_nodes, num_edges = s.num_nodes, s.src.numel()
        if num_graphs == 0 or num_layers == 0 or num_nodes % num_graphs or \
                num_edges % num_graphs:
            return None
        device = s.src.device
        node_layer = s.node_layer.view(num_graphs, -1)
        first = node_layer[0]
        if not bool((first[1:] >= first[:-1]).all()) or not bool((node_layer == first).all()):
            return None
        sizes = torch.bincount(first, minlength=num_layers + 1)
        if sizes.numel() != num_layers + 1 or not bool((sizes > 0).all()):
            return None
        sizes = tuple(sizes.tolist())
        edge_counts = tuple(a * b for a, b in pairwise(sizes))
        if num_edges // num_graphs != sum(edge_counts):
            return None
        graph_nodes = num_nodes // num_graphs
        if not torch.equal(s.node_batch, torch.arange(num_graphs, device=device)
                           .repeat_interleave(graph_nodes)):
            return None
        position = torch.cat([torch.arange(n, device=device) for n in sizes])
        if not torch.equal(s.node_pos.view(num_graphs, -1), position.expand(num_graphs, -1)):
            return None
        # canonical edges of one graph: layer, then target, then source
        offset = [0]
        for n in sizes:
            offset.append(offset[-1] + n)
        src, dst, layer = [], [], []
        for l in range(1, num_layers + 1):
            n_in, n_out = sizes[l - 1], sizes[l]
            src.append(offset[l - 1] + torch.arange(n_in, device=device).repeat(n_out))
            dst.append(offset[l] + torch.arange(n_out, device=device).repeat_interleave(n_in))
            layer.append(torch.full((n_in * n_out,), l, device=device))
        shift = (torch.arange(num_graphs, device=device) * graph_nodes).unsqueeze(1)
        for got, one in ((s.src, torch.cat(src)), (s.dst, torch.cat(dst))):
            if not torch.equal(got.view(num_graphs, -1), one + shift):
                return None
        if not torch.equal(s.edge_layer.view(num_graphs, -1),
                           torch.cat(layer).expand(num_graphs, -1)):
            return None
        return cls(num_graphs, sizes, edge_counts)


def fused_qkv(attn, features: Tensor) -> Tensor:
    """``[..., 3C]``: query, key and value projections of ``features`` in one matmul."""
    weight = torch.cat([attn.query.weight, attn.key.weight, attn.value.weight])
    bias = attn.query.bias
    if bias is not None:
        bias = torch.cat([attn.query.bias, attn.key.bias, attn.value.bias])
    return F.linear(features, weight, bias)


def uniform_forward(attn, x: Tensor, edge_attr: Tensor, layout: UniformLayout,
                    return_attention_weights: bool = False):
    """``(x_out, edge_out, cross_alpha)`` of ``attn`` on a uniform batch;
    ``cross_alpha`` is the list of ``[B, H, T_i, T_i]`` cross-term weights
    (``None`` without the cross term or unless asked for)."""
    num_graphs, sizes = layout.num_graphs, layout.sizes
    num_layers = len(sizes) - 1
    channels = attn.channels
    edge_rows = edge_attr.view(num_graphs, -1, channels)
    node_rows = x.view(num_graphs, -1, channels)[:, sizes[0]:]  # input neurons: ignored

    # the terms added on weight layer l (index l - 1), broadcasting to
    # [B, n_l, n_{l-1}, H, d], and on bias layer l, to [B, n_l, H, d]
    weight_terms: list[list[Tensor]] = [[] for _ in range(num_layers)]
    bias_terms: list[list[Tensor]] = [[] for _ in range(num_layers)]
    all_alpha = None
    if attn.cross_term:
        all_alpha = _cross(attn, edge_rows, node_rows, layout, weight_terms, bias_terms,
                           return_attention_weights)
    if attn.global_term:
        tokens = torch.stack([e.mean(dim=1) for e in edge_rows.split(layout.edge_counts, 1)] +
                             [n.mean(dim=1) for n in node_rows.split(sizes[1:], 1)],
                             dim=1)  # [B, 2L, C]
        out = _global(attn, tokens).view(num_graphs, 2 * num_layers, attn.heads,
                                         attn.head_channels)
        for l in range(num_layers):
            weight_terms[l].append(out[:, l, None, None])
            bias_terms[l].append(out[:, num_layers + l, None])

    def total(terms, shape):
        result = terms[0] if len(terms) == 1 else terms[0] + terms[1]
        for term in terms[2:]:
            result = result + term
        return result.expand(shape).reshape(num_graphs, -1, channels)

    head_shape = (attn.heads, attn.head_channels)
    edge_sum = torch.cat([total(terms, (num_graphs, sizes[l + 1], sizes[l], *head_shape))
                          for l, terms in enumerate(weight_terms)], dim=1)
    node_sum = torch.cat([total(terms, (num_graphs, sizes[l + 1], *head_shape))
                          for l, terms in enumerate(bias_terms)], dim=1)
    edge_out = attn.out(edge_sum).view(-1, channels)
    node_out = attn.out(node_sum)
    x_out = torch.cat([node_out.new_zeros(num_graphs, sizes[0], channels), node_out],
                      dim=1).view(-1, channels)
    return x_out, edge_out, all_alpha


def _cross(attn, edge_rows, node_rows, layout, weight_terms, bias_terms, keep_alpha):
    heads, dim = attn.heads, attn.head_channels
    num_graphs, sizes = layout.num_graphs, layout.sizes
    num_layers = len(sizes) - 1
    # q, k, v of every weight / bias entry, as [B, n_l, n_{l-1}, 3, H, d] / [B, n_l, 3, H, d]
    edge_qkv = fused_qkv(attn, edge_rows).split(layout.edge_counts, dim=1)
    edge_qkv = [e.view(num_graphs, sizes[l + 1], sizes[l], 3, heads, dim)
                for l, e in enumerate(edge_qkv)]
    node_qkv = fused_qkv(attn, node_rows).split(sizes[1:], dim=1)
    node_qkv = [b.view(num_graphs, sizes[l + 1], 3, heads, dim)
                for l, b in enumerate(node_qkv)]
    all_alpha = [] if keep_alpha else None
    for i in range(num_layers + 1):
        width = sizes[i]
        # tokens as [3, B, H, T, n_i, d]: columns of W_i, bias b_i, rows of W_{i+1}
        parts = []
        if i > 0:
            parts.append(edge_qkv[i - 1].permute(3, 0, 4, 2, 1, 5))
            parts.append(node_qkv[i - 1].permute(2, 0, 3, 1, 4).unsqueeze(3))
        if i < num_layers:
            parts.append(edge_qkv[i].permute(3, 0, 4, 1, 2, 5))
        tokens = torch.cat(parts, dim=3)
        count = tokens.size(3)
        query, key, value = tokens.view(3, num_graphs * heads, count, width * dim).unbind(0)
        logits = torch.bmm(query, key.transpose(1, 2)).mul_(1.0 / math.sqrt(dim * width))
        alpha = logits.softmax(dim=-1)
        if keep_alpha:
            all_alpha.append(alpha.view(num_graphs, heads, count, count))
        alpha = F.dropout(alpha, p=attn.dropout, training=attn.training)
        out = torch.bmm(alpha, value).view(num_graphs, heads, count, width, dim)
        split = ([sizes[i - 1], 1] if i > 0 else []) + ([sizes[i + 1]] if i < num_layers else [])
        pieces = list(out.split(split, dim=2))
        if i > 0:  # o_u(v) of column u at v: weight layer i as [B, n_i, n_{i-1}, H, d]
            weight_terms[i - 1].append(pieces[0].permute(0, 3, 2, 1, 4))
            bias_terms[i - 1].append(pieces[1].squeeze(2).transpose(1, 2))
        if i < num_layers:  # o_w(v) of row w at v: weight layer i + 1
            weight_terms[i].append(pieces[-1].permute(0, 2, 3, 1, 4))
    return all_alpha


def _global(attn, tokens: Tensor) -> Tensor:
    """``[B, 2L, C]`` output of the global term on the layer-mean tokens (every
    layer present)."""
    num_graphs, count = tokens.shape[:2]
    heads, dim = attn.heads, attn.head_channels
    query, key, value = fused_qkv(attn, tokens).view(num_graphs, count, 3, heads,
                                                     dim).unbind(2)
    logits = torch.einsum("bthd,bshd->bhts", query, key) / math.sqrt(dim)
    alpha = F.dropout(logits.softmax(dim=-1), p=attn.dropout, training=attn.training)
    return torch.einsum("bhts,bshd->bthd", alpha, value).reshape(num_graphs, count,
                                                                 attn.channels)
