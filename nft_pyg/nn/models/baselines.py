r"""Baselines that the neural functionals are compared against: an MLP on the
flattened weights, weight statistics (StatNN) and a plain GNN on the neuron
graph."""
from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import torch
from torch import Tensor, nn
from torch_geometric.nn import GATv2Conv, GINEConv, TransformerConv, global_mean_pool

from ...graph.accessors import batch_vector, is_input_neuron
from ...graph.layout import Layout
from ..encodings import io_masks, io_neuron_counts
from ..pointwise import graph_attr
from ..statistics import (  # noqa: F401 (re-exported)
    NUM_STATS,
    STAT_QUANTILES,
    graph_layouts,
    group_quantiles,
    group_statistics,
    layer_statistics,
)
from .nfn import hidden_widths, mlp_head


@lru_cache(maxsize=256)
def _signature(layout: str) -> tuple:
    return Layout.coerce(layout).signature


# --- flat MLP -----------------------------------------------------------------
def flatten_weights(graph, where: str = "flatten_weights") -> Tensor:
    """``[B, P]``: each network's raw ``edge_attr`` (canonical edge order,
    row-major, padded kernel positions included) then the biases ``x`` of its
    non-input neurons (canonical node order).

    Every network of the batch must have the same architecture.
    """
    x, edge_attr = graph_attr(graph, "x", where), graph_attr(graph, "edge_attr", where)
    edge_index = graph_attr(graph, "edge_index", where)
    graph_attr(graph, "node_role", where)   # a clear error if it is missing
    batch = batch_vector(graph, x.size(0), x.device)
    num_graphs = int(batch.max()) + 1 if batch.numel() else 0
    layouts = graph_layouts(graph)
    if layouts is not None and len({_signature(text) for text in layouts}) > 1:
        raise ValueError(f"{where}: needs every network of a batch to have the same "
                         f"architecture, got {len(set(layouts))} different layouts")
    params = ~is_input_neuron(graph)
    node_counts = torch.bincount(batch[params], minlength=num_graphs)
    edge_counts = torch.bincount(batch[edge_index[0]], minlength=num_graphs)
    if bool((node_counts != node_counts[0]).any()) or bool((edge_counts != edge_counts[0]).any()):
        raise ValueError(f"{where}: needs every network of a batch to have the same "
                         f"architecture, got networks of {sorted(set(edge_counts.tolist()))} "
                         f"edges and {sorted(set(node_counts.tolist()))} biases")
    # nodes and edges of a batch are grouped by graph, so a reshape splits them
    edges = edge_attr.reshape(num_graphs, -1)
    biases = x[params].reshape(num_graphs, -1)
    return torch.cat([edges, biases], dim=1)


class FlatMLP(nn.Module):
    r"""An MLP on the flattened weight vector of a network.

    The standard non-equivariant baseline of weight-space learning (e.g.
    Navon et al., "Equivariant Architectures for Learning in Deep Weight
    Spaces", ICML 2023; Zhou et al., "Permutation Equivariant Neural
    Functionals", NeurIPS 2023, arXiv 2302.14040):

    .. math::
        f(\mathcal{G}) = \mathrm{MLP}\big(\mathrm{vec}(W_1, \ldots, W_L,
        b_1, \ldots, b_L)\big),

    with the vector of :func:`flatten_weights` (raw ``edge_attr`` in
    canonical order, kernel padding included, then the non-input biases).
    It sees neuron positions, so it is *not* invariant to neuron
    permutations; every network of a batch must share one architecture.
    :meth:`num_weights_of` gives the input size for a graph.

    Args:
        num_weights (int): length :math:`P` of the flattened vector.
        hidden (int or list[int]): hidden widths.
        out (int): output size.
        dropout (float): dropout after each hidden layer.

    Shapes:
        - **input:** raw graph(s) of one architecture.
        - **output:** :math:`(B, \text{out})`.
    """

    def __init__(self, num_weights: int, hidden: int | Sequence[int], out: int,
                 dropout: float = 0.0):
        super().__init__()
        if int(num_weights) < 1 or int(out) < 1:
            raise ValueError(f"FlatMLP: num_weights and out must be >= 1, got {num_weights} "
                             f"and {out}")
        self.num_weights, self.out_channels = int(num_weights), int(out)
        self.mlp = mlp_head(self.num_weights, hidden_widths(hidden, "FlatMLP"),
                            self.out_channels, dropout)

    @staticmethod
    def num_weights_of(graph) -> int:
        """:math:`P` for one raw graph (or a batch of one architecture)."""
        return flatten_weights(graph, "FlatMLP").size(1)

    def reset_parameters(self) -> None:
        for module in self.mlp:
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()

    def forward(self, graph) -> Tensor:
        flat = flatten_weights(graph, "FlatMLP")
        if flat.size(1) != self.num_weights:
            raise ValueError(f"FlatMLP: built for num_weights={self.num_weights}, the "
                             f"networks have {flat.size(1)}")
        return self.mlp(flat)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.num_weights}, out={self.out_channels})"


