"""The per-batch index of a neuron graph: :class:`WeightGraphIndex`.

Every NF operator reduces edge and node features over three kinds of groups:
the edges into / out of a neuron, the edges of one weight layer of one
graph, and the neurons of one neuron layer of one graph. The group ids (and
the row sets an operator derives from them) depend on the structure only,
so they are computed once per batch, in a separate object, and passed to
every operator. Nothing is ever written onto the graph or batch.

The index API
-------------
Build it once per batch (host-side work: ``min`` / ``max`` / ``nonzero``
happen here, never in an operator's forward)::

    index = WeightGraphIndex.from_data(batch)      # Data or Batch of neuron graphs
    index = index.to(device)                        # moves every tensor (and part)

``from_data`` reads ``edge_index``, ``node_layer``, ``edge_layer``,
``node_role``, ``node_pos`` and ``batch`` (optional for one graph) and
rejects an ``edge_index`` outside the nodes, residual edges (``edge_kind``
``RESIDUAL``: the NF operators and NFT attention apply to chains of weight
layers; residual networks go through generic PyG layers), reverse edges
(``edge_dir != 0``), edge layers outside ``1..L`` and neuron layers past
``L``.

Fields (plain tensors, ints and strings; see the class docstring for shapes):
``num_graphs``, ``num_layers`` (``L``, the largest ``edge_layer``),
``num_nodes``, ``num_edges``; ``edge_index`` ``[2, E]`` and its rows
``src`` / ``dst``; ``reversed_edge_index``; ``edge_layer``, ``node_layer``,
``node_role``, ``node_pos``, ``node_batch``, ``edge_batch``;
``edge_group`` (``b * L + l - 1``), ``node_group`` (``b * (L + 1) + l``),
``node_weight_group`` (``b * L + max(l - 1, 0)``); ``in_degree`` /
``out_degree``; ``is_input`` / ``is_output`` (``[N]`` bool); ``edge_plan`` /
``node_plan`` / ``neuron_plan`` (:class:`TypePlan` of the edges by
``edge_layer - 1`` and of the nodes by ``max(node_layer - 1, 0)`` and by
``node_layer``); ``layouts`` / ``kernel_widths`` (the batch's distinct
``layout`` strings and ``kernel_width`` values, or ``None``); and ``parts``,
see below.

How a module receives it (PyG calling conventions):

- operators (``MessagePassing``: ``NPConv``, ``HNPConv``, ``PointwiseConv``,
  ``NFTAttention``): ``conv(x, edge_index, edge_attr, index) -> (x, edge_attr)``,
  so they sit in ``torch_geometric.nn.Sequential`` beside ``GINEConv``,
  with the signature string ``'x, edge_index, edge_attr, index -> x, edge_attr'``;
- pointwise modules, norms, encodings, projections: ``module(x, edge_attr,
  index) -> (x, edge_attr)``; pools: ``pool(x, edge_attr, index) -> [B, F]``;
- ``WeightSpaceSequential(x, edge_attr, index)`` chains both kinds (it passes
  ``index.edge_index`` to the operators);
- models (``NFN``, ...) take the batch and build the index themselves
  (``model(batch)``), or take a prebuilt one: ``model(batch, index=index)``.

Where a module gets a ``Data`` / ``Batch`` instead of an index it builds one
for that call (``WeightGraphIndex.coerce``); pass the index to avoid the
rebuild. Every call checks shapes against the index's ints only (no host
sync).

Operator-specific row sets (``parts``). An operator that needs more than
the fields above derives it from them once per index with
``index.part(name, build)``: ``build(index)`` runs on the first call (eager,
host syncs allowed) and its result is kept in ``index.parts[name]`` (on the
index, never on the data); later calls return it. ``.to(device)`` moves the
parts too (dataclasses, dicts, lists and tuples of tensors). Names in use:
``"grid"`` (:class:`~nft_pyg.nn.summaries.LayerGrid`: a batch of complete
networks of one architecture, or ``None``), ``"np_io"``, ``"hnp"`` (HNP
typing, shared by ``HNPConv`` / ``HNPPool``), ``"hnp_conv"``, ``"io_counts"``
(the most input / output neurons of a network, read by ``IOPositionEncoding``),
``"kernel_layers"`` (kernel sizes and bias flags of each distinct layout, read
by ``KernelReadout``);
NFT attention adds its own. A part may depend only on the index (use the batch's own
``num_layers``, never an operator's).

torch.compile: once the index and the parts an operator uses exist (one
eager forward builds them, or ``WeightGraphIndex.from_data(...)`` followed
by ``model(batch, index=index)``), an operator's forward reads only tensors
and Python ints from it: no graph breaks, no host syncs. The same holds for
the models (``NFN``, ``NFNEditor``, ``NFT``, ``Inr2Array``) given the index:
their checks of the batch's structure read the index, and the checks of raw
values (``KernelProjection``: NaN / inf, entries past a kernel) run only in
eager mode (use :func:`nft_pyg.validate` on a batch a compiled model gets).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch_geometric.utils import scatter

from ..graph.accessors import is_input_neuron, is_output_neuron
from ..graph.validate import check_edge_index, check_no_residual

_REQUIRED = ("edge_index", "node_layer", "edge_layer", "node_role", "node_pos")


@dataclass
class WeightGraphIndex:
    """Group ids of a (batched) neuron graph, built once per batch.

    Attributes:
        num_graphs (int): ``B``.
        num_layers (int): ``L``, the largest number of weight layers.
        num_nodes (int): ``N``.
        num_edges (int): ``E``.
        edge_index (Tensor): ``[2, E]`` (source, target); ``src`` / ``dst`` its rows.
        reversed_edge_index (Tensor): ``[2, E]`` (target, source).
        edge_layer (Tensor): ``[E]`` weight layer ``1..L``.
        node_layer (Tensor): ``[N]`` neuron layer ``0..L``.
        node_role, node_pos (Tensor): ``[N]`` as on the graph.
        node_batch, edge_batch (Tensor): ``[N]`` / ``[E]`` graph of each node / edge.
        edge_group (Tensor): ``[E]`` id ``b * L + (l - 1)`` of (graph, weight layer).
        node_group (Tensor): ``[N]`` id ``b * (L + 1) + l`` of (graph, neuron layer).
        node_weight_group (Tensor): ``[N]`` id ``b * L + max(l - 1, 0)`` of the
            (graph, weight layer into the neuron); input neurons get layer 1's.
        in_degree, out_degree (Tensor): ``[N]`` edges into / out of each neuron.
        is_input, is_output (Tensor): ``[N]`` bool, from ``node_role``
            (:func:`~nft_pyg.graph.accessors.is_input_neuron` /
            ``is_output_neuron``): the one input-neuron mask every operator,
            pool and module that has the index reads.
        edge_plan, node_plan, neuron_plan (TypePlan or None): edges grouped by
            ``edge_layer - 1``, nodes by ``max(node_layer - 1, 0)`` and by ``node_layer``.
        layouts (tuple[str] or None): the batch's distinct ``layout`` strings
            (``None`` if the graphs have none), for modules that check the
            architecture (``KernelReadout``) through a part.
        kernel_widths (tuple[int] or None): the batch's distinct ``kernel_width``
            values (``None`` if the graphs have none).
        parts (dict): operator-specific row sets, see :meth:`part`.
    """

    num_graphs: int
    num_layers: int
    num_nodes: int
    num_edges: int
    edge_index: Tensor
    reversed_edge_index: Tensor
    edge_layer: Tensor
    node_layer: Tensor
    node_role: Tensor
    node_pos: Tensor
    node_batch: Tensor
    edge_batch: Tensor
    edge_group: Tensor
    node_group: Tensor
    node_weight_group: Tensor
    in_degree: Tensor
    out_degree: Tensor
    is_input: Tensor
    is_output: Tensor
    edge_plan: TypePlan | None
    node_plan: TypePlan | None
    neuron_plan: TypePlan | None
    layouts: tuple[str, ...] | None = field(default=None, repr=False)
    kernel_widths: tuple[int, ...] | None = None
    parts: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def src(self) -> Tensor:
        return self.edge_index[0]

    @property
    def dst(self) -> Tensor:
        return self.edge_index[1]

    @classmethod
    def from_data(cls, data, where: str = "WeightGraphIndex") -> WeightGraphIndex:
        """The index of a ``NeuronGraph`` or a ``Batch`` of them (``data`` is only read)."""
        missing = [key for key in _REQUIRED if getattr(data, key, None) is None]
        if missing:
            raise ValueError(f"{where}: the graph has no {', '.join(missing)}; build it with "
                             "nft_pyg.from_module or keep these attributes")
        edge_dir = getattr(data, "edge_dir", None)
        if edge_dir is not None and bool((edge_dir != 0).any()):
            raise ValueError(f"{where}: the graph has reverse edges (edge_dir = 1, from "
                             "AddReverseEdges); weight-space operators need the forward edges "
                             "only: use nft_pyg.transforms.forward_edges(graph)")
        edge_index, num_nodes = data.edge_index, int(data.num_nodes)
        check_edge_index(where, edge_index, num_nodes)
        check_no_residual(getattr(data, "edge_kind", None), edge_index, where)
        edge_layer = data.edge_layer
        if edge_layer.numel() and int(edge_layer.min()) < 1:
            raise ValueError(f"{where}: edge_layer must be 1..L, got {int(edge_layer.min())}")
        node_layer, device = data.node_layer, edge_index.device
        batch = getattr(data, "batch", None)
        if batch is None:
            batch = torch.zeros(num_nodes, dtype=torch.long, device=device)
        num_graphs = int(batch.max()) + 1 if num_nodes else 0
        num_layers = int(edge_layer.max()) if edge_layer.numel() else 0
        if node_layer.numel() and int(node_layer.max()) > num_layers:
            raise ValueError(f"{where}: node_layer goes up to {int(node_layer.max())} but "
                             f"edge_layer only to {num_layers}")
        src, dst = edge_index
        edge_batch = batch[src]
        return cls(
            num_graphs=num_graphs, num_layers=num_layers, num_nodes=num_nodes,
            num_edges=edge_index.size(1), edge_index=edge_index,
            reversed_edge_index=edge_index.flip(0), edge_layer=edge_layer,
            node_layer=node_layer, node_role=data.node_role, node_pos=data.node_pos,
            node_batch=batch, edge_batch=edge_batch,
            edge_group=edge_batch * num_layers + edge_layer - 1,
            node_group=batch * (num_layers + 1) + node_layer,
            node_weight_group=batch * num_layers + (node_layer - 1).clamp(min=0),
            in_degree=torch.bincount(dst, minlength=num_nodes),
            out_degree=torch.bincount(src, minlength=num_nodes),
            is_input=is_input_neuron(data), is_output=is_output_neuron(data),
            edge_plan=TypePlan.of(edge_layer - 1, num_layers, num_graphs),
            node_plan=TypePlan.of((node_layer - 1).clamp(min=0), num_layers, num_graphs),
            neuron_plan=TypePlan.of(node_layer, num_layers + 1, num_graphs),
            layouts=_distinct_layouts(getattr(data, "layout", None)),
            kernel_widths=_distinct_widths(getattr(data, "kernel_width", None)))

    @classmethod
    def coerce(cls, index_or_data, where: str) -> WeightGraphIndex:
        """``index_or_data`` if it is an index, else the index of that graph / batch."""
        if isinstance(index_or_data, WeightGraphIndex):
            return index_or_data
        if index_or_data is None or not hasattr(index_or_data, "edge_index"):
            raise TypeError(f"{where}: expected a WeightGraphIndex (or the Data / Batch to "
                            f"build one from), got {type(index_or_data).__name__}")
        return cls.from_data(index_or_data, where)

    def part(self, name: str, build: Callable[[WeightGraphIndex], Any]) -> Any:
        """The operator-specific part ``name``, built by ``build(self)`` on first use."""
        if name not in self.parts:
            self.parts[name] = build(self)
        return self.parts[name]

    def to(self, device, non_blocking: bool = False) -> WeightGraphIndex:
        """A copy with every tensor (fields and parts) on ``device``."""
        return _move(self, torch.device(device), non_blocking)

    # --- reductions ---------------------------------------------------------
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


def _distinct_layouts(layouts) -> tuple[str, ...] | None:
    if layouts is None:
        return None
    return tuple(dict.fromkeys([layouts] if isinstance(layouts, str) else layouts))


def _distinct_widths(widths) -> tuple[int, ...] | None:
    if widths is None:
        return None
    return tuple(sorted(set(torch.as_tensor(widths).reshape(-1).tolist())))


def _move(obj, device: torch.device, non_blocking: bool):
    if isinstance(obj, Tensor):
        return obj.to(device, non_blocking=non_blocking)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        changes = {f.name: _move(getattr(obj, f.name), device, non_blocking)
                   for f in dataclasses.fields(obj)}
        return dataclasses.replace(obj, **changes) if not _is_frozen(obj) else \
            type(obj)(**changes)
    if isinstance(obj, dict):
        return {key: _move(value, device, non_blocking) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_move(value, device, non_blocking) for value in obj)
    return obj


def _is_frozen(obj) -> bool:
    return type(obj).__dataclass_params__.frozen


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

    ``graph`` is a :class:`WeightGraphIndex` or a ``Data`` / ``Batch``. Both
    features must be 2-D (``[N, C]`` and ``[E, C]``) with one row per node /
    edge, and ``channels`` channels (or, without ``channels``, the same
    number). Only shapes and ints are compared (no host sync).
    """
    if graph is None:
        raise ValueError(f"{where}: needs the index (or graph) as third argument: "
                         f"{where}(x, edge_attr, index)")
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


