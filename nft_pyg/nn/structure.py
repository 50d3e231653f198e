"""Index bookkeeping shared by the weight-space operators.

Every NF operator reduces edge and node features over three kinds of
groups: the edges into / out of a neuron, the edges of one weight layer of
one graph, and the neurons of one neuron layer of one graph. A
:class:`LayerStructure` computes those group ids once per batch; it is
cached on the batch (``graph._nft_structure``) so stacked layers share it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor
from torch_geometric.utils import scatter

from ..graph.types import NodeRole

_REQUIRED = ("edge_index", "node_layer", "edge_layer", "node_role", "node_pos")


@dataclass
class LayerStructure:
    """Group ids of a (batched) neuron graph.

    Attributes:
        num_graphs (int): ``B``.
        num_layers (int): ``L``, the largest number of weight layers.
        src, dst (Tensor): ``[E]`` endpoints of each edge.
        edge_layer (Tensor): ``[E]`` weight layer ``1..L``.
        node_layer (Tensor): ``[N]`` neuron layer ``0..L``.
        node_batch (Tensor): ``[N]`` graph of each node.
        edge_group (Tensor): ``[E]`` id ``b * L + (l - 1)`` of (graph, weight layer).
        node_group (Tensor): ``[N]`` id ``b * (L + 1) + l`` of (graph, neuron layer).
    """

    num_graphs: int
    num_layers: int
    num_nodes: int
    src: Tensor
    dst: Tensor
    edge_layer: Tensor
    node_layer: Tensor
    node_role: Tensor
    node_pos: Tensor
    node_batch: Tensor
    edge_batch: Tensor
    edge_group: Tensor
    node_group: Tensor
    _derived: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def of(cls, graph, where: str = "operator") -> LayerStructure:
        """The (cached) structure of a ``NeuronGraph`` or a batch of them."""
        missing = [key for key in _REQUIRED if getattr(graph, key, None) is None]
        if missing:
            raise ValueError(f"{where}: the graph has no {', '.join(missing)}; build it with "
                             "nft_pyg.from_module or keep these attributes")
        batch = getattr(graph, "batch", None)
        tensors = [graph[key] for key in _REQUIRED] + ([batch] if batch is not None else [])
        key = tuple((id(t), t._version) for t in tensors)
        cached = graph.__dict__.get("_nft_structure")
        if cached is not None and cached[0] == key:
            return cached[1]
        edge_dir = getattr(graph, "edge_dir", None)
        if edge_dir is not None and bool((edge_dir != 0).any()):
            raise ValueError(f"{where}: the graph has reverse edges (edge_dir = 1, from "
                             "AddReverseEdges); weight-space operators need the forward edges "
                             "only: use nft_pyg.transforms.forward_edges(graph)")
        if graph.edge_layer.numel() and int(graph.edge_layer.min()) < 1:   # once per graph
            raise ValueError(f"{where}: edge_layer must be 1..L, got "
                             f"{int(graph.edge_layer.min())}")
        structure = cls.build(graph.edge_index, graph.node_layer, graph.edge_layer,
                              graph.node_role, graph.node_pos, batch, graph.num_nodes)
        # kept outside the Data store, so it is never collated or saved
        graph.__dict__["_nft_structure"] = (key, structure)
        return structure

    @classmethod
    def build(cls, edge_index: Tensor, node_layer: Tensor, edge_layer: Tensor,
              node_role: Tensor, node_pos: Tensor, batch: Tensor | None,
              num_nodes: int) -> LayerStructure:
        if batch is None:
            batch = torch.zeros(num_nodes, dtype=torch.long, device=edge_index.device)
        num_graphs = int(batch.max()) + 1 if num_nodes else 0
        num_layers = int(edge_layer.max()) if edge_layer.numel() else 0
        src, dst = edge_index
        edge_batch = batch[src]
        return cls(num_graphs, num_layers, num_nodes, src, dst, edge_layer, node_layer,
                   node_role, node_pos, batch, edge_batch,
                   edge_batch * num_layers + edge_layer - 1,
                   batch * (num_layers + 1) + node_layer)

    # --- derived index sets, built on first use -----------------------------
    def _cached(self, key, build):
        if key not in self._derived:  # a None result is cached too
            self._derived[key] = build()
        return self._derived[key]

    def edge_layer_plan(self, num_types: int) -> TypePlan | None:
        """How to group edges by weight layer (type ``edge_layer - 1``)."""
        return self._cached(("edge_plan", num_types), lambda: TypePlan.of(
            self.edge_layer - 1, num_types, self.num_graphs))

    def node_layer_plan(self, num_types: int) -> TypePlan | None:
        """How to group neurons by type ``max(node_layer - 1, 0)`` (input neurons
        share type 0 with layer 1)."""
        return self._cached(("node_plan", num_types), lambda: TypePlan.of(
            (self.node_layer - 1).clamp(min=0), num_types, self.num_graphs))

    def neuron_layer_plan(self, num_types: int) -> TypePlan | None:
        """How to group neurons by neuron layer (type ``node_layer``)."""
        return self._cached(("neuron_plan", num_types), lambda: TypePlan.of(
            self.node_layer, num_types, self.num_graphs))

    @property
    def in_degree(self) -> Tensor:
        """``[N]`` number of edges into each neuron."""
        return self._cached("in_degree", lambda: torch.bincount(self.dst,
                                                               minlength=self.num_nodes))

    @property
    def edge_index(self) -> Tensor:
        """``[2, E]`` the edges (source, target)."""
        return self._cached("edge_index", lambda: torch.stack([self.src, self.dst]))

    @property
    def reversed_edge_index(self) -> Tensor:
        """``[2, E]`` edges pointing from target to source (for out-neighbourhoods)."""
        return self._cached("reversed", lambda: torch.stack([self.dst, self.src]))

    def node_weight_group(self, num_layers: int) -> Tensor:
        """``[N]`` id ``b * num_layers + (l - 1)`` of each neuron's (graph, weight
        layer into it); input neurons get their graph's layer-1 id."""
        return self._cached(("node_weight_group", num_layers), lambda: self.node_batch *
                            num_layers + (self.node_layer - 1).clamp(min=0))

    # --- reductions ---------------------------------------------------------
    def in_mean(self, edge_features: Tensor) -> Tensor:
        """``[N, F]``: mean of the features of the edges into each neuron."""
        return scatter(edge_features, self.dst, 0, dim_size=self.num_nodes, reduce="mean")

    def out_mean(self, edge_features: Tensor) -> Tensor:
        """``[N, F]``: mean of the features of the edges out of each neuron."""
        return scatter(edge_features, self.src, 0, dim_size=self.num_nodes, reduce="mean")

    def edge_layer_mean(self, edge_features: Tensor) -> Tensor:
        """``[B, L, F]``: mean over the edges of each weight layer of each graph."""
        means = scatter(edge_features, self.edge_group, 0,
                        dim_size=self.num_graphs * self.num_layers, reduce="mean")
        return means.view(self.num_graphs, self.num_layers, -1)

    def node_layer_mean(self, node_features: Tensor) -> Tensor:
        """``[B, L + 1, F]``: mean over the neurons of each layer of each graph."""
        means = scatter(node_features, self.node_group, 0,
                        dim_size=self.num_graphs * (self.num_layers + 1), reduce="mean")
        return means.view(self.num_graphs, self.num_layers + 1, -1)

    @property
    def is_input(self) -> Tensor:
        return self.node_role == int(NodeRole.INPUT)

    @property
    def is_output(self) -> Tensor:
        return self.node_role == int(NodeRole.OUTPUT)


