r"""The part of the batch index that :class:`~nft_pyg.nn.conv.nft_attention.NFTAttention` uses.

:class:`NFTAttentionIndex` is built from a
:class:`~nft_pyg.nn.structure.WeightGraphIndex` on the first forward that
gets that index (``index.part("nft_attention/<block_density>", ...)``) and
kept on the index, never on the data; later forwards on the same index read
only its tensors and ints (no host sync, no graph break under
``torch.compile``). Building it synchronises with the device.

Terms used below. The *tokens* of neuron layer :math:`i` of graph
:math:`b` are the columns of :math:`W_i` (one per neuron :math:`u` of
layer :math:`i-1`), the bias :math:`b_i` and the rows of :math:`W_{i+1}`
(one per neuron :math:`w` of layer :math:`i+1`). An *entry* is one
coordinate :math:`z_t(v)` of a token at a neuron :math:`v` of layer
:math:`i`: every edge is two entries (column entry at its target, row entry
at its source) and every non-input node one (bias entry).

The cross term is computed one of two ways, chosen when the part is built:

- **dense blocks** (:class:`DenseLayout`): every weight layer as a padded
  ``[B, m_l, m_{l-1}]`` block, the tokens of neuron layer :math:`i` as a
  ``[B, T_i, m_i]`` block (:math:`m` = the largest layer sizes of the
  batch); absent entries (padding, pruned edges) are zero and token pairs
  sharing no neuron are masked. A batch of one fully connected layout in
  :func:`~nft_pyg.from_module` order needs no gather at all.
- **message passing** (:class:`PathIndex`): one message per two-hop path
  (query entry, neuron :math:`v`, key entry), :math:`P = \sum_v c_v^2` for
  :math:`c_v` entries at :math:`v`; cost proportional to :math:`P`, so it
  pays on heavily pruned networks.

Dense blocks cost :math:`D = \sum_i B\, T_i^2 m_i` per channel; they are
used when :math:`P \ge` ``block_density`` :math:`\cdot D`. The default 0.05
is about where the two cost the same (``benchmarks/bench_nft_attention.py``,
32 SIRENs ``2-32-32-1``, 64 channels, 8 heads, forward + backward: at 75 %
of the edges pruned, :math:`P / D = 0.08`, the blocks were 2.5x faster, at
85 %, :math:`P / D \approx 0.03`, message passing 1.5x faster).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

#: default ``block_density`` of ``NFTAttention``
BLOCK_DENSITY = 0.05


@dataclass
class DenseLayout:
    """Padded dense blocks of the cross term.

    Attributes:
        sizes: ``m_0 .. m_L``, the largest size of each neuron layer.
        edge_slot: ``[E]`` row of each edge in the ``[B * S_w]`` padded weight
            rows (graph, layer ``l``, target position, source position), or
            :obj:`None` when that is the edge order itself.
        node_slot: ``[N]`` row of each node in the ``[B * S_n]`` padded node
            rows (graph, layer, position), or :obj:`None` likewise.
        scales: per neuron layer, :math:`1/\\sqrt{n_i}` (a float when every
            graph has ``m_i`` neurons there, else ``[B]`` float64).
        blocked: per neuron layer, ``[B, T_i, T_i]`` token pairs sharing no
            neuron (masked out of the softmax), or :obj:`None` if none are.
    """

    sizes: tuple[int, ...]
    edge_slot: Tensor | None
    node_slot: Tensor | None
    scales: list
    blocked: list

    @property
    def weight_counts(self) -> list[int]:
        """``m_l * m_{l-1}`` padded weights of each layer ``l = 1..L``."""
        return [a * b for a, b in zip(self.sizes[:-1], self.sizes[1:])]


@dataclass
class PathIndex:
    """Two-hop paths of the cross term, for message passing.

    Attributes:
        entry_row: ``[M]`` row of each entry in ``cat([edge_attr, x])``
            (entries ``0..E-1``: column entries of the edges, ``E..2E-1``: row
            entries, then the bias entries of the non-input nodes).
        node_entry: ``[N]`` bias entry of each node (``M``, a zero row, for
            input nodes).
        path_index: ``[2, P]`` (key entry, query entry) of every two-hop path.
        path_pair: ``[P]`` token pair of each path.
        pair_token: ``[S]`` query token of each pair (the softmax groups).
        pair_scale: ``[S]`` :math:`1/\\sqrt{n_i}` of each pair's layer (float64).
    """

    num_entries: int
    num_tokens: int
    num_pairs: int
    entry_row: Tensor
    node_entry: Tensor
    path_index: Tensor
    path_pair: Tensor
    pair_token: Tensor
    pair_scale: Tensor


@dataclass
class NFTAttentionIndex:
    """What :class:`~nft_pyg.nn.conv.nft_attention.NFTAttention` needs to know
    about a batch besides the :class:`~nft_pyg.nn.structure.WeightGraphIndex`
    fields (see the module docstring); it is that index's part
    ``"nft_attention/<block_density>"``. Exactly one of ``dense`` / ``paths``
    is set.

    Attributes:
        global_present: ``[B, 2L]`` which layer tokens of the global term exist.
        edge_token, node_token: ``[E]``, ``[N]`` global-term token of each edge
            / node, in ``[B * 2L]`` (input nodes: any, their output is zero).
    """

    global_present: Tensor
    edge_token: Tensor
    node_token: Tensor
    dense: DenseLayout | None
    paths: PathIndex | None

    @classmethod
    def build(cls, index, block_density: float = BLOCK_DENSITY) -> NFTAttentionIndex:
        """The part of a :class:`~nft_pyg.nn.structure.WeightGraphIndex`
        (eager; reads sizes off the ids). ``block_density``: see the module
        docstring (``0``: always dense blocks, ``float('inf')``: always
        message passing)."""
        src, dst = index.edge_index
        edge_layer, node_layer, node_pos = index.edge_layer, index.node_layer, index.node_pos
        batch, is_input = index.node_batch, index.is_input
        B, L = index.num_graphs, index.num_layers
        if index.num_edges == 0:
            raise ValueError("NFTAttention: the graph has no edges")
        if not torch.equal(node_layer[dst], edge_layer) or \
                not torch.equal(node_layer[src], edge_layer - 1):
            raise ValueError("NFTAttention: every edge must go from neuron layer l - 1 to "
                             "layer l (edge_layer = l)")
        sizes = torch.bincount(index.node_group, minlength=B * (L + 1)).view(B, L + 1)
        present = torch.cat([torch.bincount(index.edge_group, minlength=B * L).view(B, L) > 0,
                             sizes[:, 1:] > 0], dim=1)
        edge_token = index.edge_batch * (2 * L) + edge_layer - 1
        node_token = batch * (2 * L) + L + (node_layer - 1).clamp(min=0)

        padded = sizes.max(dim=0).values.tolist()
        tokens = [(padded[i - 1] + 1 if i > 0 else 0) + (padded[i + 1] if i < L else 0)
                  for i in range(L + 1)]
        dense_cost = sum(B * t * t * m for t, m in zip(tokens, padded))
        entries_at = index.in_degree + index.out_degree + (~is_input).long()
        num_paths = int(entries_at.pow(2).sum())
        dense = paths = None
        if num_paths >= block_density * dense_cost:
            dense = _dense_layout(src, dst, edge_layer, node_layer, node_pos, batch, sizes,
                                  padded, complete=num_paths == dense_cost)
        else:
            paths = _path_index(src, dst, node_layer, node_pos, index.node_group, sizes,
                                is_input, entries_at)
        return cls(present, edge_token, node_token, dense, paths)


def _dense_layout(src, dst, edge_layer, node_layer, node_pos, batch, sizes, padded,
                  complete: bool) -> DenseLayout:
    device = src.device
    B, L = sizes.shape[0], sizes.shape[1] - 1
    m = torch.tensor(padded, device=device)
    weight_counts = m[1:] * m[:-1]
    weight_offset = weight_counts.cumsum(0) - weight_counts
    weight_rows = int(weight_counts.sum())
    edge_slot = (batch[src] * weight_rows + weight_offset[edge_layer - 1] +
                 node_pos[dst] * m[edge_layer - 1] + node_pos[src])
    node_offset = m.cumsum(0) - m
    node_slot = batch * int(m.sum()) + node_offset[node_layer] + node_pos

    def unless_identity(slot, rows):
        same = slot.numel() == rows and torch.equal(slot, torch.arange(rows, device=device))
        return None if same else slot

    if complete:
        return DenseLayout(tuple(padded), unless_identity(edge_slot, B * weight_rows),
                           unless_identity(node_slot, B * int(m.sum())),
                           [float(n) ** -0.5 for n in padded], [None] * (L + 1))
    # which entries exist: [B, T_i, m_i] per neuron layer (token, position)
    scales, blocked = [], []
    for i in range(L + 1):
        before = padded[i - 1] + 1 if i > 0 else 0
        mask = torch.zeros(B, before + (padded[i + 1] if i < L else 0), padded[i],
                           dtype=torch.bool, device=device)
        if i > 0:
            columns = edge_layer == i
            mask[batch[src[columns]], node_pos[src[columns]], node_pos[dst[columns]]] = True
            nodes = node_layer == i
            mask[batch[nodes], before - 1, node_pos[nodes]] = True
        if i < L:
            rows = edge_layer == i + 1
            mask[batch[src[rows]], before + node_pos[dst[rows]], node_pos[src[rows]]] = True
        as_float = mask.double()
        shared = torch.bmm(as_float, as_float.transpose(1, 2)) > 0
        # a token without entries shares no neuron with any token: its own row stays
        # unmasked (finite weights, outputs only at absent entries, which are dropped)
        block = ~shared & shared.any(dim=2, keepdim=True)
        blocked.append(block if bool(block.any()) else None)
        scales.append(sizes[:, i].clamp(min=1).double().rsqrt())
    return DenseLayout(tuple(padded), edge_slot, node_slot, scales, blocked)


def _path_index(src, dst, node_layer, node_pos, node_group, sizes, is_input,
                entries_at) -> PathIndex:
    device = src.device
    num_nodes, num_edges = node_layer.numel(), src.numel()
    L = sizes.shape[1] - 1
    flat = sizes.view(-1)                                     # n_i(b) per group
    layer = torch.arange(flat.numel(), device=device) % (L + 1)
    before = torch.where(layer > 0, flat.roll(1), 0)          # n_{i-1}(b)
    after = torch.where(layer < L, flat.roll(-1), 0)          # n_{i+1}(b)
    has_bias = (layer > 0).long()
    count = torch.where(flat > 0, before + has_bias + after, 0)  # T of each group
    token_offset = count.cumsum(0) - count
    bias_nodes = (~is_input).nonzero().view(-1)
    # entries: (group of the token, local token id, neuron v, feature row)
    group = torch.cat([node_group[dst], node_group[src], node_group[bias_nodes]])
    local = torch.cat([node_pos[src],
                       before[node_group[src]] + has_bias[node_group[src]] + node_pos[dst],
                       before[node_group[bias_nodes]]])
    position = torch.cat([dst, src, bias_nodes])
    entry_row = torch.cat([torch.arange(num_edges, device=device).repeat(2),
                           num_edges + bias_nodes])
    token = token_offset[group] + local
    num_entries, num_tokens = position.numel(), int(count.sum())
    node_entry = torch.full((num_nodes,), num_entries, dtype=torch.long, device=device)
    node_entry[bias_nodes] = 2 * num_edges + torch.arange(bias_nodes.numel(), device=device)

    # every (query entry, key entry) at the same neuron v
    order = torch.sort(position, stable=True).indices
    repeats = entries_at[position[order]]                     # c_v of each sorted entry
    query_sorted = torch.repeat_interleave(torch.arange(num_entries, device=device), repeats)
    first_of_node = entries_at.cumsum(0) - entries_at         # sorted position of v's first
    within = torch.arange(query_sorted.numel(), device=device) - \
        torch.repeat_interleave(repeats.cumsum(0) - repeats, repeats)
    query = order[query_sorted]
    key = order[first_of_node[position[query]] + within]
    pairs, path_pair = torch.unique(token[query] * num_tokens + token[key], return_inverse=True)
    pair_scale = torch.zeros(pairs.numel(), dtype=torch.float64, device=device).scatter_(
        0, path_pair, flat[group[query]].double().rsqrt())
    return PathIndex(num_entries, num_tokens, pairs.numel(), entry_row, node_entry,
                     torch.stack([key, query]), path_pair, pairs // num_tokens, pair_scale)


__all__ = ["BLOCK_DENSITY", "DenseLayout", "NFTAttentionIndex", "PathIndex"]
