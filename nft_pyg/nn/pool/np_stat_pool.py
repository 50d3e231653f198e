r"""The NP statistics pool: per-layer mean, variance and quantiles of every
feature channel of the weights and biases."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor, nn

from ...tensor.np_dense import np_stat_pool_dense
from ...tensor.weight_space import WeightSpace
from ..statistics import STAT_QUANTILES, GroupSlots, channel_statistics
from ..structure import WeightGraphIndex, layer_inputs


class NPStatPool(nn.Module):
    r"""Invariant readout of per-layer feature *distributions*: for every
    weight layer and every bias layer, the mean, variance and quantiles of
    each channel.

    :class:`~nft_pyg.nn.pool.np_pool.NPPool`, the pool of the NP neural
    functional of "Permutation Equivariant Neural Functionals" (Zhou et al.,
    NeurIPS 2023, arXiv 2302.14040), keeps each layer's mean; the StatNN
    baseline of "Predicting Neural Network Accuracy from Weights"
    (Unterthiner et al., 2020, arXiv 2002.11448) reads the mean, variance
    and quantiles of each layer's raw weights. This pool takes those
    statistics of the learned features: for a graph with weight layers
    :math:`l = 1..L`, channel :math:`c` and statistic :math:`s`,

    .. math::
        \mathbf{g}_{0, l, c} = \mathrm{stats}\big(\{h_{e, c} : e \in
        \mathcal{E}_l\}\big), \qquad
        \mathbf{g}_{1, l, c} = \mathrm{stats}\big(\{x_{v, c} : v \in
        \mathcal{V}_l\}\big), \qquad
        \mathrm{stats}(S) = \big[\mu(S), \sigma^2(S), q_{p_1}(S), \ldots,
        q_{p_Q}(S)\big],

    with :math:`\mathcal{E}_l` the edges of weight layer :math:`l`,
    :math:`\mathcal{V}_l` the neurons of neuron layer :math:`l` (input
    neurons carry no parameters and are left out), :math:`\sigma^2` the
    population variance and :math:`q_p` the :math:`p`-quantile with linear
    interpolation (``torch.quantile``). Each statistic is a function of a
    layer's multiset of feature vectors, so :math:`\mathbf{g}` is invariant
    to any relabelling of neurons, input and output neurons included. Entry
    ``((k * L + l - 1) * C + c) * (2 + Q) + s`` is statistic ``s`` of
    channel ``c`` of layer ``l``'s edges (``k = 0``) or nodes (``k = 1``);
    layers a graph lacks give zeros. On a pruned graph the statistics run
    over the edges that exist.

    Residual networks are refused (a chain of weight layers only): the
    :class:`~nft_pyg.nn.WeightGraphIndex` names their first residual edge.

    Args:
        channels (int): :math:`C`, feature channels of ``x`` and ``edge_attr``.
        num_layers (int): :math:`L`, the most weight layers a graph may have.
        quantiles (sequence of float): :math:`p_1, \ldots, p_Q` in
            :math:`[0, 1]` (default StatNN's 0, 0.25, 0.5, 0.75, 1).

    Shapes:
        - **input:** node features :math:`(N, C)`, edge features
          :math:`(E, C)`, the graph (structure, with ``batch`` for a batch).
        - **output:** :math:`(B, 2 L C (2 + Q))`.
    """

    def __init__(self, channels: int, num_layers: int,
                 quantiles: Sequence[float] = STAT_QUANTILES):
        super().__init__()
        if channels < 1 or num_layers < 1:
            raise ValueError(f"NPStatPool: channels and num_layers must be >= 1, got "
                             f"{channels} and {num_layers}")
        quantiles = tuple(float(q) for q in quantiles)
        if any(not 0.0 <= q <= 1.0 for q in quantiles):
            raise ValueError(f"NPStatPool: quantiles must lie in [0, 1], got {quantiles}")
        self.channels, self.num_layers, self.quantiles = int(channels), int(num_layers), quantiles

    @property
    def num_statistics(self) -> int:
        return 2 + len(self.quantiles)

    @property
    def out_channels(self) -> int:
        return 2 * self.num_layers * self.channels * self.num_statistics

    def reset_parameters(self) -> None:
        pass

    def forward(self, x: Tensor, edge_attr: Tensor, index: WeightGraphIndex) -> Tensor:
        structure = layer_inputs("NPStatPool", x, edge_attr, index, self.channels,
                                 self.num_layers)
        num_graphs, layers = structure.num_graphs, structure.num_layers
        groups = num_graphs * layers
        out = x.new_zeros(num_graphs, 2, self.num_layers, self.channels, self.num_statistics)
        if layers == 0:
            return out.reshape(num_graphs, -1)
        rows = structure.part("np_stat_pool", _stat_pool_rows)
        edges = channel_statistics(edge_attr, structure.edge_group, groups, self.quantiles,
                                   rows.edge_slots)
        nodes = channel_statistics(x.index_select(0, rows.bias_nodes), rows.node_group, groups,
                                   self.quantiles, rows.node_slots)
        out[:, 0, :layers] = edges.view(num_graphs, layers, self.channels, -1)
        out[:, 1, :layers] = nodes.view(num_graphs, layers, self.channels, -1)
        return out.reshape(num_graphs, -1)

    def forward_dense(self, ws: WeightSpace) -> Tensor:
        return np_stat_pool_dense(ws, self.num_layers, self.quantiles, self.channels,
                                  "NPStatPool")

    def __repr__(self) -> str:
        quantiles = "" if self.quantiles == STAT_QUANTILES else f", quantiles={self.quantiles}"
        return f"{type(self).__name__}({self.channels}, num_layers={self.num_layers}{quantiles})"


@dataclass
class _StatPoolRows:
    """The ``"np_stat_pool"`` part of an index: the neurons that carry a bias
    (every neuron but the inputs), their layer groups, and the sorted-block
    slots of the edges' and of those neurons' groupings (built once)."""

    bias_nodes: Tensor
    node_group: Tensor
    edge_slots: GroupSlots
    node_slots: GroupSlots


def _stat_pool_rows(index: WeightGraphIndex) -> _StatPoolRows:
    groups = index.num_graphs * index.num_layers
    bias_nodes = (~index.is_input).nonzero().view(-1)
    node_group = index.node_weight_group.index_select(0, bias_nodes)
    return _StatPoolRows(bias_nodes, node_group, GroupSlots.of(index.edge_group, groups),
                         GroupSlots.of(node_group, groups))