@dataclass(frozen=True)
class TypePlan:
    """Rows of a feature matrix grouped by an integer type, for per-type maps.

    ``period`` blocks (the graphs of a batch of one layout) each hold
    ``counts[t]`` rows of type ``t``, in type order: ``features.view(period,
    -1, C).split(counts, 1)`` groups them without copying. Otherwise
    ``order`` sorts the rows by type (``period = 1``) and ``inverse`` undoes
    it.
    """

    counts: list[int]
    period: int
    order: Tensor | None = None
    inverse: Tensor | None = None

    @classmethod
    def of(cls, types: Tensor, num_types: int, num_blocks: int) -> TypePlan | None:
        """The plan of ``types`` ``[M]``; ``None`` if a type is outside ``0..num_types-1``."""
        if types.numel() == 0 or int(types.min()) < 0 or int(types.max()) >= num_types:
            return None
        rows = types.numel()
        if num_blocks > 0 and rows % num_blocks == 0:
            block = types.view(num_blocks, -1)
            first = block[0]
            if bool((first[1:] >= first[:-1]).all()) and bool((block == first).all()):
                counts = torch.bincount(first, minlength=num_types).tolist()
                return cls(counts, num_blocks)
        order = torch.sort(types, stable=True).indices
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(rows, device=order.device)
        return cls(torch.bincount(types, minlength=num_types).tolist(), 1, order, inverse)


def check_features(where: str, x: Tensor, edge_attr: Tensor, graph,
                   channels: int | None = None) -> None:
    """Raise a ``ValueError`` naming ``where`` if the features do not fit ``graph``.

    Both must be 2-D (``[N, C]`` and ``[E, C]``) with one row per node / edge
    of ``graph``, and ``channels`` channels (or, without ``channels``, the
    same number).
    """
    if graph is None:
        raise ValueError(f"{where}: needs the graph (structure) as third argument")
    for name, tensor, rows in (("x", x, "N"), ("edge_attr", edge_attr, "E")):
        if not isinstance(tensor, Tensor) or tensor.dim() != 2:
            shape = tuple(tensor.shape) if isinstance(tensor, Tensor) else type(tensor).__name__
            raise ValueError(f"{where}: {name} must be a 2-D tensor [{rows}, C], got {shape}")
        if channels is not None and tensor.size(1) != channels:
            raise ValueError(f"{where}: expected {name} with {channels} channels, got "
                             f"{tensor.size(1)} (the module was built for {channels} channels)")
    if x.size(-1) != edge_attr.size(-1):
        raise ValueError(f"{where}: x has {x.size(-1)} channels but edge_attr has "
                         f"{edge_attr.size(-1)}")
    if x.size(0) != graph.num_nodes:
        raise ValueError(f"{where}: x has {x.size(0)} rows but the graph has "
                         f"{graph.num_nodes} nodes")
    edge_index = getattr(graph, "edge_index", None)
    if edge_index is None:
        raise ValueError(f"{where}: the graph has no edge_index")
    if edge_attr.size(0) != edge_index.size(1):
        raise ValueError(f"{where}: edge_attr has {edge_attr.size(0)} rows but the graph has "
                         f"{edge_index.size(1)} edges")
