r"""The pointwise ablation of the NFN layers: one linear map per layer, no coupling."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch_geometric.nn import MessagePassing

from ...tensor.pointwise_dense import pointwise_layer_dense
from ...tensor.weight_space import WeightSpace
from ..structure import TypePlan, WeightGraphIndex, operator_inputs


def layer_linear(features: Tensor, weight: Tensor, layer: Tensor,
                 plan: TypePlan | None = None) -> Tensor:
    r"""Row ``r`` times ``weight[layer[r]]``: ``[M, C]`` x ``[T, C, C']`` -> ``[M, C']``.

    One matmul per layer type (as PyG's ``HeteroLinear`` does without
    ``pyg-lib``): gathering one weight matrix per row instead would need
    ``M * C * C'`` memory. With a :class:`~nft_pyg.nn.structure.TypePlan`
    (``index.edge_plan`` / ``node_plan`` of a
    :class:`~nft_pyg.nn.structure.WeightGraphIndex`) the
    rows are grouped by a view (a batch of one layout) or one sort, and the
    results put back by one ``cat`` (and one gather): no zero fill, no
    scatter in the backward pass.
    """
    if weight.size(0) == 1:
        return features @ weight[0]
    if plan is not None:
        grouped = features if plan.order is None else features.index_select(0, plan.order)
        pieces = grouped.reshape(plan.period, -1, features.size(-1)).split(plan.counts, dim=1)
        # piece @ W copies a strided piece once and runs one matmul; a bmm against
        # the expanded weight would avoid the copy but compute the weight gradient
        # once per block, far slower with few rows per block and many channels
        out = torch.cat([piece @ weight[t] for t, piece in enumerate(pieces)], dim=1)
        out = out.view(-1, weight.size(-1))
        return out if plan.inverse is None else out.index_select(0, plan.inverse)
    out = features.new_zeros(features.size(0), weight.size(-1))
    for t in range(weight.size(0)):
        rows = (layer == t).nonzero().view(-1)
        if rows.numel():
            out.index_copy_(0, rows, features.index_select(0, rows) @ weight[t])
    return out


def uniform_(tensor: Tensor, variance: float) -> Tensor:
    """Fill with a zero-mean uniform of the given variance."""
    bound = math.sqrt(3.0 * variance)
    return nn.init.uniform_(tensor, -bound, bound)


class PointwiseConv(MessagePassing):
    r"""The pointwise ablation of the NFN layers: every weight and every bias
    mapped on its own by a linear map typed by its layer.

    The baseline of "Permutation Equivariant Neural Functionals" (Zhou et
    al., NeurIPS 2023, arXiv 2302.14040) that drops every coupling term of
    the NP / HNP layers and keeps only the pointwise one. For an edge
    :math:`e` of weight layer :math:`l` and a neuron :math:`v` of neuron
    layer :math:`l \ge 1`:

    .. math::
        \mathbf{h}'_e = \mathbf{A}_l \mathbf{h}_e + \mathbf{a}_l, \qquad
        \mathbf{x}'_v = \mathbf{E}_l \mathbf{x}_v + \mathbf{e}_l,

    and :math:`\mathbf{x}'_v = \mathbf{0}` for input neurons. It commutes
    with any relabelling of neurons (input and output ones included) but
    sees nothing of the network beyond each single parameter. It equals
    :class:`~nft_pyg.nn.conv.np_conv.NPConv` with every term but the two
    self terms set to zero.

    Residual networks are refused (a chain of weight layers only): the
    :class:`~nft_pyg.nn.WeightGraphIndex` names their first residual edge.

    Args:
        in_channels (int): :math:`C`, channels of ``x`` and ``edge_attr``.
        out_channels (int): :math:`C'`.
        num_layers (int): :math:`L`, the most weight layers a graph may have.
        bias (bool): learn :math:`\mathbf{a}_l, \mathbf{e}_l` (default ``True``).

    Shapes:
        - **input:** node features :math:`(N, C)`, edge features
          :math:`(E, C)`; called as ``conv(x, edge_index, edge_attr, index)`` with
          ``index`` a :class:`~nft_pyg.nn.structure.WeightGraphIndex`.
        - **output:** :math:`(N, C')`, :math:`(E, C')`.
    """

    def __init__(self, in_channels: int, out_channels: int, num_layers: int,
                 bias: bool = True):
        super().__init__(aggr="mean")
        if min(in_channels, out_channels, num_layers) < 1:
            raise ValueError(f"PointwiseConv: in_channels, out_channels and num_layers must "
                             f"be >= 1, got {in_channels}, {out_channels}, {num_layers}")
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.num_layers = int(num_layers)
        shape = (self.num_layers, self.in_channels, self.out_channels)
        self.edge_weight = nn.Parameter(torch.empty(shape))
        self.node_weight = nn.Parameter(torch.empty(shape))
        if bias:
            self.edge_bias = nn.Parameter(torch.empty(self.num_layers, self.out_channels))
            self.node_bias = nn.Parameter(torch.empty(self.num_layers, self.out_channels))
        else:
            self.register_parameter("edge_bias", None)
            self.register_parameter("node_bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # variance 1 / C keeps the feature scale through a stack of layers
        uniform_(self.edge_weight, 1.0 / self.in_channels)
        uniform_(self.node_weight, 1.0 / self.in_channels)
        if self.edge_bias is not None:
            nn.init.zeros_(self.edge_bias)
            nn.init.zeros_(self.node_bias)

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor,
                index: WeightGraphIndex | None = None) -> tuple[Tensor, Tensor]:
        """``(x', edge_attr')`` of a batch; ``index = WeightGraphIndex.from_data(batch)``."""
        index = operator_inputs("PointwiseConv", x, edge_index, edge_attr, index,
                                self.in_channels, self.num_layers)
        edge_type = index.edge_layer - 1
        # input neurons (layer 0) get type 0 here and are zeroed below
        node_type = (index.node_layer - 1).clamp(min=0)
        edge_out = self.edge_updater(edge_index, edge_attr=edge_attr, edge_type=edge_type,
                                     plan=index.edge_plan)
        node_out = layer_linear(x, self.node_weight, node_type, index.node_plan)
        if self.node_bias is not None:
            node_out = node_out + self.node_bias[node_type]
        return node_out.masked_fill(index.is_input.unsqueeze(-1), 0.0), edge_out

    def edge_update(self, edge_attr: Tensor, edge_type: Tensor, plan: TypePlan | None) -> Tensor:
        r""":math:`\mathbf{A}_l \mathbf{h}_e + \mathbf{a}_l`: each edge alone."""
        out = layer_linear(edge_attr, self.edge_weight, edge_type, plan)
        return out if self.edge_bias is None else out + self.edge_bias[edge_type]

    def forward_dense(self, ws: WeightSpace) -> WeightSpace:
        return pointwise_layer_dense(ws, self.edge_weight, self.node_weight, self.edge_bias,
                                     self.node_bias, type(self).__name__)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.in_channels}, {self.out_channels}, "
                f"num_layers={self.num_layers}, bias={self.edge_bias is not None})")
