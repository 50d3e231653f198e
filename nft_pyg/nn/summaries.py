"""Per-layer summaries shared by the NF operators and pools, and the HNP typing.

``np_summary`` (the NP pool's layer means) is read by :class:`NPPool` and
:class:`NPConv`; the HNP typing, its summary and the check that a batch fits
an HNP operator by :class:`HNPPool` and :class:`HNPConv`. They live below
both so that operators never import pools.

Under HNP (only hidden neurons permutable) every weight and bias entry has a
*type*: the part of its index that no permutation moves. A hidden weight
layer is one type, a column of :math:`W_1` (one input neuron) is a type, a
row of :math:`W_L` (one output neuron) is a type, each hidden bias layer is
one type and each output bias is a type.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch_geometric.utils import scatter

from ..tensor.hnp_dense import hnp_num_types
from .structure import WeightGraphIndex


# --- NP ------------------------------------------------------------------------
def np_summary(x: Tensor, edge_attr: Tensor, index: WeightGraphIndex,
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
        edge_means = index.edge_layer_mean(edge_attr)          # [B, L_g, C]
    else:
        edge_means = _edge_layer_mean_from_nodes(in_mean, index)
    node_means = index.node_layer_mean(x)[:, 1:]               # [B, L_g, C]
    summary = torch.stack([edge_means, node_means], dim=1)     # [B, 2, L_g, C]
    missing = num_layers - index.num_layers
    return torch.nn.functional.pad(summary, (0, 0, 0, missing)) if missing else summary


def _edge_layer_mean_from_nodes(in_mean: Tensor, index: WeightGraphIndex) -> Tensor:
    """``[B, L, C]`` edge-layer means from in-edge means weighted by in-degree."""
    num_groups = index.num_graphs * index.num_layers
    degree = index.in_degree.to(in_mean.dtype)
    sums = scatter(in_mean * degree.unsqueeze(-1), index.node_weight_group, 0,
                   dim_size=num_groups, reduce="sum")
    counts = scatter(degree, index.node_weight_group, 0, dim_size=num_groups,
                     reduce="sum").clamp(min=1)
    return (sums / counts.unsqueeze(-1)).view(index.num_graphs, index.num_layers, -1)


# --- complete batches of one architecture ---------------------------------------
@dataclass
class LayerGrid:
    """The ``"grid"`` part: a batch of ``num_graphs`` complete networks of one
    architecture, each graph's nodes by layer in position order (``node_counts``)
    and edges by weight layer, row-major (``edge_counts``, ``shapes``
    ``(n_l, n_{l-1})``). Operators
    then read weight layer ``l`` as a view ``[B, n_l, n_{l-1}, C]`` of the edge
    features (a mean over an axis is a row / column mean, a gather a broadcast)."""

    num_graphs: int
    node_counts: list[int]
    edge_counts: list[int]
    shapes: list[tuple[int, int]]

    def weight_views(self, edge_attr: Tensor) -> list[Tensor]:
        """``[B, n_l, n_{l-1}, C]`` for every weight layer, views of ``edge_attr``."""
        B, C = self.num_graphs, edge_attr.size(-1)
        return [piece.view(B, rows, cols, C) for piece, (rows, cols) in zip(
            edge_attr.view(B, -1, C).split(self.edge_counts, 1), self.shapes)]

    def neuron_means(self, weights: list[Tensor]) -> tuple[Tensor, Tensor]:
        """``[N, C]`` each: the mean of the edges into / out of every neuron (zero
        where it has none) from the :meth:`weight_views`: no scatter."""
        B, C = self.num_graphs, weights[0].size(-1)
        into = [weights[0].new_zeros(B, self.node_counts[0], C)] + [w.mean(2) for w in weights]
        out_of = [w.mean(1) for w in weights] + [weights[0].new_zeros(B, self.node_counts[-1], C)]
        return torch.cat(into, 1).view(-1, C), torch.cat(out_of, 1).view(-1, C)


def layer_grid(index: WeightGraphIndex) -> LayerGrid | None:
    """The ``"grid"`` part of ``index``, or ``None`` if its batch is not one (mixed
    architectures, pruned networks, ...)."""
    return index.part("grid", _build_grid)


def _build_grid(index: WeightGraphIndex) -> LayerGrid | None:
    B, L = index.num_graphs, index.num_layers
    if B == 0 or L == 0 or index.num_nodes % B or index.num_edges % B:
        return None
    node_layer = index.node_layer.view(B, -1)
    counts = torch.bincount(node_layer[0], minlength=L + 1)
    first = torch.repeat_interleave(torch.arange(L + 1, device=counts.device), counts)
    if first.numel() != node_layer.size(1) or not torch.equal(node_layer, first.expand_as(
            node_layer)):
        return None
    node_counts = counts.tolist()
    position = torch.cat([torch.arange(count) for count in node_counts]).to(index.node_pos.device)
    if not torch.equal(index.node_pos.view(B, -1), position.expand(B, -1)):
        return None     # the views put neuron p of a layer at place p
    shapes = [(node_counts[l], node_counts[l - 1]) for l in range(1, L + 1)]
    if index.num_edges // B != sum(rows * cols for rows, cols in shapes):
        return None
    offsets = [0]
    for count in node_counts:
        offsets.append(offsets[-1] + count)
    dst, src = [], []
    for l, (rows, cols) in enumerate(shapes, start=1):
        dst.append((offsets[l] + torch.arange(rows)).repeat_interleave(cols))
        src.append((offsets[l - 1] + torch.arange(cols)).repeat(rows))
    shift = (torch.arange(B) * node_layer.size(1)).view(-1, 1)
    expected = torch.stack([(torch.cat(src) + shift).view(-1), (torch.cat(dst) + shift).view(-1)])
    if not torch.equal(index.edge_index.cpu(), expected):
        return None
    return LayerGrid(B, node_counts, [rows * cols for rows, cols in shapes], shapes)


# --- HNP -----------------------------------------------------------------------
@dataclass
class HNPTyping:
    """The ``"hnp"`` part of an index: HNP types of its edges and nodes.

    Attributes:
        num_layers, num_inputs, num_outputs (int): ``L``, :math:`n_0`, :math:`n_L`
            shared by every graph of the batch (``problem`` says why not, else
            ``None``; the tensors below are then ``None``).
        edge_type (Tensor): ``[E]`` in ``0 .. T_E - 1``.
        node_type (Tensor): ``[N]`` in ``T_E .. T_E + T_N - 1``; ``-1`` for
            input neurons (they carry no parameters).
        num_types (int): ``G = T_E + T_N``.
        edge_glob_id, node_glob_id (Tensor): ``[E]`` / ``[N]`` row ``b * G + type``
            of each entry in the flattened ``[B * G]`` summary (input neurons: their
            graph's type 0).
        has_params (Tensor): ``[N, 1]`` bool, ``False`` on input neurons.
        summary_ids (Tensor): ``[E + N']`` the (graph, type) row of every edge and
            of every neuron with parameters; ``summary_count`` ``[B * G, 1]``: the
            number of entries of each (graph, type), at least 1.
        sum_rows (_EdgeSumRows): neurons whose edge sums make up the edge types.
    """

    num_layers: int
    num_inputs: int
    num_outputs: int
    problem: str | None
    edge_type: Tensor | None = None
    node_type: Tensor | None = None
    num_types: int = 0
    edge_glob_id: Tensor | None = None
    node_glob_id: Tensor | None = None
    has_params: Tensor | None = None
    summary_ids: Tensor | None = None
    summary_count: Tensor | None = None
    sum_rows: _EdgeSumRows | None = None


@dataclass
class _EdgeSumRows:
    """``sources``: input neurons (their out-edges are the columns of :math:`W_1`);
    ``targets``: neurons of layers ``2 .. L`` (their in-edges are the hidden
    weight layers and the rows of :math:`W_L`); ``with_params``: every
    non-input neuron; ``ids`` the (graph, type) row of each, in that order."""

    sources: Tensor
    out_degree: Tensor
    targets: Tensor
    in_degree: Tensor
    with_params: Tensor
    ids: Tensor


def hnp_typing(index: WeightGraphIndex) -> HNPTyping:
    r"""The ``"hnp"`` part of ``index``: types of every edge and node, in the
    order of :math:`\mathbf{g}`.

    For ``L >= 2``: edge types ``0 .. n_0 - 1`` are the columns of
    :math:`W_1` (by input position), then one type per hidden weight layer
    :math:`2 .. L-1`, then the rows of :math:`W_L` (by output position);
    node types follow: one per hidden neuron layer :math:`1 .. L-1`, then one
    per output neuron. For ``L = 1`` nothing is permutable: each entry of
    :math:`W_1` (row-major) and of :math:`b_1` is its own type.
    """
    return index.part("hnp", _build_typing)


def check_hnp(where: str, index: WeightGraphIndex, num_layers: int, num_inputs: int,
              num_outputs: int) -> HNPTyping:
    """The typing of ``index``, or a ``ValueError`` naming ``where`` if the batch does
    not fit an HNP module built for ``(num_layers, num_inputs, num_outputs)``."""
    typing = hnp_typing(index)
    if typing.problem is not None:
        raise ValueError(f"{where}: {typing.problem}")
    for name, found, expected in (("num_layers", typing.num_layers, num_layers),
                                  ("num_inputs", typing.num_inputs, num_inputs),
                                  ("num_outputs", typing.num_outputs, num_outputs)):
        if found != expected:
            raise ValueError(f"{where}: every graph of the batch has {name}={found} but the "
                             f"module was built for {name}={expected}; HNP parameters are "
                             "typed by the depth and the input / output positions")
    return typing


def _build_typing(index: WeightGraphIndex) -> HNPTyping:
    L, n_in, n_out = index.num_layers, *_io_counts(index)
    problem = _structure_problem(index, L, n_in, n_out)
    if problem is not None:
        return HNPTyping(L, n_in, n_out, problem)
    src, dst, pos = index.src, index.dst, index.node_pos
    layer = index.edge_layer
    num_edge_types, num_node_types = hnp_num_types(L, n_in, n_out)
    if L == 1:
        edge_type = pos[dst] * n_in + pos[src]
        hidden_node_type = torch.zeros_like(index.node_layer)  # no hidden neurons
    else:
        edge_type = torch.where(
            layer == 1, pos[src],
            torch.where(layer == L, n_in + L - 2 + pos[dst], n_in + layer - 2))
        hidden_node_type = index.node_layer - 1
    node_type = torch.where(index.is_output, L - 1 + pos, hidden_node_type)
    node_type = torch.where(index.is_input, -1, num_edge_types + node_type)
    num_types = num_edge_types + num_node_types
    is_node = node_type >= 0
    edge_glob_id = index.edge_batch * num_types + edge_type
    node_glob_id = index.node_batch * num_types + node_type.clamp(min=0)
    summary_ids = torch.cat([edge_glob_id, node_glob_id[is_node]])
    summary_count = torch.bincount(summary_ids, minlength=index.num_graphs * num_types)

    sources = index.is_input.nonzero().view(-1)
    targets = (index.node_layer >= 2).nonzero().view(-1)
    with_params = is_node.nonzero().view(-1)
    edge_id = torch.zeros_like(node_glob_id)     # edge type row of a neuron's edges
    edge_id[src] = edge_glob_id                  # overwritten by in-edges below,
    edge_id[dst] = edge_glob_id                  # except for input neurons
    ids = torch.cat([edge_id[sources], edge_id[targets], node_glob_id[with_params]])
    sum_rows = _EdgeSumRows(sources, index.out_degree[sources].unsqueeze(1), targets,
                            index.in_degree[targets].unsqueeze(1), with_params, ids)
    return HNPTyping(L, n_in, n_out, None, edge_type, node_type, num_types, edge_glob_id,
                     node_glob_id, is_node.unsqueeze(1), summary_ids,
                     summary_count.clamp(min=1).unsqueeze(1), sum_rows)


def _io_counts(index: WeightGraphIndex) -> tuple[int, int]:
    counts = []
    for mask in (index.is_input, index.is_output):
        per_graph = torch.bincount(index.node_batch[mask], minlength=index.num_graphs)
        counts.append(int(per_graph.max()) if per_graph.numel() else 0)
    return counts[0], counts[1]


def _structure_problem(index: WeightGraphIndex, num_layers: int, num_inputs: int,
                       num_outputs: int) -> str | None:
    """Why the batch is not one HNP typing (``None`` if it is)."""
    num_graphs = index.num_graphs
    depth = scatter(index.edge_layer, index.edge_batch, 0, dim_size=num_graphs, reduce="max")
    if index.edge_layer.numel() == 0 or (depth != num_layers).any():
        found = sorted(set(depth.tolist()))
        return (f"every graph must have the same depth, found depths {found}; HNP "
                "parameters are typed by the layer's distance to the fixed input and output "
                "neurons, so a layer is built for one depth")
    if (index.is_output != (index.node_layer == num_layers)).any() or \
            (index.is_input != (index.node_layer == 0)).any():
        return (f"node_role must be INPUT exactly on node_layer 0 and OUTPUT exactly on "
                f"node_layer {num_layers}")
    for name, mask, expected in (("input", index.is_input, num_inputs),
                                 ("output", index.is_output, num_outputs)):
        counts = torch.bincount(index.node_batch[mask], minlength=num_graphs)
        positions = index.node_pos[mask]
        if (counts != expected).any() or (positions.numel() and int(positions.max()) >= expected):
            return (f"every graph must have the same {name} neurons (node_pos 0..n - 1), "
                    f"found {sorted(set(counts.tolist()))} per graph")
    return None


def hnp_summary(x: Tensor, edge_attr: Tensor, index: WeightGraphIndex, typing: HNPTyping,
                in_mean: Tensor | None = None, out_mean: Tensor | None = None) -> Tensor:
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
    num_graphs, num_types = index.num_graphs, typing.num_types
    if in_mean is None or out_mean is None:
        features = torch.cat([edge_attr, x.index_select(0, typing.sum_rows.with_params)])
        ids = typing.summary_ids
    else:
        rows = typing.sum_rows
        features = torch.cat([out_mean.index_select(0, rows.sources) * rows.out_degree,
                              in_mean.index_select(0, rows.targets) * rows.in_degree,
                              x.index_select(0, rows.with_params)])
        ids = rows.ids
    summary = scatter(features, ids, 0, dim_size=num_graphs * num_types, reduce="sum")
    return (summary / typing.summary_count).view(num_graphs, num_types, -1)


__all__ = ["np_summary", "LayerGrid", "layer_grid", "HNPTyping", "hnp_typing", "check_hnp",
           "hnp_summary"]
