r"""Edge updates and an adapter for mixing our operators with PyG layers.

Our operators are called as PyG convs are, ``conv(x, edge_index, edge_attr,
index) -> (x, edge_attr)``, so they sit in ``torch_geometric.nn.Sequential``
beside ``GATConv`` / ``GINEConv`` / ``TransformerConv`` with no adapter; a
PyG conv updates the nodes only and the edges keep the features our last
operator gave them. :class:`EndpointEdgeUpdate` updates each edge from its
own features and its two end neurons. :class:`NodeEdgeAdapter` wraps a PyG
conv (and an edge update) into one module with the pointwise modules'
``(x, edge_attr, index)`` signature, for chains built with
``WeightSpaceSequential``. Every one of these keeps permutation
equivariance. See ``docs/mixing.md`` for which mixes keep which symmetry.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .pointwise import zero_input_nodes


class EndpointEdgeUpdate(nn.Module):
    r"""Update every edge from its own features and its two end neurons.

    .. math::
        \mathbf{h}'_{u \to v} = \mathbf{W} \big[\mathbf{h}_{u \to v},\
        \mathbf{x}_u,\ \mathbf{x}_v\big] + \mathbf{c}

    the usual way to give a node-only GNN layer an edge update (as in the
    MPNN / Graph Network edge block). Equivariant to every neuron
    permutation (a function of each edge and its endpoints only).

    Args:
        edge_channels (int): channels of ``edge_attr``.
        node_channels (int): channels of ``x``.
        out_channels (int): channels of the new ``edge_attr``.
        bias (bool): learn :math:`\mathbf{c}` (default ``True``).

    Shapes:
        - **input:** node features :math:`(N, C_x)`, edge features
          :math:`(E, C_e)`, the index (or graph; its ``edge_index``).
        - **output:** :math:`(E, C')`.
    """

    def __init__(self, edge_channels: int, node_channels: int, out_channels: int,
                 bias: bool = True):
        super().__init__()
        self.edge_channels, self.node_channels = int(edge_channels), int(node_channels)
        self.out_channels = int(out_channels)
        self.linear = nn.Linear(self.edge_channels + 2 * self.node_channels, self.out_channels,
                                bias=bias)

    def reset_parameters(self) -> None:
        self.linear.reset_parameters()

    def forward(self, x: Tensor, edge_attr: Tensor, graph) -> Tensor:
        src, dst = graph.edge_index
        if edge_attr.size(-1) != self.edge_channels or x.size(-1) != self.node_channels:
            raise ValueError(f"EndpointEdgeUpdate: built for edge / node channels "
                             f"{self.edge_channels} / {self.node_channels}, got "
                             f"{edge_attr.size(-1)} / {x.size(-1)}")
        return self.linear(torch.cat([edge_attr, x[src], x[dst]], dim=-1))

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.edge_channels}, {self.node_channels}, "
                f"{self.out_channels})")


class NodeEdgeAdapter(nn.Module):
    r"""Run a PyG node-update conv as a weight-space module ``(x, edge_attr, index)``.

    .. math::
        \mathbf{x}' = \mathrm{conv}(\mathbf{x}, \mathrm{edge\_index},
        \mathbf{h}), \qquad \mathbf{h}' = \begin{cases}
        \mathbf{h} & \text{without an edge module (pass-through)} \\
        \phi(\mathbf{h}) & \text{with a per-edge module } \phi \\
        \phi(\mathbf{h}, \mathbf{x}'_u, \mathbf{x}'_v) & \text{with an EndpointEdgeUpdate } \phi
        \end{cases}

    All three commute with every neuron permutation, so the adapter is as
    equivariant as the wrapped conv (the PyG convs named below treat all
    nodes alike: they are equivariant to every neuron permutation, input
    and output neurons included).

    Args:
        conv (nn.Module): called as ``conv(x, edge_index, edge_attr=edge_attr)``
            (GATv2Conv, TransformerConv, GINEConv, PNAConv, ... built with
            the edge feature width of our operator's output).
        edge_module (nn.Module, optional): the edge update; ``None`` keeps
            ``edge_attr`` as it came (its width must then be what the next
            operator expects).
        zero_input_nodes (bool): set the output on input neurons to zero, as
            our operators do (default ``True``; input neurons carry no
            parameters and our operators ignore their features anyway).

    Shapes:
        - **input:** node features :math:`(N, C)`, edge features
          :math:`(E, C_e)`, the batch's ``WeightGraphIndex`` (or the batch).
        - **output:** :math:`(N, C')`, :math:`(E, C_e')`.

    Example::

        model = WeightSpaceSequential(
            NPConv(1, 16, num_layers=3), WeightSpaceActivation("relu"),
            NodeEdgeAdapter(GATv2Conv(16, 16, edge_dim=16),
                            EndpointEdgeUpdate(16, 16, 16)),
            NPConv(16, 16, num_layers=3))
        x, edge_attr = model(batch.x, batch.edge_attr, WeightGraphIndex.from_data(batch))
    """

    def __init__(self, conv: nn.Module, edge_module: nn.Module | None = None,
                 zero_input_nodes: bool = True):
        super().__init__()
        if not callable(conv):
            raise TypeError(f"NodeEdgeAdapter: conv must be callable, got {type(conv).__name__}")
        self.conv = conv
        self.edge_module = edge_module
        self.zero_input_nodes = bool(zero_input_nodes)

    def reset_parameters(self) -> None:
        for module in (self.conv, self.edge_module):
            if module is not None and hasattr(module, "reset_parameters"):
                module.reset_parameters()

    def forward(self, x: Tensor, edge_attr: Tensor, graph) -> tuple[Tensor, Tensor]:
        where = type(self).__name__
        check_features_shapes(where, x, edge_attr, graph)
        x_out = self.conv(x, graph.edge_index, edge_attr=edge_attr)
        if self.zero_input_nodes:
            x_out = zero_input_nodes(x_out, graph, where)
        if self.edge_module is None:
            edge_out = edge_attr
        elif isinstance(self.edge_module, EndpointEdgeUpdate):
            edge_out = self.edge_module(x_out, edge_attr, graph)
        else:
            edge_out = self.edge_module(edge_attr)
        return x_out, edge_out

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.conv}, edge_module={self.edge_module})"


def check_features_shapes(where: str, x: Tensor, edge_attr: Tensor, graph) -> None:
    """Rows of ``x`` / ``edge_attr`` match the graph (channels may differ)."""
    if graph is None or getattr(graph, "edge_index", None) is None:
        raise ValueError(f"{where}: needs the graph (with edge_index) as third argument")
    if x.dim() != 2 or edge_attr.dim() != 2:
        raise ValueError(f"{where}: x and edge_attr must be 2-D, got {tuple(x.shape)} and "
                         f"{tuple(edge_attr.shape)}")
    if x.size(0) != graph.num_nodes or edge_attr.size(0) != graph.edge_index.size(1):
        raise ValueError(f"{where}: x has {x.size(0)} rows and edge_attr {edge_attr.size(0)}, "
                         f"the graph has {graph.num_nodes} nodes and "
                         f"{graph.edge_index.size(1)} edges")


__all__ = ["NodeEdgeAdapter", "EndpointEdgeUpdate", "check_features_shapes"]