# --- StatNN -------------------------------------------------------------------
class StatNN(nn.Module):
    r"""An MLP on per-layer statistics of the weights and biases.

    From "Predicting Neural Network Accuracy from Weights" (Unterthiner et
    al., 2020, arXiv 2002.11448): for each weight layer :math:`l`, the mean,
    variance and the 0/25/50/75/100 % quantiles of the entries of
    :math:`W_l` and of :math:`b_l`,

    .. math::
        f(\mathcal{G}) = \mathrm{MLP}\big(\big[\mathrm{stats}(W_l),\
        \mathrm{stats}(b_l)\big]_{l = 1..L}\big) ,

    a vector of :math:`14 L` numbers (:func:`layer_statistics`; padded
    kernel positions are left out, layers a network lacks give zeros). Each
    statistic is a function of a layer's multiset of entries, so the model
    is invariant to every neuron permutation (hidden, input and output).

    Args:
        num_layers (int): :math:`L`, the most weight layers a network may have.
        hidden (int or list[int]): hidden widths of the MLP.
        out (int): output size.
        dropout (float): dropout after each hidden layer.

    Shapes:
        - **input:** raw graph(s) (architectures may differ).
        - **output:** :math:`(B, \text{out})`.
    """

    def __init__(self, num_layers: int, hidden: int | Sequence[int], out: int,
                 dropout: float = 0.0):
        super().__init__()
        if int(num_layers) < 1 or int(out) < 1:
            raise ValueError(f"StatNN: num_layers and out must be >= 1, got {num_layers} "
                             f"and {out}")
        self.num_layers, self.out_channels = int(num_layers), int(out)
        self.mlp = mlp_head(2 * NUM_STATS * self.num_layers,
                            hidden_widths(hidden, "StatNN"), self.out_channels, dropout)

    def reset_parameters(self) -> None:
        for module in self.mlp:
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()

    def forward(self, graph) -> Tensor:
        stats = layer_statistics(graph, self.num_layers, "StatNN")
        return self.mlp(stats.flatten(1))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_layers={self.num_layers}, out={self.out_channels})"


# --- plain GNN ----------------------------------------------------------------
GNN_CONVS = ("gatv2", "transformer", "gine")