def operator_inputs(where: str, x, edge_index, edge_attr, index, channels: int,
                    num_layers: int) -> WeightGraphIndex:
    """Check an operator call ``conv(x, edge_index, edge_attr, index)``; return the index.

    A mis-call (arguments of the wrong kind or shape, the graph deeper than
    the operator's ``num_layers``) raises an error that shows the signature.
    """
    signature = f"{where}(x [N, C], edge_index [2, E], edge_attr [E, C], index)"
    if not (isinstance(edge_index, Tensor) and edge_index.dim() == 2 and edge_index.size(0) == 2
            and not edge_index.is_floating_point()):
        got = tuple(edge_index.shape) if isinstance(edge_index, Tensor) else \
            type(edge_index).__name__
        raise TypeError(f"{where}: edge_index must be an integer [2, E] tensor, got {got}; "
                        f"call {signature} with index = WeightGraphIndex.from_data(batch)")
    if not (isinstance(index, WeightGraphIndex) or hasattr(index, "edge_index")):
        raise TypeError(f"{where}: the fourth argument must be the batch's WeightGraphIndex "
                        f"(or the Data / Batch), got {type(index).__name__}; call {signature}")
    index = layer_inputs(where, x, edge_attr, index, channels, num_layers)
    if edge_index.size(1) != index.num_edges:
        raise ValueError(f"{where}: edge_index has {edge_index.size(1)} edges but the index "
                         f"has {index.num_edges}; build the index from the same batch")
    return index


def layer_inputs(where: str, x, edge_attr, index, channels: int,
                 num_layers: int) -> WeightGraphIndex:
    """Check ``module(x, edge_attr, index)`` of a pool or typed module; return the index
    (built from ``index`` if that is a ``Data`` / ``Batch``)."""
    index = WeightGraphIndex.coerce(index, where)
    check_features(where, x, edge_attr, index, channels)
    if index.num_layers > num_layers:
        raise ValueError(f"{where}: the graph has {index.num_layers} weight layers but the "
                         f"module was built for num_layers={num_layers}")
    return index


__all__ = ["WeightGraphIndex", "TypePlan", "check_features",
           "operator_inputs", "layer_inputs"]
