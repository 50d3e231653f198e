r"""The HNP invariant pool, and the typing shared with :class:`HNPConv`.

Under HNP (only hidden neurons permutable) every weight and bias entry has a
*type*: the part of its index that no permutation moves. A hidden weight
layer is one type, a column of :math:`W_1` (one input neuron) is a type, a
row of :math:`W_L` (one output neuron) is a type, each hidden bias layer is
one type and each output bias is a type. The invariant summary
:math:`\mathbf{g}` is the mean of the features over each type.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch_geometric.utils import scatter

from ...tensor.hnp_dense import hnp_pool_dense, hnp_num_types
from ...tensor.weight_space import WeightSpace
from ..structure import LayerStructure, check_features


@dataclass
class HNPTyping:
    """Type ids of the edges and nodes of a batch (see :func:`hnp_typing`).

    Attributes:
        edge_type (Tensor): ``[E]`` in ``0 .. T_E - 1``.
        node_type (Tensor): ``[N]`` in ``T_E .. T_E + T_N - 1``; ``-1`` for
            input neurons (they carry no parameters).
        num_types (int): ``G = T_E + T_N``.
        edge_glob_id, node_glob_id (Tensor): ``[E]`` / ``[N]`` row ``b * G + type``
            of each entry in the flattened ``[B * G]`` summary (input neurons: their
            graph's type 0).
        has_params (Tensor): ``[N, 1]`` bool, ``False`` on input neurons (they
            carry no parameters).
        summary_ids (Tensor): ``[E + N']`` the (graph, type) row of every edge and
            of every neuron with parameters; ``summary_count`` ``[B * G, 1]``: the
            number of entries of each (graph, type), at least 1.
    """

    edge_type: Tensor
    node_type: Tensor
    num_types: int
    edge_glob_id: Tensor
    node_glob_id: Tensor
    has_params: Tensor
    summary_ids: Tensor
    summary_count: Tensor


def hnp_typing(structure: LayerStructure, num_layers: int, num_inputs: int,
               num_outputs: int) -> HNPTyping:
    r"""Types of every edge and node, in the order of :math:`\mathbf{g}`.

    For ``L >= 2``: edge types ``0 .. n_0 - 1`` are the columns of
    :math:`W_1` (by input position), then one type per hidden weight layer
    :math:`2 .. L-1`, then the rows of :math:`W_L` (by output position);
    node types follow: one per hidden neuron layer :math:`1 .. L-1`, then one
    per output neuron. For ``L = 1`` nothing is permutable: each entry of
    :math:`W_1` (row-major) and of :math:`b_1` is its own type.
    """
    return structure._cached(("hnp_typing", num_layers, num_inputs, num_outputs),
                             lambda: _build_typing(structure, num_layers, num_inputs,
                                                   num_outputs))


def _build_typing(structure: LayerStructure, num_layers: int, num_inputs: int,
                  num_outputs: int) -> HNPTyping:
    L, n_in, n_out = num_layers, num_inputs, num_outputs
    src, dst, pos = structure.src, structure.dst, structure.node_pos
    layer = structure.edge_layer
    num_edge_types, num_node_types = hnp_num_types(L, n_in, n_out)
    if L == 1:
        edge_type = pos[dst] * n_in + pos[src]
        hidden_node_type = torch.zeros_like(structure.node_layer)  # no hidden neurons
    else:
        edge_type = torch.where(
            layer == 1, pos[src],
            torch.where(layer == L, n_in + L - 2 + pos[dst], n_in + layer - 2))
        hidden_node_type = structure.node_layer - 1
    node_type = torch.where(structure.is_output, L - 1 + pos, hidden_node_type)
    node_type = torch.where(structure.is_input, -1, num_edge_types + node_type)
    num_types = num_edge_types + num_node_types
    is_node = node_type >= 0
    edge_glob_id = structure.edge_batch * num_types + edge_type
    node_glob_id = structure.node_batch * num_types + node_type.clamp(min=0)
    summary_ids = torch.cat([edge_glob_id, node_glob_id[is_node]])
    summary_count = torch.bincount(summary_ids, minlength=structure.num_graphs * num_types)
    return HNPTyping(edge_type, node_type, num_types, edge_glob_id, node_glob_id,
                     is_node.unsqueeze(1), summary_ids,
                     summary_count.clamp(min=1).unsqueeze(1))


def hnp_summary(x: Tensor, edge_attr: Tensor, structure: LayerStructure,
                typing: HNPTyping, in_mean: Tensor | None = None,
                out_mean: Tensor | None = None) -> Tensor:
    r"""``[B, G, C]``: per graph, the mean feature of every HNP type.

    For ``L >= 2`` these are the out-edge means of the input neurons (column
    means of :math:`W_1`), the edge means of the hidden weight layers, the
    in-edge means of the output neurons (row means of :math:`W_L`), the node
    means of the hidden neuron layers and the output neurons' features; one
    scatter-mean over the (graph, type) ids computes them all at once.

    Given the in- and out-edge means of every neuron (``[N, C]``, as
    :class:`HNPConv` computes anyway), the edge sums are taken from them
    (mean times degree) instead of scattering all edges again.
    """
    num_graphs, num_types = structure.num_graphs, typing.num_types
    if in_mean is None or out_mean is None:
        features = torch.cat([edge_attr, x[typing.node_type >= 0]])
        summary = scatter(features, typing.summary_ids, 0, dim_size=num_graphs * num_types,
                          reduce="sum")
    else:
        rows = _edge_sum_rows(structure, typing)
        features = torch.cat([out_mean.index_select(0, rows.sources) * rows.out_degree,
                              in_mean.index_select(0, rows.targets) * rows.in_degree,
                              x.index_select(0, rows.with_params)])
        summary = scatter(features, rows.ids, 0, dim_size=num_graphs * num_types,
                          reduce="sum")
    return (summary / typing.summary_count).view(num_graphs, num_types, -1)


@dataclass
class _EdgeSumRows:
    """Neurons whose edge sums make up the HNP edge types (cached per batch).

    ``sources``: input neurons (their out-edges are the columns of :math:`W_1`);
    ``targets``: neurons of layers ``2 .. L`` (their in-edges are the hidden
    weight layers and the rows of :math:`W_L`); ``with_params``: every
    non-input neuron; ``ids`` the (graph, type) row of each, in that order.
    """

    sources: Tensor
    out_degree: Tensor
    targets: Tensor
    in_degree: Tensor
    with_params: Tensor
    ids: Tensor


def _edge_sum_rows(structure: LayerStructure, typing: HNPTyping) -> _EdgeSumRows:
    def build() -> _EdgeSumRows:
        sources = structure.is_input.nonzero().view(-1)
        targets = (structure.node_layer >= 2).nonzero().view(-1)
        with_params = (typing.node_type >= 0).nonzero().view(-1)
        edge_id = torch.zeros_like(typing.node_glob_id)  # edge type row of a neuron's edges
        edge_id[structure.src] = typing.edge_glob_id    # overwritten by in-edges below,
        edge_id[structure.dst] = typing.edge_glob_id    # except for input neurons
        out_degree = torch.bincount(structure.src, minlength=structure.num_nodes)
        ids = torch.cat([edge_id[sources], edge_id[targets], typing.node_glob_id[with_params]])
        return _EdgeSumRows(sources, out_degree[sources].unsqueeze(1), targets,
                            structure.in_degree[targets].unsqueeze(1), with_params, ids)
    return structure._cached(("hnp_edge_sum_rows", id(typing)), build)


def check_hnp_graph(where: str, x: Tensor, edge_attr: Tensor, graph, channels: int,
                    num_layers: int, num_inputs: int, num_outputs: int) -> LayerStructure:
    """Validate features and structure for an HNP operator; return the structure.

    Every graph of the batch must have exactly ``num_layers`` weight layers,
    ``num_inputs`` input and ``num_outputs`` output neurons (the HNP
    parameters are typed by these); hidden widths are free.
    """
    check_features(where, x, edge_attr, graph, channels)
    structure = LayerStructure.of(graph, where)
    problem = structure._cached(("hnp_check", num_layers, num_inputs, num_outputs),
                                lambda: _structure_problem(structure, num_layers, num_inputs,
                                                           num_outputs))
    if problem is not None:
        raise ValueError(f"{where}: {problem}")
    return structure


def _structure_problem(structure: LayerStructure, num_layers: int, num_inputs: int,
                       num_outputs: int) -> str | None:
    """Why the structure does not fit an HNP operator (``None`` if it does)."""
    num_graphs = structure.num_graphs
    depth = scatter(structure.edge_layer, structure.edge_batch, 0, dim_size=num_graphs,
                    reduce="max")
    if structure.edge_layer.numel() == 0 or (depth != num_layers).any():
        found = sorted(set(depth.tolist()))
        return (f"every graph must have edge_layer up to num_layers={num_layers}, found "
                f"depths {found}; HNP parameters are typed by the layer's distance to the "
                "fixed input and output neurons, so a layer is built for one depth")
    if (structure.is_output != (structure.node_layer == num_layers)).any() or \
            (structure.is_input != (structure.node_layer == 0)).any():
        return (f"node_role must be INPUT exactly on node_layer 0 and OUTPUT exactly on "
                f"node_layer {num_layers}")
    for name, mask, expected in (("input", structure.is_input, num_inputs),
                                 ("output", structure.is_output, num_outputs)):
        counts = torch.bincount(structure.node_batch[mask], minlength=num_graphs)
        positions = structure.node_pos[mask]
        if (counts != expected).any() or (positions.numel() and int(positions.max()) >= expected):
            return (f"expected num_{name}s={expected} {name} neurons (node_pos "
                    f"0..{expected - 1}) per graph, found {sorted(set(counts.tolist()))}")
    return None


class HNPPool(nn.Module):
    r"""Invariant readout of the HNP neural functional: layer means, with the
    input and output neurons kept by position.

    From "Permutation Equivariant Neural Functionals" (Zhou et al., NeurIPS
    2023, arXiv 2302.14040), the invariant pooling of the HNP NFN (only
    hidden neurons permutable, as in DWSNets, Navon et al., ICML 2023). For
    ``L >= 2`` weight layers with :math:`n_0` inputs and :math:`n_L` outputs,

    .. math::
        \mathbf{g} = \Big[\big(\tfrac{1}{n_1}\textstyle\sum_i W_1[i, q]\big)_{q < n_0},\
        \big(\tfrac{1}{n_l n_{l-1}}\sum_{i,j} W_l[i, j]\big)_{1<l<L},\
        \big(\tfrac{1}{n_{L-1}}\sum_j W_L[p, j]\big)_{p < n_L},\
        \big(\tfrac{1}{n_l}\sum_i b_l[i]\big)_{1 \le l < L},\
        \big(b_L[p]\big)_{p < n_L}\Big]
        \in \mathbb{R}^{G C},

    with :math:`G = n_0 + 2 n_L + 2L - 3`. In graph form these are the
    out-edge means of the input neurons, the edge means of the hidden weight
    layers, the in-edge means of the output neurons, the node means of the
    hidden neuron layers and the output neurons' own features. For
    ``L = 1`` nothing is permutable and :math:`\mathbf{g}` is all of
    :math:`W_1` (row-major) and :math:`b_1`, :math:`G = n_1 n_0 + n_1`.
    Entry ``t * C + c`` is channel ``c`` of type ``t``.

    Args:
        channels (int): feature channels ``C``.
        num_layers (int): weight layers ``L`` of every graph.
        num_inputs (int): input neurons :math:`n_0`.
        num_outputs (int): output neurons :math:`n_L`.

    Shapes:
        - **input:** node features :math:`(|\mathcal{V}|, C)`, edge features
          :math:`(|\mathcal{E}|, C)`, the graph (batch) structure
        - **output:** :math:`(B, G C)`
    """

    def __init__(self, channels: int, num_layers: int, num_inputs: int, num_outputs: int):
        super().__init__()
        for name, value in (("channels", channels), ("num_layers", num_layers),
                            ("num_inputs", num_inputs), ("num_outputs", num_outputs)):
            if value < 1:
                raise ValueError(f"HNPPool: {name} must be >= 1, got {value}")
        self.channels = channels
        self.num_layers = num_layers
        self.num_inputs = num_inputs
        self.num_outputs = num_outputs
        self.num_types = sum(hnp_num_types(num_layers, num_inputs, num_outputs))

    @property
    def out_channels(self) -> int:
        """``G * C``: size of the pooled vector."""
        return self.num_types * self.channels

    def reset_parameters(self) -> None:
        """No parameters."""

    def forward(self, x: Tensor, edge_attr: Tensor, graph) -> Tensor:
        structure = check_hnp_graph("HNPPool", x, edge_attr, graph, self.channels,
                                    self.num_layers, self.num_inputs, self.num_outputs)
        typing = hnp_typing(structure, self.num_layers, self.num_inputs, self.num_outputs)
        return hnp_summary(x, edge_attr, structure, typing).flatten(1)

    def forward_dense(self, ws: WeightSpace) -> Tensor:
        """The same readout on a folded :class:`WeightSpace`: ``[B, G C]``."""
        return hnp_pool_dense(self, ws)

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.channels}, num_layers={self.num_layers}, "
                f"num_inputs={self.num_inputs}, num_outputs={self.num_outputs})")
