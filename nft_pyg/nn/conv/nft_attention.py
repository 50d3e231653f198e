r"""Weight-space self-attention of the Neural Functional Transformer, on neuron graphs."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import MessagePassing
from torch_geometric.utils import scatter, softmax

from ...tensor.nft_dense import nft_attention_dense
from ...tensor.weight_space import WeightSpace
from ..structure import LayerStructure

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
            whose entries are at least :data:`BLOCK_DENSITY` present as a
            dense ``[T, T]`` block (same result; :obj:`False` sends every
            layer through explicit two-hop paths, slow: for tests).
            (default: :obj:`True`)

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
    and memory :math:`O(C\, P_i)` for its :math:`P_i = \sum_{v \in V_i}
    (\deg v + 1)^2` two-hop paths (about :math:`\rho^2 n_i T_i^2` at edge
    density :math:`\rho`). The global term is :math:`O(C (E + N) + H L^2)`.
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

    # --- graph path --------------------------------------------------------
    def forward(self, x: Tensor, edge_attr: Tensor, graph,
                return_attention_weights: bool = False):
        structure = LayerStructure.of(graph, _WHERE)
        self._check(x, edge_attr, structure)
        num_edges = edge_attr.size(0)
        edge_sum = edge_attr.new_zeros(num_edges, self.channels)
        node_sum = x.new_zeros(x.size(0), self.channels)
        weights = None
        if self.cross_term:
            paths = CrossPaths.of(graph, structure, self.dense_blocks)
            cross_edge, cross_node, weights = self._cross(x, edge_attr, paths)
            edge_sum = edge_sum + cross_edge
            node_sum = node_sum + cross_node
        if self.global_term:
            global_edge, global_node = self._global(x, edge_attr, structure)
            edge_sum = edge_sum + global_edge
            node_sum = node_sum + global_node
        edge_out = self.out(edge_sum)
        x_out = self.out(node_sum).masked_fill((structure.node_layer == 0).unsqueeze(-1), 0.0)
        if return_attention_weights:
            return x_out, edge_out, weights
        return x_out, edge_out

    def _cross(self, x: Tensor, edge_attr: Tensor, paths: "CrossPaths"):
        heads, dim = self.heads, self.head_channels
        # rows 0..E-1 are edges, E..E+N-1 nodes: what an entry's feature row points at
        features = torch.cat([edge_attr, x], dim=0)
        query = self.query(features).view(-1, heads, dim)
        key = self.key(features).view(-1, heads, dim)
        value = self.value(features).view(-1, heads, dim)

        # logits: sparse groups sum over their paths, dense groups are [T, T] blocks;
        # row num_pairs collects the block pairs that share no v (dropped)
        path_logits = (query[paths.path_query_row] * key[paths.path_key_row]).sum(-1)
        scale = paths.path_layer_size.to(path_logits.dtype).mul(dim).rsqrt()
        logits = scatter(path_logits * scale.unsqueeze(-1), paths.path_pair, 0,
                         dim_size=paths.num_pairs + 1, reduce="sum")
        for block in paths.blocks:
            block_logits = torch.einsum("gtvhd,gsvhd->gtsh", block.gather(query),
                                        block.gather(key)) / math.sqrt(dim * block.width)
            logits = logits.index_copy(0, block.pairs.view(-1),
                                       block_logits.reshape(-1, heads))
        alpha = softmax(logits[:-1], paths.token_index[0], num_nodes=paths.num_tokens)
        dropped = F.dropout(alpha, p=self.dropout, training=self.training)
        dropped = torch.cat([dropped, dropped.new_zeros(1, heads)])

        # messages flow along the paths: key entry's feature row -> query entry;
        # row num_entries collects the block outputs at absent entries (dropped)
        entry_out = self.propagate(paths.message_index, x=(value, None),
                                   alpha=dropped[paths.path_pair],
                                   size=(features.size(0), paths.num_entries + 1))
        for block in paths.blocks:
            block_alpha = dropped[block.pairs].view(-1, block.tokens, block.tokens, heads)
            block_out = torch.einsum("gtsh,gsvhd->gtvhd", block_alpha, block.gather(value))
            entry_out = entry_out.index_add(0, block.entries.view(-1),
                                            block_out.reshape(-1, heads, dim))
        entry_out = entry_out[:-1].reshape(-1, self.channels)
        num_edges = edge_attr.size(0)
        edge_out = entry_out[:num_edges] + entry_out[num_edges:2 * num_edges]
        node_out = x.new_zeros(x.size(0), self.channels)
        node_out[paths.bias_nodes] = entry_out[2 * num_edges:]
        return edge_out, node_out, (paths.token_index, alpha)

    def message(self, x_j: Tensor, alpha: Tensor) -> Tensor:
        return alpha.unsqueeze(-1) * x_j

    def _global(self, x: Tensor, edge_attr: Tensor, structure: LayerStructure):
        num_graphs, num_layers = structure.num_graphs, structure.num_layers
        heads, dim = self.heads, self.head_channels
        tokens = torch.cat([structure.edge_layer_mean(edge_attr),
                            structure.node_layer_mean(x)[:, 1:]], dim=1)  # [B, 2L, C]
        edge_count = torch.bincount(structure.edge_group, minlength=num_graphs * num_layers)
        node_count = torch.bincount(structure.node_group,
                                    minlength=num_graphs * (num_layers + 1))
        present = torch.cat([edge_count.view(num_graphs, num_layers) > 0,
                             node_count.view(num_graphs, num_layers + 1)[:, 1:] > 0], dim=1)
        query = self.query(tokens).view(num_graphs, -1, heads, dim)
        key = self.key(tokens).view(num_graphs, -1, heads, dim)
        value = self.value(tokens).view(num_graphs, -1, heads, dim)
        logits = torch.einsum("bthd,bshd->bhts", query, key) / math.sqrt(dim)
        logits = logits.masked_fill(~present[:, None, None, :], float("-inf"))
        alpha = F.dropout(logits.softmax(dim=-1), p=self.dropout, training=self.training)
        out = torch.einsum("bhts,bshd->bthd", alpha, value).reshape(num_graphs, -1,
                                                                    self.channels)
        edge_tokens = out[:, :num_layers].reshape(-1, self.channels)
        bias_tokens = out[:, num_layers:].reshape(-1, self.channels)
        node_slot = structure.node_batch * num_layers + (structure.node_layer - 1).clamp(min=0)
        return edge_tokens[structure.edge_group], bias_tokens[node_slot]

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


#: a (graph, neuron layer) group with at least this fraction of its T * n
#: entries present is computed as a masked dense block, a sparser one by paths
BLOCK_DENSITY = 0.25


@dataclass
class DenseBlocks:
    """The (graph, neuron layer) groups of one shape ``(T, n)`` computed densely."""

    tokens: int            # T
    width: int             # n = |V_i|
    rows: Tensor           # [G, T, n] feature row of each entry z_t(v)
    entries: Tensor        # [G, T, n] entry id of each z_t(v) (num_entries if absent)
    pairs: Tensor          # [G, T * T] pair id of (t, t'), row-major (num_pairs if dropped)
    mask: Tensor | None    # [G, T, n] which entries are present; None if all are

    def gather(self, features: Tensor) -> Tensor:
        """``[G, T, n, ...]`` features of the entries, zero where absent."""
        gathered = features[self.rows]
        if self.mask is None:
            return gathered
        return gathered * self.mask.view(*self.mask.shape, *[1] * (gathered.dim() - 3))


@dataclass
class CrossPaths:
    r"""Index bookkeeping of the cross term (cached on the graph).

    An *entry* is one coordinate :math:`z_t(v)` of a token: entries
    ``0..E-1`` are the edges as column entries (token ``u = src``, at
    ``v = dst``), ``E..2E-1`` the edges as row entries (token ``w = dst``,
    at ``v = src``), then one bias entry per non-input node. A *pair* is a
    (query token, key token) pair of one (graph, neuron layer) group that
    share at least one ``v``.

    A group whose tokens have at least :data:`BLOCK_DENSITY` of their
    entries (every fully connected layer pair) is computed as a dense block
    (:class:`DenseBlocks`, one per distinct shape, absent entries masked);
    sparser groups (heavily pruned networks) through explicit *paths*: every
    pair of entries at the same ``v`` (query entry, key entry).
    """

    num_entries: int
    num_tokens: int
    num_pairs: int
    bias_nodes: Tensor       # [N_b] non-input nodes, in bias-entry order
    path_query_row: Tensor   # [P] feature row (edge e or E + node) of the query entry
    path_key_row: Tensor     # [P] feature row of the key entry
    path_layer_size: Tensor  # [P] |V_i| of the path's layer i
    path_pair: Tensor        # [P] pair id
    message_index: Tensor    # [2, P] (key feature row, query entry)
    token_index: Tensor      # [2, num_pairs] (query token, key token)
    blocks: list[DenseBlocks]

    @classmethod
    def of(cls, graph, structure: LayerStructure, dense_blocks: bool = True) -> "CrossPaths":
        cache = graph.__dict__.get("_nft_cross_paths")
        if cache is None or cache[0] is not structure:
            cache = (structure, {})
            graph.__dict__["_nft_cross_paths"] = cache
        if dense_blocks not in cache[1]:
            cache[1][dense_blocks] = cls.build(structure, dense_blocks)
        return cache[1][dense_blocks]

    @classmethod
    def build(cls, s: LayerStructure, dense_blocks: bool = True) -> "CrossPaths":
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

        entry_count = torch.bincount(group, minlength=num_groups)
        dense = (entry_count >= BLOCK_DENSITY * tokens * size) & (tokens > 0) & dense_blocks
        used = torch.zeros(num_pairs, dtype=torch.bool, device=device)

        # sparse groups: every (query entry, key entry) pair at the same v
        sparse_entries = (~dense[group]).nonzero().view(-1)
        sparse_position = position[sparse_entries]
        order = sparse_entries[torch.argsort(sparse_position, stable=True)]
        count = torch.bincount(sparse_position, minlength=num_nodes)
        start = count.cumsum(0) - count
        repeats = count[sparse_position]
        query = torch.repeat_interleave(sparse_entries, repeats)
        block_start = repeats.cumsum(0) - repeats
        offset = arange(query.numel()) - torch.repeat_interleave(block_start, repeats)
        key = order[start[position[query]] + offset]
        path_group = group[query]
        pair = pair_offset[path_group] + local[query] * tokens[path_group] + local[key]
        used[pair] = True

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
            rows = torch.zeros(members.numel(), *shape, dtype=torch.long, device=device)
            entries = torch.full_like(rows, num_entries)
            mask = torch.zeros_like(rows, dtype=torch.bool)
            rows[where] = feature_row[chosen]
            entries[where] = chosen
            mask[where] = True
            shared = torch.einsum("gtv,gsv->gts", mask.double(), mask.double()) > 0
            pairs = pair_offset[members].unsqueeze(1) + arange(shape[0] ** 2)
            used[pairs[shared.view(members.numel(), -1)]] = True
            blocks.append(DenseBlocks(shape[0], shape[1], rows, entries, pairs,
                                      None if bool(mask.all()) else mask))

        pair_group = torch.repeat_interleave(arange(num_groups), tokens * tokens)
        within = arange(num_pairs) - pair_offset[pair_group]
        token_index = torch.stack([token_offset[pair_group] + within // tokens[pair_group],
                                   token_offset[pair_group] + within % tokens[pair_group]])
        token_index = token_index[:, used]
        # compact pair ids; pairs sharing no v go to the extra slot num_pairs
        compact = torch.where(used, used.cumsum(0) - 1, int(used.sum()))
        for block in blocks:
            block.pairs = compact[block.pairs]

        return cls(num_entries=num_entries, num_tokens=int(tokens.sum()),
                   num_pairs=int(used.sum()), bias_nodes=bias_nodes,
                   path_query_row=feature_row[query], path_key_row=feature_row[key],
                   path_layer_size=size[path_group], path_pair=compact[pair],
                   message_index=torch.stack([feature_row[key], query]),
                   token_index=token_index, blocks=blocks)