class GNNBaseline(nn.Module):
    r"""A plain message-passing GNN on the neuron graph.

    The "graph of the network" baseline (e.g. Kofinas et al., "Graph Neural
    Networks for Learning Equivariant Representations of Neural Networks",
    ICLR 2024; Lim et al., "Graph Metanetworks", ICLR 2024) with standard
    PyG layers that use edge features: :class:`~torch_geometric.nn.GATv2Conv`,
    :class:`~torch_geometric.nn.TransformerConv` or
    :class:`~torch_geometric.nn.GINEConv`. Messages flow both ways along
    every weight (a reverse copy of each edge, told apart by a direction
    flag). Node features are the bias, a one-hot of ``node_layer`` (layers
    ``>= max_layers`` share the last slot) and, with ``io_positions=True``,
    one-hots of the position of input and output neurons; edge features are
    the raw kernel (``edge_dim`` entries) and the direction flag, both
    linearly embedded into ``hidden`` channels:

    .. math::
        \mathbf{h}^{(0)}_v = \mathbf{W}_v \big[b_v,\ \mathrm{onehot}(l_v),\
        \mathrm{io}(v)\big], \quad
        \mathbf{h}^{(k)} = \mathrm{ReLU}\big(\mathrm{Conv}_k(\mathbf{h}^{(k-1)},
        \mathbf{e})\big), \quad
        f(\mathcal{G}) = \mathrm{MLP}\Big(\tfrac{1}{|\mathcal{V}|}
        \textstyle\sum_v \mathbf{h}^{(K)}_v\Big).

    Symmetry: message passing with mean pooling is invariant to any
    relabelling of nodes that keeps the features, so without IO positions
    the model is invariant to the permutations of the neurons of every
    layer, inputs and outputs included (NP-style); with
    ``io_positions=True`` only hidden-neuron permutations remain (HNP-style).
    Unlike NFN layers it has no layer-wide terms beyond what ``num_convs``
    hops of messages reach.

    Residual networks: accepted. Residual edges are edges of the graph like
    any other (their ``edge_attr`` is the identity's weight 1), and a PyG
    conv is equivariant to every permutation of the graph, the permutation
    of a whole residual stream included.

    Args:
        conv (str): ``"gatv2"``, ``"transformer"`` or ``"gine"``.
        hidden (int): hidden channels (divisible by ``heads`` for the
            attention convs).
        out (int): output size.
        num_convs (int): message-passing layers (default 3).
        edge_dim (int): raw edge feature width, the graphs' ``kernel_width``
            (default 1).
        node_dim (int): raw node feature width (default 1: the bias).
        heads (int): attention heads of GATv2 / Transformer (default 1).
        max_layers (int): one-hot size of ``node_layer`` minus one (default 8).
        io_positions (bool): add IO position one-hots (default ``False``).
        num_inputs (int, optional): input neurons (with ``io_positions``).
        num_outputs (int, optional): output neurons (with ``io_positions``).
        head_hidden (int or list[int], optional): hidden widths of the MLP
            head (default ``hidden``).

    Shapes:
        - **input:** raw graph(s): ``x`` :math:`(N, \text{node\_dim})`,
          ``edge_attr`` :math:`(E, \text{edge\_dim})`.
        - **output:** :math:`(B, \text{out})`.
    """

    def __init__(self, conv: str, hidden: int, out: int, num_convs: int = 3,
                 edge_dim: int = 1, node_dim: int = 1, heads: int = 1, max_layers: int = 8,
                 io_positions: bool = False, num_inputs: int | None = None,
                 num_outputs: int | None = None,
                 head_hidden: int | Sequence[int] | None = None):
        super().__init__()
        where = type(self).__name__
        if conv not in GNN_CONVS:
            raise ValueError(f"{where}: conv must be one of {GNN_CONVS}, got {conv!r}")
        for name, value in (("hidden", hidden), ("out", out), ("num_convs", num_convs),
                            ("edge_dim", edge_dim), ("node_dim", node_dim), ("heads", heads),
                            ("max_layers", max_layers)):
            if int(value) < 1:
                raise ValueError(f"{where}: {name} must be >= 1, got {value}")
        if conv != "gine" and hidden % heads:
            raise ValueError(f"{where}: hidden={hidden} must be divisible by heads={heads}")
        if io_positions and (num_inputs is None or num_outputs is None):
            raise ValueError(f"{where}: io_positions=True needs num_inputs and num_outputs "
                             f"(got {num_inputs}, {num_outputs})")
        self.conv_kind, self.hidden, self.out_channels = conv, int(hidden), int(out)
        self.edge_dim, self.node_dim, self.heads = int(edge_dim), int(node_dim), int(heads)
        self.max_layers, self.io_positions = int(max_layers), bool(io_positions)
        self.num_inputs = int(num_inputs) if io_positions else 0
        self.num_outputs = int(num_outputs) if io_positions else 0
        node_features = self.node_dim + self.max_layers + 1 + self.num_inputs + self.num_outputs
        self.node_encoder = nn.Linear(node_features, self.hidden)
        self.edge_encoder = nn.Linear(self.edge_dim + 1, self.hidden)
        self.convs = nn.ModuleList(self._conv() for _ in range(int(num_convs)))
        widths = [self.hidden] if head_hidden is None else hidden_widths(head_hidden, where)
        self.head = mlp_head(self.hidden, widths, self.out_channels)

    def _conv(self) -> nn.Module:
        C = self.hidden
        if self.conv_kind == "gatv2":
            return GATv2Conv(C, C // self.heads, heads=self.heads, edge_dim=C)
        if self.conv_kind == "transformer":
            return TransformerConv(C, C // self.heads, heads=self.heads, edge_dim=C)
        return GINEConv(nn.Sequential(nn.Linear(C, C), nn.ReLU(), nn.Linear(C, C)), edge_dim=C)

    def reset_parameters(self) -> None:
        for module in self.modules():
            if module is not self and hasattr(module, "reset_parameters"):
                module.reset_parameters()

    def node_features(self, graph) -> Tensor:
        """``[N, node_dim + max_layers + 1 (+ num_inputs + num_outputs)]``."""
        where = type(self).__name__
        x = graph_attr(graph, "x", where)
        if x.dim() != 2 or x.size(1) != self.node_dim:
            raise ValueError(f"{where}: built for node_dim={self.node_dim}, got x "
                             f"{tuple(x.shape)}")
        layer = graph_attr(graph, "node_layer", where).clamp(max=self.max_layers)
        parts = [x, nn.functional.one_hot(layer, self.max_layers + 1).to(x.dtype)]
        if self.io_positions:
            is_input, is_output, pos = io_masks(graph, where)
            for kind, mask, count, size in zip(("input", "output"), (is_input, is_output),
                                               io_neuron_counts(graph, where),
                                               (self.num_inputs, self.num_outputs)):
                if count > size:
                    raise ValueError(f"{where}: built for {size} {kind} neurons, "
                                     f"a network has {count}")
                hot = nn.functional.one_hot(pos.clamp(max=size - 1), size).to(x.dtype)
                parts.append(hot * mask.unsqueeze(1))
        return torch.cat(parts, dim=1)

    def forward(self, graph) -> Tensor:
        where = type(self).__name__
        edge_attr = graph_attr(graph, "edge_attr", where)
        edge_index = graph_attr(graph, "edge_index", where)
        if edge_attr.dim() != 2 or edge_attr.size(1) != self.edge_dim:
            raise ValueError(f"{where}: built for edge_dim={self.edge_dim} (the graphs' "
                             f"kernel_width), got edge_attr {tuple(edge_attr.shape)}")
        h = self.node_encoder(self.node_features(graph))
        direction = torch.cat([edge_attr.new_zeros(edge_attr.size(0), 1),
                               edge_attr.new_ones(edge_attr.size(0), 1)])
        edges = torch.cat([edge_attr.repeat(2, 1), direction], dim=1)
        edges = self.edge_encoder(edges)
        both_ways = torch.cat([edge_index, edge_index.flip(0)], dim=1)
        for conv in self.convs:
            h = torch.relu(conv(h, both_ways, edges))
        batch = batch_vector(graph, h.size(0), h.device)
        return self.head(global_mean_pool(h, batch))

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(conv={self.conv_kind!r}, hidden={self.hidden}, "
                f"out={self.out_channels}, num_convs={len(self.convs)}, "
                f"io_positions={self.io_positions})")


__all__ = ["FlatMLP", "StatNN", "GNNBaseline", "flatten_weights", "layer_statistics",
           "group_statistics", "group_quantiles", "STAT_QUANTILES", "GNN_CONVS"]
