r"""Weight-space self-attention of the Neural Functional Transformer, on neuron graphs."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import MessagePassing
from torch_geometric.utils import scatter, softmax

from ...tensor.nft_dense import nft_attention_dense
from ...tensor.weight_space import WeightSpace
from ..structure import WeightGraphIndex, operator_inputs
from ._nft_blocks import dense_cross
from .nft_index import BLOCK_DENSITY, NFTAttentionIndex

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

    **Computation.** The reference path is message passing on the *entries*
    :math:`z_t(v)` (every edge twice, as a column and as a row entry, and
    every non-input node once, as a bias entry): one message per two-hop
    path (key entry, neuron :math:`v`, query entry); :meth:`message` sums
    the path products of each token pair into its logit, normalises them
    with :func:`torch_geometric.utils.softmax` over the query token's pairs,
    and weighs the values; ``aggr="add"`` collects them at the query entry.
    Batches dense enough for it take a fast path with the same result:
    padded dense blocks per neuron layer (:mod:`._nft_blocks`, the
    computation of the dense twin). They are chosen once per batch, when
    the index part :class:`~nft_pyg.nn.conv.nft_index.NFTAttentionIndex` is
    built: dense blocks unless the two-hop paths fill less than
    ``block_density`` of the padded blocks (heavily pruned networks).

    Residual networks are refused (a chain of weight layers only): the
    :class:`~nft_pyg.nn.WeightGraphIndex` names their first residual edge.

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
        block_density (float, optional): see above; :obj:`0.` always takes
            the dense blocks, :obj:`float("inf")` always message passing.
            (default: :obj:`0.05`)

    Shapes:
        - **input:** node features :math:`(|\mathcal{V}|, C)`, edge indices
          :math:`(2, |\mathcal{E}|)`, edge features :math:`(|\mathcal{E}|, C)`,
          the batch's :class:`~nft_pyg.nn.structure.WeightGraphIndex`
          (``WeightGraphIndex.from_data(batch)``, or the batch itself, whose
          index is then built for this call); mixed architectures and pruned
          networks allowed.
        - **output:** node features :math:`(|\mathcal{V}|, C)` (zero on
          input neurons), edge features :math:`(|\mathcal{E}|, C)`.

    Cost per graph, with :math:`T_i = n_{i-1} + 1 + n_{i+1}`: dense blocks
    take time :math:`O(C\, n_i T_i^2)` and memory :math:`O(C\, n_i T_i + H\,
    T_i^2)` per neuron layer, like the dense twin (:meth:`forward_dense`);
    message passing takes :math:`O(C\, P)` for the :math:`P = \sum_v c_v^2`
    two-hop paths (:math:`c_v = \deg v + 1`). The global term is
    :math:`O(C (E + N) + H L^2)`.
    """

    def __init__(self, channels: int, heads: int = 1, dropout: float = 0.0,
                 num_layers: int | None = None, global_term: bool = True,
                 cross_term: bool = True, bias: bool = True,
                 block_density: float = BLOCK_DENSITY):
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
        self.block_density = float(block_density)
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

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor,
                index: WeightGraphIndex | None = None) -> tuple[Tensor, Tensor]:
        index = operator_inputs(_WHERE, x, edge_index, edge_attr, index, self.channels,
                                math.inf if self.num_layers is None else self.num_layers)
        parts = index.part(f"nft_attention/{self.block_density}",
                           lambda i: NFTAttentionIndex.build(i, self.block_density))
        edge_sum = node_sum = None
        if self.cross_term:
            edge_qkv, node_qkv = self._qkv(edge_attr), self._qkv(x)
            if parts.dense is not None:
                edge_sum, node_sum = dense_cross(edge_qkv, node_qkv, parts.dense,
                                                 index.num_graphs, self.heads, self.dropout,
                                                 self.training)
            else:
                edge_sum, node_sum = self._cross_by_paths(edge_qkv, node_qkv, parts.paths,
                                                           index.num_edges)
        if self.global_term:
            global_edge, global_node = self._global(x, edge_attr, index, parts)
            edge_sum = global_edge if edge_sum is None else edge_sum + global_edge
            node_sum = global_node if node_sum is None else node_sum + global_node
        x_out = self.out(node_sum).masked_fill(index.is_input.unsqueeze(-1), 0.0)
        return x_out, self.out(edge_sum)

    def _qkv(self, features: Tensor) -> Tensor:
        """``[..., 3C]``: query, key and value projections in one matmul."""
        weight = torch.cat([self.query.weight, self.key.weight, self.value.weight])
        bias = None if self.query.bias is None else torch.cat(
            [self.query.bias, self.key.bias, self.value.bias])
        return F.linear(features, weight, bias)

    # --- cross term as message passing (the reference) -------------------------
    def _cross_by_paths(self, edge_qkv: Tensor, node_qkv: Tensor, paths, num_edges: int):
        rows = torch.cat([edge_qkv, node_qkv]).index_select(0, paths.entry_row)
        query, key, value = rows.chunk(3, dim=-1)
        size = (paths.num_entries, paths.num_entries)
        entry_out = self.propagate(paths.path_index, q=query, k=key, v=value,
                                   path_pair=paths.path_pair, pair_token=paths.pair_token,
                                   pair_scale=paths.pair_scale, num_tokens=paths.num_tokens,
                                   size=size)
        edge_sum = entry_out[:num_edges] + entry_out[num_edges:2 * num_edges]
        node_sum = F.pad(entry_out, (0, 0, 0, 1)).index_select(0, paths.node_entry)
        return edge_sum, node_sum

    def message(self, q_i: Tensor, k_j: Tensor, v_j: Tensor, path_pair: Tensor,
                pair_token: Tensor, pair_scale: Tensor, num_tokens: int) -> Tensor:
        heads, dim = self.heads, self.head_channels
        products = (q_i * k_j).view(-1, heads, dim).sum(dim=-1)               # [P, H]
        logits = scatter(products, path_pair, 0, dim_size=pair_token.numel(), reduce="sum")
        logits = logits * (pair_scale.to(logits.dtype) / math.sqrt(dim)).unsqueeze(-1)
        alpha = softmax(logits, pair_token, num_nodes=num_tokens)             # [S, H]
        alpha = F.dropout(alpha, p=self.dropout, training=self.training)
        weighted = alpha.index_select(0, path_pair).unsqueeze(-1) * v_j.view(-1, heads, dim)
        return weighted.view(-1, self.channels)

    # --- global term -------------------------------------------------------------
    def _global(self, x: Tensor, edge_attr: Tensor, index: WeightGraphIndex,
                parts: NFTAttentionIndex):
        B, L = index.num_graphs, index.num_layers
        heads, dim = self.heads, self.head_channels
        weight_means = scatter(edge_attr, index.edge_group, 0, dim_size=B * L, reduce="mean")
        bias_means = scatter(x, index.node_group, 0, dim_size=B * (L + 1), reduce="mean")
        tokens = torch.cat([weight_means.view(B, L, -1),
                            bias_means.view(B, L + 1, -1)[:, 1:]], dim=1)     # [B, 2L, C]
        query, key, value = self._qkv(tokens).view(B, 2 * L, 3, heads, dim).unbind(2)
        logits = torch.einsum("bthd,bshd->bhts", query, key) / math.sqrt(dim)
        logits = logits.masked_fill(~parts.global_present[:, None, None, :], float("-inf"))
        alpha = F.dropout(logits.softmax(dim=-1), p=self.dropout, training=self.training)
        out = torch.einsum("bhts,bshd->bthd", alpha, value).reshape(B * 2 * L, self.channels)
        return out.index_select(0, parts.edge_token), out.index_select(0, parts.node_token)

    def check_num_layers(self, num_layers: int) -> None:
        if self.num_layers is not None and num_layers > self.num_layers:
            raise ValueError(f"{_WHERE}: built for at most {self.num_layers} weight layers, "
                             f"got a network with {num_layers}")

    # --- dense twin ----------------------------------------------------------------
    def forward_dense(self, ws: WeightSpace) -> WeightSpace:
        """The same map on a folded :class:`~nft_pyg.WeightSpace` (see
        :func:`~nft_pyg.tensor.nft_dense.nft_attention_dense`)."""
        if ws.channels != self.channels:
            raise ValueError(f"{_WHERE}.forward_dense: built for {self.channels} channels, "
                             f"the weight space has {ws.channels}")
        self.check_num_layers(ws.num_layers)
        return nft_attention_dense(ws, self.query, self.key, self.value, self.out,
                                   self.heads, global_term=self.global_term,
                                   cross_term=self.cross_term, dropout=self.dropout,
                                   training=self.training)
