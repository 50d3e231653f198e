r"""Weight-space self-attention of the Neural Functional Transformer, on neuron graphs."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import MessagePassing

from ...tensor.nft_dense import nft_attention_dense
from ...tensor.weight_space import WeightSpace
from ..structure import LayerStructure
from ._nft_blocks import UniformLayout, fused_qkv, uniform_forward
from ._nft_paths import (
    NeuronBuckets,
    SegmentSoftmax,
    bucket_logits,
    bucket_messages,
    neuron_buckets,
)

_WHERE = "NFTAttention"


class NFTAttention(MessagePassing):
    r"""The weight-space self-attention layer of the Neural Functional
    Transformer from the `"Neural Functional Transformers"
    <https://arxiv.org/abs/2305.13546>`_ paper (Zhou et al., NeurIPS 2023),
    written as message passing on neuron graphs.

    **Cross term.** For every neuron layer :math:`i` (nodes :math:`V_i`) the
    tokens are the columns of :math:`W_i` (one per :math:`u \in V_{i-1}`:
    its out-edges into :math:`V_i`), the bias token (the node features of
    :math:`V_i`) and the rows of :math:`W_{i+1}` (one per
    :math:`w \in V_{i+1}`: its in-edges from :math:`V_i`); each token
    :math:`t` is a vector :math:`z_t(v)` indexed by :math:`v \in V_i`.
    Per head, with :math:`d = C / H`,

    .. math::
        \alpha_{t t'} = \operatorname{softmax}_{t'} \left(
            \frac{1}{\sqrt{d\,|V_i|}} \sum_{v \in V_i}
            \langle q(z_t(v)), k(z_{t'}(v)) \rangle \right), \qquad
        o_t(v) = \sum_{t'} \alpha_{t t'}\, \mathrm{val}(z_{t'}(v)).

    The sum over :math:`v` runs over the two-hop paths
    :math:`t - v - t'` of the graph. The input layer has no column or bias
    tokens, the output layer no row tokens.

    **Global term.** Per graph, one token per weight layer (mean of its edge
    features) and one per bias layer (mean of its node features, layers
    :math:`1..L`) attend to each other (scale :math:`1/\sqrt{d}`); each
    token's output :math:`g_l` is added to every edge / node of its layer.

    **Output.** An edge :math:`e = (u \to v)` of weight layer :math:`l`
    takes part in two cross terms, as column :math:`u` of layer :math:`l`
    and as row :math:`v` of layer :math:`l - 1`:

    .. math::
        h'_e = O\big(o^{(l)}_u(v) + o^{(l-1)}_v(u) + g_{W_l}\big), \qquad
        x'_v = O\big(o^{(i)}_{\mathrm{bias}}(v) + g_{b_i}\big),

    and input neurons get zero. :math:`q, k, \mathrm{val}, O` are linear
    maps of the channels shared by all layers and both terms, as in the
    paper (so the layer is equivariant to permuting *every* neuron layer,
    inputs and outputs included: position encodings must tell those apart).

    **Pruned networks.** A missing edge is an *absent* entry, not a zero
    vector: the sum over :math:`v` covers only the :math:`v` where both
    tokens have an entry, a token pair sharing no :math:`v` is left out of
    the softmax, and :math:`o_t(v)` sums over the tokens that have an entry
    at :math:`v`. On a fully connected network this is the definition above.
    :math:`|V_i|` is always the number of neurons of layer :math:`i`.

    Args:
        channels (int): feature channels :math:`C` of nodes and edges (a
            CNN's kernel positions folded in).
        heads (int, optional): attention heads :math:`H`; must divide
            ``channels``. (default: :obj:`1`)
        dropout (float, optional): dropout on the attention weights, in
            training mode only. (default: :obj:`0.`)
        num_layers (int, optional): if set, graphs with more weight layers
            are rejected. (default: :obj:`None`)
        global_term (bool, optional): use the global term.
            (default: :obj:`True`)
        cross_term (bool, optional): use the cross term.
            (default: :obj:`True`)
        bias (bool, optional): the projections have biases.
            (default: :obj:`True`)
        dense_blocks (bool, optional): compute each (graph, neuron layer)
            that is not too sparse for it (:func:`sparse_path_limit`) as a
            dense ``[T, T]`` block (same result; :obj:`False` computes every
            layer neuron by neuron, as pruned layers are: slow on dense
            networks, for tests). (default: :obj:`True`)

    Shapes:
        - **input:** node features :math:`(|\mathcal{V}|, C)`, edge features
          :math:`(|\mathcal{E}|, C)`, a :class:`~nft_pyg.NeuronGraph` or a
          batch of them (mixed architectures allowed).
        - **output:** node features :math:`(|\mathcal{V}|, C)` (zero on
          input neurons), edge features :math:`(|\mathcal{E}|, C)`; with
          ``return_attention_weights=True`` also ``(token_index, alpha)``:
          ``token_index`` :math:`(2, P)` (query token, key token), ``alpha``
          :math:`(P, H)`, summing to one over each query token (the softmax
          group id is ``token_index[0]``; :obj:`None` without the cross
          term). Tokens are numbered block by block per (graph, neuron
          layer) in the order of
          ``LayerStructure.node_group``; inside a block the column tokens
          by position of :math:`u`, then the bias token, then the row
          tokens by position of :math:`w`. On a fully connected network
          the pairs of a block are listed row-major.

    Cost per graph, with :math:`T_i = n_{i-1} + 1 + n_{i+1}`: a layer
    computed as a dense block (every fully connected one) takes time
    :math:`O(C\, n_i T_i^2)` and memory :math:`O(C\, n_i T_i + H\, T_i^2)`,
    like the dense twin (:meth:`forward_dense`); a sparse layer takes time
    and memory :math:`O(H\, P_i + C\, N_i)` for its :math:`P_i = \sum_{v
    \in V_i} c_v^2` two-hop paths and :math:`N_i = \sum_v c_v` entries
    (:math:`c_v = \deg v + 1`; :math:`P_i \approx \rho^2 n_i T_i^2` at edge
    density :math:`\rho`), computed neuron by neuron. The global term is
    :math:`O(C (E + N) + H L^2)`. A batch of fully connected networks of
    one layout (nodes and edges in the canonical order of
    :func:`~nft_pyg.from_module`) takes a faster path with the same result:
    its tokens are views of the projected edge features, no index gathers
    (:mod:`._nft_blocks`).
    """

    def __init__(self, channels: int, heads: int = 1, dropout: float = 0.0,
                 num_layers: int | None = None, global_term: bool = True,
                 cross_term: bool = True, bias: bool = True, dense_blocks: bool = True):
        super().__init__(aggr="add", node_dim=0)
        if channels <= 0 or heads <= 0 or channels % heads:
            raise ValueError(f"{_WHERE}: channels ({channels}) must be a positive multiple of "
                             f"heads ({heads})")
        if not (global_term or cross_term):
            raise ValueError(f"{_WHERE}: needs the global term, the cross term or both")
        if num_layers is not None and num_layers < 1:
            raise ValueError(f"{_WHERE}: num_layers must be positive, got {num_layers}")
        self.channels = channels
        self.heads = heads
        self.head_channels = channels // heads
        self.dropout = dropout
        self.num_layers = num_layers
        self.global_term = global_term
        self.cross_term = cross_term
        self.dense_blocks = dense_blocks
        self.query = nn.Linear(channels, channels, bias=bias)
        self.key = nn.Linear(channels, channels, bias=bias)
        self.value = nn.Linear(channels, channels, bias=bias)
        self.out = nn.Linear(channels, channels, bias=bias)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        for linear in (self.query, self.key, self.value, self.out):
            linear.reset_parameters()

    def __repr__(self) -> str:
        terms = "+".join(name for name, on in (("global", self.global_term),
                                               ("cross", self.cross_term)) if on)
        return (f"{self.__class__.__name__}({self.channels}, heads={self.heads}, "
                f"terms={terms}, num_layers={self.num_layers})")

    #: use the view-based path on batches of one fully connected layout (tests
    #: switch it off on an instance to compare with the general path)
    _uniform_path = True

    # --- graph path --------------------------------------------------------
    def forward(self, x: Tensor, edge_attr: Tensor, graph,
                return_attention_weights: bool = False):
        structure = LayerStructure.of(graph, _WHERE)
        self._check(x, edge_attr, structure)
        layout = UniformLayout.of(structure) if self.dense_blocks and self._uniform_path \
            else None
        if layout is not None:
            x_out, edge_out, alphas = uniform_forward(self, x, edge_attr, layout,
                                                      return_attention_weights)
            if not return_attention_weights:
                return x_out, edge_out
            return x_out, edge_out, None if alphas is None else _flat_weights(alphas)
        edge_sum = node_sum = weights = None
        if self.cross_term:
            paths = CrossPaths.of(graph, structure, self.dense_blocks, self.head_channels)
            edge_sum, node_sum, weights = self._cross(x, edge_attr, paths,
                                                      return_attention_weights)
        if self.global_term:
            global_edge, global_node = self._global(x, edge_attr, structure)
            edge_sum = global_edge if edge_sum is None else edge_sum + global_edge
            node_sum = global_node if node_sum is None else node_sum + global_node
        edge_out = self.out(edge_sum)
        x_out = self.out(node_sum).masked_fill((structure.node_layer == 0).unsqueeze(-1), 0.0)
        if return_attention_weights:
            return x_out, edge_out, weights
        return x_out, edge_out

    def _cross(self, x: Tensor, edge_attr: Tensor, paths: CrossPaths, keep_weights: bool):
        heads, dim, channels = self.heads, self.head_channels, self.channels
        # [E + N + 1, 3C]: q, k, v of feature rows 0..E-1 (edges), E..E+N-1 (nodes)
        # and a zero row, where absent entries and padding point
        qkv = F.pad(fused_qkv(self, torch.cat([edge_attr, x])), (0, 0, 0, 1))
        # rows 0..num_entries-1: entries; then one collecting the outputs at absent
        # entries (dropped) and one that stays zero (input nodes read it)
        entry_out = qkv.new_zeros(paths.num_entries + 2, channels)
        sparse_alpha = None
        if paths.num_paths:  # sparse groups: neuron by neuron, head-major (see _nft_paths)
            buckets = paths.buckets
            logits, values = bucket_logits(qkv, buckets, heads, paths.sparse_pair.numel())
            sparse_alpha = SegmentSoftmax.apply(logits, paths.sparse_lengths)  # [H, S]
            dropped = F.dropout(sparse_alpha, p=self.dropout, training=self.training)
            # padded slots read pair 0: their weight multiplies the zero value of a
            # padded key or goes to a padded query's output, which is dropped
            slot_weights = dropped.index_select(1, buckets.gather_pairs)
            entry_out = bucket_messages(slot_weights, values, buckets, entry_out)
        block_alphas = []
        for block in paths.blocks:
            count, width = block.tokens, block.width
            tokens = qkv.index_select(0, block.rows.view(-1)).view(
                -1, count, width, 3, heads, dim).permute(3, 0, 4, 1, 2, 5).reshape(
                3, -1, count, width * dim)  # [3, G * H, T, n * d]
            query, key, value = tokens.unbind(0)
            logits = torch.bmm(query, key.transpose(1, 2)).mul_(1.0 / math.sqrt(dim * width))
            if block.blocked is not None:  # pairs sharing no v are left out
                logits = logits.view(-1, heads, count, count).masked_fill(
                    block.blocked.unsqueeze(1), float("-inf")).view(-1, count, count)
            alpha = logits.softmax(dim=-1)
            if keep_weights:
                block_alphas.append(alpha)
            alpha = F.dropout(alpha, p=self.dropout, training=self.training)
            out = torch.bmm(alpha, value).view(-1, heads, count, width, dim)
            entry_out = entry_out.index_add_(0, block.entries.view(-1),
                                             out.permute(0, 2, 3, 1, 4).reshape(-1, channels))
        num_edges = edge_attr.size(0)
        edge_out = entry_out[:num_edges] + entry_out[num_edges:2 * num_edges]
        node_out = entry_out.index_select(0, paths.node_entry)
        if keep_weights:
            sparse_alpha = None if sparse_alpha is None else sparse_alpha.t()
            weights = paths.weights(sparse_alpha, block_alphas, heads)
        else:
            weights = None
        return edge_out, node_out, weights

    def _global(self, x: Tensor, edge_attr: Tensor, structure: LayerStructure):
        num_graphs = structure.num_graphs
        heads, dim = self.heads, self.head_channels
        tokens = torch.cat([structure.edge_layer_mean(edge_attr),
                            structure.node_layer_mean(x)[:, 1:]], dim=1)  # [B, 2L, C]
        present, edge_slot, node_slot = structure._cached(
            "nft_global_slots", lambda: _global_slots(structure))
        query, key, value = fused_qkv(self, tokens).view(num_graphs, -1, 3, heads,
                                                         dim).unbind(2)
        logits = torch.einsum("bthd,bshd->bhts", query, key) / math.sqrt(dim)
        logits = logits.masked_fill(~present[:, None, None, :], float("-inf"))
        alpha = F.dropout(logits.softmax(dim=-1), p=self.dropout, training=self.training)
        out = torch.einsum("bhts,bshd->bthd", alpha, value).reshape(-1, self.channels)
        return out.index_select(0, edge_slot), out.index_select(0, node_slot)

    def _check(self, x: Tensor, edge_attr: Tensor, structure: LayerStructure) -> None:
        for name, tensor, rows, what in (("x", x, structure.num_nodes, "nodes"),
                                         ("edge_attr", edge_attr, structure.src.numel(),
                                          "edges")):
            if not isinstance(tensor, Tensor) or tensor.dim() != 2:
                raise ValueError(f"{_WHERE}: {name} must be a 2-D tensor")
            if tensor.size(1) != self.channels:
                raise ValueError(f"{_WHERE}: built for {self.channels} channels, {name} has "
                                 f"{tensor.size(1)}")
            if tensor.size(0) != rows:
                raise ValueError(f"{_WHERE}: {name} has {tensor.size(0)} rows but the graph "
                                 f"has {rows} {what}")
        self.check_num_layers(structure.num_layers)

    def check_num_layers(self, num_layers: int) -> None:
        if self.num_layers is not None and num_layers > self.num_layers:
            raise ValueError(f"{_WHERE}: built for at most {self.num_layers} weight layers, "
                             f"got a network with {num_layers}")

    # --- dense twin --------------------------------------------------------
    def forward_dense(self, ws: WeightSpace) -> WeightSpace:
        """The same map on a folded :class:`~nft_pyg.WeightSpace` (see
        :func:`~nft_pyg.tensor.nft_dense.nft_attention_dense`)."""
        return nft_attention_dense(self, ws)


def _flat_weights(alphas: list[Tensor]) -> tuple[Tensor, Tensor]:
    """``(token_index, alpha)`` in the documented order from the ``[B, H, T_i, T_i]``
    weights of the neuron layers of a uniform batch."""
    num_graphs, heads = alphas[0].shape[:2]
    counts = [a.size(-1) for a in alphas]
    alpha = torch.cat([a.permute(0, 2, 3, 1).reshape(num_graphs, -1, heads) for a in alphas],
                      dim=1).reshape(-1, heads)
    device = alpha.device
    within = []  # (query, key) token of every pair of one graph, tokens numbered from 0
    start = 0
    for count in counts:
        local = torch.arange(count, device=device)
        within.append(torch.stack([start + local.repeat_interleave(count),
                                   start + local.repeat(count)]))
        start += count
    within = torch.cat(within, dim=1)
    shift = torch.arange(num_graphs, device=device).repeat_interleave(within.size(1)) * start
    return within.repeat(1, num_graphs) + shift, alpha


def _global_slots(structure: LayerStructure):
    """Which layer tokens of each graph exist, and the token row (in ``[B * 2L]``)
    of every edge and node."""
    num_graphs, num_layers = structure.num_graphs, structure.num_layers
    edge_count = torch.bincount(structure.edge_group, minlength=num_graphs * num_layers)
    node_count = torch.bincount(structure.node_group, minlength=num_graphs * (num_layers + 1))
    present = torch.cat([edge_count.view(num_graphs, num_layers) > 0,
                         node_count.view(num_graphs, num_layers + 1)[:, 1:] > 0], dim=1)
    edge_slot = structure.edge_batch * (2 * num_layers) + structure.edge_layer - 1
    node_slot = (structure.node_batch * (2 * num_layers) + num_layers +
                 (structure.node_layer - 1).clamp(min=0))
    return present, edge_slot, node_slot


#: see :func:`sparse_path_limit`
PATH_DENSITY_SCALE = 0.02


def sparse_path_limit(head_channels: int) -> float:
    r"""A (graph, neuron layer) group with ``P`` two-hop paths (:math:`\sum_v
    c_v^2` for :math:`c_v` entries at :math:`v`) is computed neuron by neuron
    if :math:`P` is below this fraction of the :math:`T^2 n` of its dense
    block, otherwise as a (masked) dense block: ``0.02 * d ** 1.5`` for head
    dimension ``d`` (0.057 at ``d = 2``, 0.45 at ``d = 8``). Measured
    (forward + backward, one thread): the two cost the same at a fraction of
    about 0.04-0.1 with ``d = 2`` (MLP ``2-128-128-1``, 16 channels, 8 heads;
    90 % pruned is 0.012), and are within noise of each other from 0.1 to 0.5
    with ``d = 8, 9`` (SIRENs, Digits CNNs): the per-neuron products are
    batches of tiny ``c x d`` matrices, less efficient the smaller ``d``."""
    return PATH_DENSITY_SCALE * head_channels ** 1.5


@dataclass
class DenseBlocks:
    """The (graph, neuron layer) groups of one shape ``(T, n)`` computed densely."""

    tokens: int              # T
    width: int               # n = |V_i|
    rows: Tensor             # [G, T, n] feature row of each entry z_t(v) (E + N if absent)
    entries: Tensor          # [G, T, n] entry id of each z_t(v) (num_entries if absent)
    pairs: Tensor            # [G, T * T] pair id of (t, t'), row-major (num_pairs if dropped)
    blocked: Tensor | None   # [G, T, T] pairs sharing no v (None if there are none)
    masked: bool             # some entries are absent


@dataclass
class CrossPaths:
    r"""Index bookkeeping of the cross term (cached on the graph).

    An *entry* is one coordinate :math:`z_t(v)` of a token: entries
    ``0..E-1`` are the edges as column entries (token ``u = src``, at
    ``v = dst``), ``E..2E-1`` the edges as row entries (token ``w = dst``,
    at ``v = src``), then one bias entry per non-input node. A *pair* is a
    (query token, key token) pair of one (graph, neuron layer) group that
    share at least one ``v``.

    A group with enough two-hop paths (:func:`sparse_path_limit`; every
    fully connected layer pair) is computed as a dense block
    (:class:`DenseBlocks`, one per distinct shape, absent entries zero and
    pairs sharing no ``v`` masked); sparser groups (heavily pruned networks)
    neuron by neuron (the entries at each ``v`` gathered into a small dense
    block, :mod:`._nft_paths`), with a softmax over the pairs of the sparse
    groups only.
    """

    num_entries: int
    num_tokens: int
    num_pairs: int
    node_entry: Tensor       # [N] bias entry of each node (num_entries + 1: zero, inputs)
    num_paths: int           # P, two-hop paths of the sparse groups
    buckets: NeuronBuckets   # their entries, neuron by neuron
    sparse_lengths: Tensor   # [num_tokens] sparse pairs of each query token (they are in
                             # token order)
    sparse_pair: Tensor      # [S] pair id of each sparse pair
    token_index: Tensor      # [2, num_pairs] (query token, key token)
    blocks: list[DenseBlocks]

    @classmethod
    def of(cls, graph, structure: LayerStructure, dense_blocks: bool = True,
           head_channels: int = 1) -> CrossPaths:
        cache = graph.__dict__.get("_nft_cross_paths")
        if cache is None or cache[0] is not structure:
            cache = (structure, {})
            graph.__dict__["_nft_cross_paths"] = cache
        key = (dense_blocks, sparse_path_limit(head_channels))
        if key not in cache[1]:
            cache[1][key] = cls.build(structure, dense_blocks, key[1])
        return cache[1][key]

    def weights(self, sparse_alpha: Tensor | None, block_alphas: list[Tensor],
                heads: int) -> tuple[Tensor, Tensor]:
        """``(token_index, alpha [num_pairs, H])`` from the sparse pairs' weights and
        the ``[G * H, T, T]`` weights of each block."""
        dtype_of = sparse_alpha if sparse_alpha is not None else block_alphas[0]
        alpha = dtype_of.new_zeros(self.num_pairs, heads)
        if sparse_alpha is not None:
            alpha = alpha.index_copy(0, self.sparse_pair, sparse_alpha)
        for block, block_alpha in zip(self.blocks, block_alphas):
            flat = block_alpha.view(-1, heads, block.tokens * block.tokens).transpose(1, 2)
            flat = flat.reshape(-1, heads)
            pairs = block.pairs.view(-1)
            kept = pairs < self.num_pairs
            alpha = alpha.index_copy(0, pairs[kept], flat[kept])
        return self.token_index, alpha

    @classmethod
    def build(cls, s: LayerStructure, dense_blocks: bool = True,
              path_limit: float = PATH_DENSITY_SCALE) -> CrossPaths:
        device = s.src.device
        num_nodes, num_edges = s.num_nodes, s.src.numel()
        num_groups = s.num_graphs * (s.num_layers + 1)

        def arange(n):
            return torch.arange(n, device=device)

        # tokens of neuron layer i of graph b (group g): n_{i-1} columns, bias, n_{i+1} rows
        size = torch.bincount(s.node_group, minlength=num_groups)
        layer = arange(num_groups) % (s.num_layers + 1)
        before = torch.zeros_like(size)
        before[1:] = size[:-1]
        before[layer == 0] = 0
        after = torch.zeros_like(size)
        after[:-1] = size[1:]
        after[layer == s.num_layers] = 0
        has_bias = ((layer > 0) & (size > 0)).long()
        tokens = torch.where(size > 0, before + has_bias + after, torch.zeros_like(size))
        token_offset = tokens.cumsum(0) - tokens
        pair_offset = (tokens * tokens).cumsum(0) - tokens * tokens
        num_pairs = int(tokens.pow(2).sum())

        bias_nodes = (s.node_layer > 0).nonzero().view(-1)
        src_group, dst_group = s.node_group[s.src], s.node_group[s.dst]
        group = torch.cat([dst_group, src_group, s.node_group[bias_nodes]])
        local = torch.cat([s.node_pos[s.src],
                           before[src_group] + has_bias[src_group] + s.node_pos[s.dst],
                           before[s.node_group[bias_nodes]]])
        position = torch.cat([s.dst, s.src, bias_nodes])  # the v of each entry
        feature_row = torch.cat([arange(num_edges), arange(num_edges), num_edges + bias_nodes])
        num_entries = position.numel()
        node_entry = torch.full((num_nodes,), num_entries + 1, dtype=torch.long, device=device)
        node_entry[bias_nodes] = 2 * num_edges + arange(bias_nodes.numel())

        entries_at = torch.bincount(position, minlength=num_nodes)
        group_paths = torch.zeros(num_groups, dtype=torch.long, device=device).index_add_(
            0, s.node_group, entries_at * entries_at)
        dense = ((group_paths >= path_limit * (tokens * tokens * size).double()) &
                 (tokens > 0) & dense_blocks)
        used = torch.zeros(num_pairs, dtype=torch.bool, device=device)

        # sparse groups: the entries at each neuron v, every (query, key) slot pair
        sparse_entries = (~dense[group]).nonzero().view(-1)
        raw, counts = neuron_buckets(sparse_entries, position[sparse_entries], num_nodes)
        bucket_rows, bucket_entries, bucket_pairs, bucket_scales = [], [], [], []
        for slot_entry, valid in raw:
            safe = slot_entry.clamp(min=0)
            # 1 / sqrt(|V_i|) of each neuron's layer i (slot 0 is never padding)
            bucket_scales.append(size[s.node_group[position[safe[:, 0]]]].double().rsqrt())
            bucket_rows.append(torch.where(valid, feature_row[safe], num_edges + num_nodes))
            bucket_entries.append(torch.where(valid, slot_entry, num_entries))
            query, key = safe.unsqueeze(2), safe.unsqueeze(1)  # all entries at v: one group
            query_group = group[query]
            pair = pair_offset[query_group] + local[query] * tokens[query_group] + local[key]
            both = valid.unsqueeze(2) & valid.unsqueeze(1)
            bucket_pairs.append(torch.where(both, pair, -1).view(-1))
        path_pair = torch.cat(bucket_pairs) if raw else s.src.new_zeros(0)
        real_path = path_pair >= 0
        used[path_pair[real_path]] = True

        # dense groups: [G, T, n] index blocks, one per distinct shape (T, n)
        blocks = []
        dense_groups = dense.nonzero().view(-1)
        shapes = torch.stack([tokens[dense_groups], size[dense_groups]], dim=1)
        for shape in shapes.unique(dim=0).tolist():
            members = dense_groups[(shapes == torch.tensor(shape, device=device)).all(1)]
            slot = torch.full((num_groups,), -1, dtype=torch.long, device=device)
            slot[members] = arange(members.numel())
            chosen = (slot[group] >= 0).nonzero().view(-1)
            where = (slot[group[chosen]], local[chosen], s.node_pos[position[chosen]])
            rows = torch.full((members.numel(), *shape), num_edges + num_nodes,
                              dtype=torch.long, device=device)
            entries = torch.full_like(rows, num_entries)
            mask = torch.zeros_like(rows, dtype=torch.bool)
            rows[where] = feature_row[chosen]
            entries[where] = chosen
            mask[where] = True
            shared = torch.einsum("gtv,gsv->gts", mask.double(), mask.double()) > 0
            pairs = pair_offset[members].unsqueeze(1) + arange(shape[0] ** 2)
            used[pairs[shared.view(members.numel(), -1)]] = True
            # a token without entries shares no v with any token: its row stays
            # unmasked (finite weights, outputs only at absent entries, dropped)
            blocked = ~shared & shared.any(dim=2, keepdim=True)
            blocks.append(DenseBlocks(shape[0], shape[1], rows, entries, pairs,
                                      blocked if bool(blocked.any()) else None,
                                      not bool(mask.all())))

        pair_group = torch.repeat_interleave(arange(num_groups), tokens * tokens)
        within = arange(num_pairs) - pair_offset[pair_group]
        token_index = torch.stack([token_offset[pair_group] + within // tokens[pair_group],
                                   token_offset[pair_group] + within % tokens[pair_group]])
        token_index = token_index[:, used]
        # compact pair ids; pairs sharing no v go to the extra slot num_pairs
        compact = torch.where(used, used.cumsum(0) - 1, int(used.sum()))
        for block in blocks:
            block.pairs = compact[block.pairs]
        sparse_pair = torch.unique(compact[path_pair[real_path]])
        local_pair = torch.full_like(path_pair, sparse_pair.numel())
        local_pair[real_path] = torch.searchsorted(sparse_pair, compact[path_pair[real_path]])
        buckets = NeuronBuckets(
            counts=counts, sizes=[slot.size(0) for slot, _ in raw], scales=bucket_scales,
            rows=torch.cat([r.view(-1) for r in bucket_rows]) if raw else path_pair,
            entries=torch.cat([e.view(-1) for e in bucket_entries]) if raw else path_pair,
            pairs=local_pair, gather_pairs=torch.where(real_path, local_pair, 0),
            num_paths=int(real_path.sum()))

        return cls(num_entries=num_entries, num_tokens=int(tokens.sum()),
                   num_pairs=int(used.sum()), node_entry=node_entry,
                   num_paths=buckets.num_paths, buckets=buckets,
                   sparse_lengths=torch.bincount(token_index[0, sparse_pair],
                                                 minlength=int(tokens.sum())),
                   sparse_pair=sparse_pair, token_index=token_index, blocks=blocks)
