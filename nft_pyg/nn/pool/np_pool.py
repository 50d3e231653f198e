r"""The NP invariant pool: per-layer means of the weights and biases."""
from __future__ import annotations

from torch import Tensor, nn
from torch_geometric.utils import scatter

from ...graph.types import NodeRole
from ...tensor.np_dense import np_pool_dense
from ...tensor.weight_space import WeightSpace
from ..structure import LayerStructure, check_features


def check_graph_features(where: str, x: Tensor, edge_attr: Tensor, graph,
                         channels: int, num_layers: int) -> LayerStructure:
    """Validate operator inputs; return the graph's (cached) :class:`LayerStructure`.

    Raises a ``ValueError`` naming ``where`` if an attribute is missing, the
    feature shapes do not fit the graph or the operator, or the graph is
    deeper than the ``num_layers`` the operator was built for.
    """
    check_features(where, x, edge_attr, graph, channels)
    structure = LayerStructure.of(graph, where)
    if structure.num_layers > num_layers:
        raise ValueError(f"{where}: the graph has {structure.num_layers} weight layers but the "
                         f"operator was built for num_layers={num_layers}")
    return structure


def np_summary(x: Tensor, edge_attr: Tensor, structure: LayerStructure,
               num_layers: int, in_mean: Tensor | None = None) -> Tensor:
    r"""``[B, 2, L, C]``: per-graph means of each weight layer's edges (``[:, 0]``)
    and of each neuron layer ``1..L``'s nodes (``[:, 1]``).

    Layers a graph does not have (up to ``num_layers``) give zeros. With
    ``in_mean`` (``[N, C]``, the mean of each neuron's in-edges, already
    computed by the caller) the edge means come from the neurons: the edges
    of weight layer ``l`` are exactly the in-edges of neuron layer ``l``, so
    no second pass over the edges is needed.
    """
    if in_mean is None:
        edge_means = structure.edge_layer_mean(edge_attr)       # [B, L_g, C]
    else:
        edge_means = _edge_layer_mean_from_nodes(in_mean, structure)
    node_means = structure.node_layer_mean(x)[:, 1:]           # [B, L_g, C]
    summary = x.new_zeros(structure.num_graphs, 2, num_layers, x.size(-1))
    summary[:, 0, : structure.num_layers] = edge_means
    summary[:, 1, : structure.num_layers] = node_means
    return summary


class NPPool(nn.Module):
    r"""Invariant readout of the NP neural functional: the mean of every weight
    layer and of every bias layer.

    From "Permutation Equivariant Neural Functionals" (Zhou et al., NeurIPS
    2023, arXiv 2302.14040), the invariant pooling of the NP (all neurons
    permutable) NFN: for a graph with weight layers :math:`l = 1..L`,

    .. math::
        \mathbf{g} = \Big[\tfrac{1}{|\mathcal{E}_1|}\textstyle\sum_{e \in \mathcal{E}_1}
        \mathbf{h}_e, \ldots, \tfrac{1}{|\mathcal{E}_L|}\sum_{e \in \mathcal{E}_L}
        \mathbf{h}_e,\ \tfrac{1}{|\mathcal{V}_1|}\sum_{v \in \mathcal{V}_1}
        \mathbf{x}_v, \ldots, \tfrac{1}{|\mathcal{V}_L|}\sum_{v \in \mathcal{V}_L}
        \mathbf{x}_v\Big] \in \mathbb{R}^{2 L C},

    with :math:`\mathcal{E}_l` the edges of weight layer :math:`l` and
    :math:`\mathcal{V}_l` the neurons of neuron layer :math:`l` (input
    neurons carry no parameters and are left out). Entry
    ``(k * L + l - 1) * C + c`` is channel ``c`` of layer ``l``'s edge
    (``k = 0``) or node (``k = 1``) mean. A graph with fewer than ``L``
    layers gets zeros for the missing ones. Every term is a mean over a
    whole layer, so :math:`\mathbf{g}` is invariant to any relabelling of
    neurons, input and output neurons included.

    Args:
        channels (int): :math:`C`, feature channels of ``x`` and ``edge_attr``.
        num_layers (int): :math:`L`, the most weight layers a graph may have.

    Shapes:
        - **input:** node features :math:`(N, C)`, edge features
          :math:`(E, C)`, the graph (structure, with ``batch`` for a batch).
        - **output:** :math:`(B, 2 L C)`.
    """

    def __init__(self, channels: int, num_layers: int):
        super().__init__()
        if channels < 1 or num_layers < 1:
            raise ValueError(f"NPPool: channels and num_layers must be >= 1, got "
                             f"{channels} and {num_layers}")
        self.channels, self.num_layers = int(channels), int(num_layers)

    @property
    def out_channels(self) -> int:
        return 2 * self.num_layers * self.channels

    def reset_parameters(self) -> None:
        pass

    def forward(self, x: Tensor, edge_attr: Tensor, graph) -> Tensor:
        structure = check_graph_features("NPPool", x, edge_attr, graph, self.channels,
                                         self.num_layers)
        summary = np_summary(x, edge_attr, structure, self.num_layers)
        return summary.reshape(structure.num_graphs, -1)

    def forward_dense(self, ws: WeightSpace) -> Tensor:
        return np_pool_dense(ws, self.num_layers, self.channels, "NPPool")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.channels}, num_layers={self.num_layers})"


def is_input_node(structure: LayerStructure) -> Tensor:
    """``[N, 1]`` bool mask of input neurons."""
    return (structure.node_role == int(NodeRole.INPUT)).unsqueeze(-1)


def _edge_layer_mean_from_nodes(in_mean: Tensor, structure: LayerStructure) -> Tensor:
    """``[B, L, C]`` edge-layer means from in-edge means weighted by in-degree."""
    num_groups = structure.num_graphs * structure.num_layers
    group = structure.node_weight_group(structure.num_layers)
    degree = structure.in_degree.to(in_mean.dtype)
    sums = scatter(in_mean * degree.unsqueeze(-1), group, 0, dim_size=num_groups, reduce="sum")
    counts = scatter(degree, group, 0, dim_size=num_groups, reduce="sum").clamp(min=1)
    return (sums / counts.unsqueeze(-1)).view(structure.num_graphs, structure.num_layers, -1)
