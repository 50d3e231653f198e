r"""The transformer block of the Neural Functional Transformer, and the
latent cross-attention that pools a weight space into a fixed-size array."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..tensor.weight_space import WeightSpace
from .conv.nft_attention import NFTAttention
from .norm import WeightSpaceLayerNorm
from .pointwise import (
    WeightSpaceActivation,
    WeightSpaceDropout,
    WeightSpaceLinear,
    WeightSpaceSequential,
)
from .structure import WeightGraphIndex, check_features, operator_inputs


class NFTBlock(nn.Module):
    r"""A pre-norm transformer block on weight-space features, from the
    `"Neural Functional Transformers" <https://arxiv.org/abs/2305.13546>`_
    paper (Zhou et al., NeurIPS 2023).

    With :math:`\mathbf{Z} = (\mathbf{X}, \mathbf{H})` the node (bias) and
    edge (weight) features of a batch of neuron graphs,

    .. math::
        \mathbf{Z}' &= \mathbf{Z} + \mathrm{Drop}\big(\mathrm{Attn}(
            \mathrm{LN}_1(\mathbf{Z}))\big), \\
        \mathbf{Z}'' &= \mathbf{Z}' + \mathrm{Drop}\big(\mathbf{W}_2\,
            \sigma(\mathbf{W}_1\, \mathrm{LN}_2(\mathbf{Z}') + \mathbf{b}_1)
            + \mathbf{b}_2\big),

    where :math:`\mathrm{Attn}` is :class:`~nft_pyg.nn.conv.nft_attention.NFTAttention`
    (weight-space self-attention), :math:`\mathrm{LN}` is
    :class:`~nft_pyg.nn.norm.WeightSpaceLayerNorm` (per entry over channels)
    and the feed-forward map acts on every weight and bias on its own
    (:class:`~nft_pyg.nn.pointwise.WeightSpaceLinear`). Input neurons carry
    no parameters: their features are zero on the way out. Every part is
    equivariant to neuron permutations, so the block is too.

    :meth:`forward_dense` computes the same map on a folded
    :class:`~nft_pyg.WeightSpace` by chaining the dense twins of the parts.

    Args:
        channels (int): :math:`C`, feature channels of nodes and edges.
        heads (int, optional): attention heads (divides ``channels``).
            (default: :obj:`1`)
        ff_channels (int, optional): hidden width of the feed-forward map.
            (default: :obj:`4 * channels`)
        dropout (float, optional): dropout on the attention weights and on
            both residual branches (training only). (default: :obj:`0.`)
        act (str or torch.nn.Module, optional): feed-forward non-linearity.
            (default: :obj:`"gelu"`)
        num_layers (int, optional): reject graphs with more weight layers.
            (default: :obj:`None`)
        global_term (bool, optional): attention global term. (default: :obj:`True`)
        cross_term (bool, optional): attention cross term. (default: :obj:`True`)

    Called like the operators, ``block(x, edge_index, edge_attr, index)``
    with ``index`` the batch's :class:`~nft_pyg.nn.structure.WeightGraphIndex`
    (or the batch itself), so it fits ``torch_geometric.nn.Sequential``.

    Shapes:
        - **input:** node features :math:`(N, C)`, edge indices :math:`(2, E)`,
          edge features :math:`(E, C)`, the index (mixed architectures
          allowed).
        - **output:** :math:`(N, C)` (zero on input neurons), :math:`(E, C)`.
    """

    def __init__(self, channels: int, heads: int = 1, ff_channels: int | None = None,
                 dropout: float = 0.0, act: str | nn.Module = "gelu",
                 num_layers: int | None = None, global_term: bool = True,
                 cross_term: bool = True):
        super().__init__()
        if int(channels) < 1:
            raise ValueError(f"NFTBlock: channels must be positive, got {channels}")
        self.channels = int(channels)
        self.ff_channels = 4 * self.channels if ff_channels is None else int(ff_channels)
        if self.ff_channels < 1:
            raise ValueError(f"NFTBlock: ff_channels must be positive, got {ff_channels}")
        self.dropout = float(dropout)
        self.attn_norm = WeightSpaceLayerNorm(self.channels)
        self.attn = NFTAttention(self.channels, heads=heads, dropout=dropout,
                                 num_layers=num_layers, global_term=global_term,
                                 cross_term=cross_term)
        self.attn_dropout = WeightSpaceDropout(dropout)
        self.ff_norm = WeightSpaceLayerNorm(self.channels)
        self.ff = WeightSpaceSequential(
            WeightSpaceLinear(self.channels, self.ff_channels),
            WeightSpaceActivation(act),
            WeightSpaceLinear(self.ff_channels, self.channels),
            WeightSpaceDropout(dropout),
        )

    @property
    def heads(self) -> int:
        return self.attn.heads

    def reset_parameters(self) -> None:
        for module in (self.attn_norm, self.attn, self.ff_norm, self.ff):
            module.reset_parameters()

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor,
                index: WeightGraphIndex | None = None) -> tuple[Tensor, Tensor]:
        index = operator_inputs("NFTBlock", x, edge_index, edge_attr, index, self.channels,
                                math.inf)
        x = x.masked_fill(index.is_input.unsqueeze(-1), 0.0)
        h_x, h_e = self.attn_norm(x, edge_attr, index)
        h_x, h_e = self.attn(h_x, edge_index, h_e, index)
        h_x, h_e = self.attn_dropout(h_x, h_e, index)
        x, edge_attr = x + h_x, edge_attr + h_e
        h_x, h_e = self.ff(*self.ff_norm(x, edge_attr, index), index)
        return x + h_x, edge_attr + h_e

    def forward_dense(self, ws: WeightSpace) -> WeightSpace:
        """The same map on a folded :class:`~nft_pyg.WeightSpace` (the dense
        twins of the parts, chained with the same residual sums)."""
        if ws.channels != self.channels:
            raise ValueError(f"NFTBlock: built for {self.channels} channels, the weight "
                             f"space has {ws.channels}")
        attended = self.attn_dropout.forward_dense(
            self.attn.forward_dense(self.attn_norm.forward_dense(ws)))
        ws = ws + attended
        return ws + self.ff.forward_dense(self.ff_norm.forward_dense(ws))

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.channels}, heads={self.heads}, "
                f"ff_channels={self.ff_channels}, dropout={self.dropout})")


class LatentCrossAttention(nn.Module):
    r"""Cross-attention from :math:`M` learned latent queries to every weight
    and bias of a network: an invariant pool into a latent array
    :math:`[M, d]`, the bottleneck of Inr2Array in `"Neural Functional
    Transformers" <https://arxiv.org/abs/2305.13546>`_ (Zhou et al.,
    NeurIPS 2023), in the style of a Perceiver read-in.

    The tokens :math:`\mathcal{T}_b` of graph :math:`b` are all its edges
    and all its non-input nodes (input neurons carry no parameters). With
    learned queries :math:`\mathbf{q}_m \in \mathbb{R}^d` and per head
    (:math:`d_h = d / H`),

    .. math::
        \alpha_{m t} = \operatorname{softmax}_{t \in \mathcal{T}_b}
            \frac{\langle W_Q \mathbf{q}_m, W_K \mathrm{LN}(\mathbf{z}_t)
            \rangle}{\sqrt{d_h}}, \qquad
        \mathbf{a}_m = W_O \textstyle\sum_{t \in \mathcal{T}_b} \alpha_{m t}\,
            W_V \mathrm{LN}(\mathbf{z}_t),

    then :math:`\mathbf{l}_m = \mathbf{q}_m + \mathbf{a}_m` and
    :math:`\mathbf{l}_m \leftarrow \mathbf{l}_m +
    \mathrm{MLP}(\mathrm{LN}(\mathbf{l}_m))`. The softmax runs over each
    graph's own tokens (computed on one padded ``[B, T_max]`` block of each
    graph's tokens, padding masked, :class:`GraphTokens`), so any
    relabelling of neurons (which only reorders the tokens) leaves the
    latent array unchanged: it is invariant by construction. The order
    of the :math:`M` latents is that of the queries, the same for every
    network.

    Args:
        channels (int): :math:`d`.
        num_latents (int): :math:`M`.
        heads (int, optional): :math:`H` (divides ``channels``). (default: :obj:`1`)
        ff_channels (int, optional): hidden width of the latent MLP
            (:obj:`0` drops the MLP). (default: :obj:`2 * channels`)
        dropout (float, optional): dropout on the attention weights.
            (default: :obj:`0.`)

    Shapes:
        - **input:** node features :math:`(N, d)`, edge features
          :math:`(E, d)`, the batch's :class:`~nft_pyg.nn.structure.WeightGraphIndex`
          (or the batch).
        - **output:** :math:`(B, M, d)`; with ``return_attention_weights``
          also ``(token_graph [E + N], alpha [E + N, M, H])``, tokens = the
          edges, then the nodes (input nodes with weight zero).
    """

    def __init__(self, channels: int, num_latents: int, heads: int = 1,
                 ff_channels: int | None = None, dropout: float = 0.0):
        super().__init__()
        if min(int(channels), int(num_latents), int(heads)) < 1 or channels % heads:
            raise ValueError(f"LatentCrossAttention: channels ({channels}) must be a positive "
                             f"multiple of heads ({heads}) and num_latents ({num_latents}) "
                             "positive")
        self.channels, self.num_latents, self.heads = int(channels), int(num_latents), int(heads)
        self.head_channels = self.channels // self.heads
        self.dropout = float(dropout)
        self.ff_channels = 2 * self.channels if ff_channels is None else int(ff_channels)
        self.queries = nn.Parameter(torch.empty(self.num_latents, self.channels))
        self.token_norm = nn.LayerNorm(self.channels)
        self.query = nn.Linear(self.channels, self.channels)
        self.key = nn.Linear(self.channels, self.channels)
        self.value = nn.Linear(self.channels, self.channels)
        self.out = nn.Linear(self.channels, self.channels)
        if self.ff_channels > 0:
            self.ff = nn.Sequential(nn.LayerNorm(self.channels),
                                    nn.Linear(self.channels, self.ff_channels), nn.GELU(),
                                    nn.Linear(self.ff_channels, self.channels))
        else:
            self.ff = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.queries, std=1.0)
        for module in (self.token_norm, self.query, self.key, self.value, self.out):
            module.reset_parameters()
        if self.ff is not None:
            for module in self.ff:
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()

    def forward(self, x: Tensor, edge_attr: Tensor, index: WeightGraphIndex,
                return_attention_weights: bool = False):
        where = type(self).__name__
        index = WeightGraphIndex.coerce(index, where)
        check_features(where, x, edge_attr, index, self.channels)
        tokens = index.part("graph_tokens", GraphTokens.build)
        B, size, heads, dim = index.num_graphs, tokens.size, self.heads, self.head_channels
        # every graph's edges and nodes as one padded row block [B, size, C]
        rows = torch.cat([edge_attr, x])
        padded = rows.new_zeros(B * size, self.channels).index_copy(0, tokens.slot, rows)
        padded = self.token_norm(padded).view(B, size, self.channels)
        query = self.query(self.queries).view(self.num_latents, heads, dim)
        key = self.key(padded).view(B, size, heads, dim)
        value = self.value(padded).view(B, size, heads, dim)
        logits = torch.einsum("mhd,bthd->bhmt", query, key) / math.sqrt(dim)
        # padding and input neurons (no parameters) get no weight
        logits = logits.masked_fill(~tokens.valid[:, None, None, :], float("-inf"))
        alpha = logits.softmax(dim=-1)                                     # [B, H, M, size]
        dropped = F.dropout(alpha, p=self.dropout, training=self.training)
        attended = torch.einsum("bhmt,bthd->bmhd", dropped, value).reshape(
            B, self.num_latents, self.channels)
        latents = self.queries + self.out(attended)
        if self.ff is not None:
            latents = latents + self.ff(latents)
        if return_attention_weights:
            token_graph = torch.cat([index.edge_batch, index.node_batch])
            per_token = alpha.permute(0, 3, 2, 1).reshape(B * size, self.num_latents, heads)
            return latents, (token_graph, per_token.index_select(0, tokens.slot))
        return latents

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.channels}, num_latents={self.num_latents}, "
                f"heads={self.heads})")


@dataclass
class GraphTokens:
    """The tokens of :class:`LatentCrossAttention`, graph by graph: the part
    ``"graph_tokens"`` of a :class:`~nft_pyg.nn.structure.WeightGraphIndex`.

    Attributes:
        size (int): rows per graph (its edges and nodes; the largest graph's).
        slot (Tensor): ``[E + N]`` row of each edge, then each node, in the
            padded ``[B * size]`` block (a graph's edges, then its nodes).
        valid (Tensor): ``[B, size]`` rows that hold a parameter (an edge or a
            non-input node).
    """

    size: int
    slot: Tensor
    valid: Tensor

    @classmethod
    def build(cls, index: WeightGraphIndex) -> GraphTokens:
        B = index.num_graphs
        edge_count = torch.bincount(index.edge_batch, minlength=B)
        node_count = torch.bincount(index.node_batch, minlength=B)
        size = int((edge_count + node_count).max())

        def rank(group: Tensor, count: Tensor) -> Tensor:   # position inside its graph
            order = torch.sort(group, stable=True).indices
            ranks = torch.empty_like(order)
            ranks[order] = torch.arange(order.numel(), device=order.device)
            return ranks - (count.cumsum(0) - count)[group]

        slot = torch.cat([index.edge_batch * size + rank(index.edge_batch, edge_count),
                          index.node_batch * size + edge_count[index.node_batch] +
                          rank(index.node_batch, node_count)])
        parameter = torch.cat([torch.ones_like(index.edge_batch, dtype=torch.bool),
                               ~index.is_input])
        valid = torch.zeros(B * size, dtype=torch.bool, device=slot.device)
        valid[slot] = parameter
        return cls(size, slot, valid.view(B, size))


__all__ = ["GraphTokens", "LatentCrossAttention", "NFTBlock"]
