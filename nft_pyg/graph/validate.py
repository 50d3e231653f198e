"""Check every invariant of the neuron-graph format (``docs/graph_format.md``).

:func:`validate` accepts one :class:`~nft_pyg.graph.NeuronGraph` or a PyG
``Batch`` of them and raises :class:`GraphFormatError` at the first broken
invariant, naming the attribute, the offending index (and graph of a batch)
and what was expected. Edges may be missing (a pruned network is valid);
everything else is compared against what the graph's layout implies.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .layout import NORM_KINDS, WEIGHT_KINDS, Layout
from .neuron_graph import EDGE_IDS, NODE_IDS, NORM_IDENTITY
from .types import Activation, EdgeKind, NodeRole

_STEP_KINDS = (*WEIGHT_KINDS, *NORM_KINDS, "act", "pool", "flatten", "dropout", "residual")


class GraphFormatError(ValueError):
    """A neuron graph breaks an invariant of the format."""


def validate(graph: Any, *, allow_nonfinite: bool = False, raw: bool | None = None) -> None:
    """Raise :class:`GraphFormatError` unless ``graph`` is a well-formed neuron graph.

    Args:
        graph (NeuronGraph or Batch): a single graph or a batch of graphs
            (ids unshifted, ``edge_index`` shifted, ``batch`` / ``ptr`` as
            made by ``Batch.from_data_list`` or a ``DataLoader``).
        allow_nonfinite (bool): accept NaN / inf in ``x``, ``edge_attr`` and
            ``node_norm`` (default: reject them).
        raw (bool, optional): whether the graph holds raw weights. Raw graphs
            are also checked for zero kernel padding and zero biases on input
            neurons and bias-free layers; feature graphs (``x`` ``[N, C]``,
            ``edge_attr`` ``[E, C * kernel_width]``) for structure only.
            Default: raw when ``x`` has one channel.
    """
    if _is_batch(graph):
        _validate_batch(graph, allow_nonfinite, raw)
    else:
        _Checker(graph, "graph", allow_nonfinite, raw).run()


# --- cheap checks for operators ----------------------------------------------------
def has_residual(edge_kind: Tensor | None) -> bool:
    """Whether a graph's ``edge_kind`` holds residual edges (``EdgeKind.RESIDUAL``).

    Operators whose math assumes a chain of weight layers (the NP / HNP
    layers, NFT attention, the dense twins) call :func:`check_no_residual`.
    """
    return edge_kind is not None and bool((edge_kind == int(EdgeKind.RESIDUAL)).any())


def check_no_residual(edge_kind: Tensor | None, edge_index: Tensor, where: str) -> None:
    """Raise ``ValueError`` naming the first residual edge, for operators that
    do not apply to residual networks (``where``: the operator's name)."""
    if not has_residual(edge_kind):
        return
    edge = _first(edge_kind == int(EdgeKind.RESIDUAL))
    src, dst = (int(v) for v in edge_index[:, edge])
    raise ValueError(f"{where}: edge {edge} ({src} -> {dst}) is a residual connection "
                     f"(edge_kind RESIDUAL); {where} applies to chains of weight layers "
                     "only. Residual networks go through generic GNN layers "
                     "(see docs/graph_format.md, residual connections)")


def check_edge_index(where: str, edge_index: Tensor, num_nodes: int,
                     nodes: str = "the graph") -> None:
    """``edge_index`` a ``long`` ``[2, E]`` tensor with every entry in
    ``[0, num_nodes)``, else a ``ValueError`` naming ``where`` and the first
    edge outside (``nodes`` says whose nodes). One min / max over ``edge_index``."""
    if not isinstance(edge_index, Tensor) or edge_index.dim() != 2 or edge_index.size(0) != 2:
        shape = tuple(edge_index.shape) if isinstance(edge_index, Tensor) else \
            type(edge_index).__name__
        raise ValueError(f"{where}: expected edge_index as a [2, E] tensor, got {shape}")
    if edge_index.dtype != torch.long:
        raise ValueError(f"{where}: expected edge_index of dtype torch.long, got "
                         f"{edge_index.dtype}")
    if edge_index.numel():
        low, high = int(edge_index.min()), int(edge_index.max())
        if low < 0 or high >= num_nodes:
            bad = low if low < 0 else high
            edge = _first((edge_index == bad).any(0))
            raise ValueError(f"{where}: edge_index[:, {edge}] = {edge_index[:, edge].tolist()} "
                             f"refers to node {bad}, outside the {num_nodes} nodes of {nodes}")


def check_operator_inputs(where: str, x: Tensor, edge_index: Tensor,
                          edge_attr: Tensor | None = None, *, channels: int | None = None,
                          finite: bool = False) -> None:
    """Cheap invariants of an operator's inputs, with errors naming ``where``.

    Checks: ``x`` a floating ``[N, C]`` tensor; ``edge_index`` a ``long``
    ``[2, E]`` tensor with every index in ``[0, N)``; ``edge_attr`` (when
    given) ``[E, *]`` of ``x``'s dtype and device; ``channels`` (when given)
    the feature width of ``x``; with ``finite=True`` no NaN / inf in ``x`` or
    ``edge_attr`` (one reduction each). Costs one min / max over
    ``edge_index``; meant to run once per forward.
    """
    if not isinstance(x, Tensor) or x.dim() != 2 or not x.is_floating_point():
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{where}: expected x as a floating [N, C] tensor, got {shape}"
                         f"{' of ' + str(x.dtype) if isinstance(x, Tensor) else ''}")
    if channels is not None and x.size(1) != channels:
        raise ValueError(f"{where}: expected x with {channels} channels, got {x.size(1)}")
    check_edge_index(where, edge_index, x.size(0), "x")
    if edge_attr is not None:
        if not isinstance(edge_attr, Tensor) or edge_attr.dim() < 1 \
                or edge_attr.size(0) != edge_index.size(1):
            shape = tuple(edge_attr.shape) if isinstance(edge_attr, Tensor) else \
                type(edge_attr).__name__
            raise ValueError(f"{where}: expected edge_attr with one row per edge "
                             f"({edge_index.size(1)}), got {shape} (was edge_attr passed "
                             "where edge_index belongs?)")
        if edge_attr.dtype != x.dtype or edge_attr.device != x.device:
            raise ValueError(f"{where}: edge_attr is {edge_attr.dtype} on {edge_attr.device} "
                             f"but x is {x.dtype} on {x.device}")
    if finite:
        for name, value in (("x", x), ("edge_attr", edge_attr)):
            if value is not None and not bool(torch.isfinite(value.sum())) \
                    and not bool(torch.isfinite(value).all()):
                row = _first(~torch.isfinite(value).all(-1) if value.dim() > 1
                             else ~torch.isfinite(value))
                raise ValueError(f"{where}: {name} holds NaN or inf (row {row})")


def _fail(where: str, attribute: str, message: str) -> None:
    raise GraphFormatError(f"{where}: '{attribute}' {message}")


def _is_batch(graph: Any) -> bool:
    return getattr(graph, "batch", None) is not None or isinstance(
        getattr(graph, "layout", None), (list, tuple))


def _first(mask: Tensor) -> int:
    return int(mask.nonzero()[0, 0])


# --- batches -----------------------------------------------------------------
def _validate_batch(batch: Any, allow_nonfinite: bool, raw: bool | None) -> None:
    where = "batch"
    for key in ("batch", "ptr", "x", "edge_index", "layout", "kernel_width"):
        if getattr(batch, key, None) is None:
            _fail(where, key, "is missing (a batch needs it; build batches with "
                  "Batch.from_data_list or a torch_geometric DataLoader)")
    layouts = batch.layout
    if not isinstance(layouts, (list, tuple)):
        _fail(where, "layout", f"should be a list of one JSON string per graph, got "
              f"{type(layouts).__name__}")
    num_graphs = len(layouts)
    vector, ptr = batch.batch, batch.ptr
    _check_tensor(where, "batch", vector, torch.long, (batch.x.size(0),))
    _check_tensor(where, "ptr", ptr, torch.long, (num_graphs + 1,))
    if vector.numel() and (int(vector.min()) < 0 or int(vector.max()) >= num_graphs):
        _fail(where, "batch", f"holds graph ids outside [0, {num_graphs}) "
              f"({num_graphs} layouts)")
    counts = torch.bincount(vector, minlength=num_graphs)
    if vector.numel() > 1 and bool((vector[1:] < vector[:-1]).any()):
        index = _first(vector[1:] < vector[:-1]) + 1
        _fail(where, "batch", f"is not sorted: node {index} belongs to graph "
              f"{int(vector[index])} after a node of graph {int(vector[index - 1])}")
    expected_ptr = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
    if not torch.equal(ptr.cpu(), expected_ptr.cpu()):
        _fail(where, "ptr", f"is {ptr.tolist()}, expected the node offsets "
              f"{expected_ptr.tolist()} of the batch vector")
    _check_tensor(where, "edge_index", batch.edge_index, torch.long, (2, None))
    edge_index = batch.edge_index
    if edge_index.numel() and (int(edge_index.min()) < 0
                               or int(edge_index.max()) >= batch.x.size(0)):
        bad = _first(((edge_index < 0) | (edge_index >= batch.x.size(0))).any(0))
        _fail(where, "edge_index", f"edge {bad} points to node "
              f"{edge_index[:, bad].tolist()}, outside [0, {batch.x.size(0)})")
    edge_graph = vector[edge_index[0]]
    crossing = edge_graph != vector[edge_index[1]]
    if bool(crossing.any()):
        bad = _first(crossing)
        _fail(where, "edge_index", f"edge {bad} joins graph {int(edge_graph[bad])} to graph "
              f"{int(vector[edge_index[1, bad]])}")
    if edge_graph.numel() > 1 and bool((edge_graph[1:] < edge_graph[:-1]).any()):
        bad = _first(edge_graph[1:] < edge_graph[:-1]) + 1
        _fail(where, "edge_index", f"edges are not grouped by graph: edge {bad} belongs to "
              f"graph {int(edge_graph[bad])} after an edge of graph {int(edge_graph[bad - 1])}")
    kernel_width = batch.kernel_width
    _check_tensor(where, "kernel_width", kernel_width, torch.long, (num_graphs,))
    # the per-graph slices below would not see rows past the batch's node / edge count
    for keys, count, what in (((*NODE_IDS, "node_norm"), batch.x.size(0), "nodes"),
                              ((*EDGE_IDS, "edge_attr"), edge_index.size(1), "edges")):
        for key in keys:
            value = getattr(batch, key, None)
            if isinstance(value, Tensor) and value.dim() and value.size(0) != count:
                _fail(where, key, f"has {value.size(0)} rows, the batch has {count} {what}")
    edge_counts = torch.bincount(edge_graph, minlength=num_graphs).tolist()
    edge_start = 0
    for index in range(num_graphs):
        start, stop = int(ptr[index]), int(ptr[index + 1])
        edges = slice(edge_start, edge_start + edge_counts[index])
        edge_start = edges.stop
        _Checker(_slice(batch, index, start, stop, edges), f"graph {index} of the batch",
                 allow_nonfinite, raw).run()


class _GraphView:
    """The attributes of one graph of a batch, with ``edge_index`` unshifted."""

    def __init__(self, attributes: dict[str, Any]):
        self.__dict__.update(attributes)

    @property
    def num_nodes(self) -> int:
        return self.x.size(0)


def _slice(batch: Any, index: int, start: int, stop: int, edges: slice) -> _GraphView:
    nodes = slice(start, stop)
    attributes: dict[str, Any] = {
        "x": batch.x[nodes], "edge_index": batch.edge_index[:, edges] - start,
        "layout": batch.layout[index],
        "kernel_width": batch.kernel_width.reshape(-1)[index:index + 1]}
    for key in (*NODE_IDS, "node_norm"):
        value = getattr(batch, key, None)
        attributes[key] = None if value is None else value[nodes]
    for key in (*EDGE_IDS, "edge_attr"):
        value = getattr(batch, key, None)
        attributes[key] = None if value is None else value[edges]
    return _GraphView(attributes)


# --- single graphs -----------------------------------------------------------------
def _check_tensor(where: str, key: str, value: Any, dtype: torch.dtype | str,
                  shape: tuple[int | None, ...]) -> None:
    if value is None:
        _fail(where, key, "is missing")
    if not isinstance(value, Tensor):
        _fail(where, key, f"should be a tensor, got {type(value).__name__}")
    if dtype == "float":
        if not value.is_floating_point():
            _fail(where, key, f"should be a floating-point tensor, got {value.dtype}")
    elif value.dtype != dtype:
        _fail(where, key, f"should have dtype {dtype}, got {value.dtype}")
    if value.dim() != len(shape) or any(
            size is not None and actual != size for actual, size in zip(value.shape, shape)):
        wanted = ", ".join("*" if size is None else str(size) for size in shape)
        _fail(where, key, f"has shape {tuple(value.shape)}, expected [{wanted}]")


class _Checker:
    def __init__(self, graph: Any, where: str, allow_nonfinite: bool, raw: bool | None):
        self.graph, self.where, self.allow_nonfinite = graph, where, allow_nonfinite
        self.raw = raw

    def fail(self, key: str, message: str) -> None:
        _fail(self.where, key, message)

    def run(self) -> None:
        layout = self.check_layout()
        sizes = layout.neuron_layer_sizes
        self.num_nodes = sum(sizes)
        self.offsets = torch.tensor([0] + sizes).cumsum(0).tolist()
        self.check_dtypes_and_shapes(layout)
        self.check_nodes(layout, sizes)
        self.check_edges(layout)
        self.check_values(layout)

    # --- layout and kernel width -------------------------------------------
    def check_layout(self) -> Layout:
        value = getattr(self.graph, "layout", None)
        if value is None:
            self.fail("layout", "is missing (the JSON string of the network's Layout)")
        if not isinstance(value, str):
            self.fail("layout", f"should be a JSON string, got {type(value).__name__}")
        try:
            layout = Layout.coerce(value, "layout")
        except Exception as err:  # malformed JSON, missing keys, inconsistent sizes
            self.fail("layout", f"is not a valid layout ({type(err).__name__}: {err})")
        for index, step in enumerate(layout.steps):
            if step.get("kind") not in _STEP_KINDS or "name" not in step:
                self.fail("layout", f"step {index} {step} should have a 'name' and a 'kind' "
                          f"among {_STEP_KINDS}")
            if step["kind"] == "act" and step.get("act") not in Activation.__members__:
                self.fail("layout", f"step {index} ('{step['name']}') has unknown "
                          f"activation {step.get('act')!r}")
        return layout

    def check_dtypes_and_shapes(self, layout: Layout) -> None:
        graph, num_nodes = self.graph, self.num_nodes
        _check_tensor(self.where, "kernel_width", getattr(graph, "kernel_width", None),
                      torch.long, (1,))
        width = int(graph.kernel_width[0])
        x = getattr(graph, "x", None)
        _check_tensor(self.where, "x", x, "float", (num_nodes, None))
        channels = x.size(1)
        self.is_raw = channels == 1 if self.raw is None else self.raw
        # a feature graph may fold its kernels into channels (kernel_width 1)
        folded = width == 1 and not self.is_raw
        if width < layout.kernel_width and not folded:
            self.fail("kernel_width", f"is {width}, smaller than the layout's largest kernel "
                      f"({layout.kernel_width} positions)" + (
                          "" if self.is_raw else "; a feature graph with folded kernels has "
                          "kernel_width 1"))
        if channels < 1:
            self.fail("x", "has no channels; a raw graph has x [N, 1] (the biases)")
        _check_tensor(self.where, "edge_index", getattr(graph, "edge_index", None),
                      torch.long, (2, None))
        num_edges = graph.edge_index.size(1)
        _check_tensor(self.where, "edge_attr", getattr(graph, "edge_attr", None), "float",
                      (num_edges, channels * width))
        if graph.edge_attr.dtype != x.dtype:
            self.fail("edge_attr", f"has dtype {graph.edge_attr.dtype}, x has {x.dtype}; "
                      "they should match")
        for key in NODE_IDS:
            _check_tensor(self.where, key, getattr(graph, key, None), torch.long, (num_nodes,))
        for key in EDGE_IDS:
            _check_tensor(self.where, key, getattr(graph, key, None), torch.long, (num_edges,))
        _check_tensor(self.where, "node_norm", getattr(graph, "node_norm", None), "float",
                      (num_nodes, len(NORM_IDENTITY)))
        if num_nodes != self.graph.num_nodes:
            self.fail("num_nodes", f"is {self.graph.num_nodes}, the layout has {num_nodes} "
                      "neurons")

    # --- node ids -------------------------------------------------------------
    def check_nodes(self, layout: Layout, sizes: list[int]) -> None:
        graph, num_layers = self.graph, len(sizes) - 1
        node_layer = graph.node_layer
        outside = (node_layer < 0) | (node_layer > num_layers)
        if bool(outside.any()):
            node = _first(outside)
            self.fail("node_layer", f"of node {node} is {int(node_layer[node])}, outside "
                      f"[0, {num_layers}] (the layout has {num_layers} weight layers)")
        expected_layer = torch.repeat_interleave(torch.arange(num_layers + 1),
                                                 torch.tensor(sizes)).to(node_layer.device)
        if not torch.equal(node_layer, expected_layer):
            counts = torch.bincount(node_layer, minlength=num_layers + 1).tolist()
            if counts != sizes:
                self.fail("node_layer", f"gives layer sizes {counts}, the layout has {sizes}")
            node = _first(node_layer != expected_layer)
            self.fail("node_layer", f"is not sorted by layer: node {node} is in layer "
                      f"{int(node_layer[node])}, expected {int(expected_layer[node])}")
        expected_pos = torch.cat([torch.arange(n) for n in sizes]).to(node_layer.device)
        wrong = graph.node_pos != expected_pos
        if bool(wrong.any()):
            node = _first(wrong)
            self.fail("node_pos", f"of node {node} (layer {int(node_layer[node])}) is "
                      f"{int(graph.node_pos[node])}, expected {int(expected_pos[node])}: "
                      "positions run 0..n_l-1 in node order within each layer")
        expected_role = torch.full_like(node_layer, int(NodeRole.HIDDEN))
        expected_role[node_layer == 0] = int(NodeRole.INPUT)
        expected_role[node_layer == num_layers] = int(NodeRole.OUTPUT)
        self._compare_ids("node_role", "node", graph.node_role, expected_role, NodeRole)
        # an Identity module is a no-op: it does not replace the layer's activation
        expected_act = torch.full_like(node_layer, int(Activation.IDENTITY))
        for layer, step in layout.steps_by_neuron_layer():
            if step["kind"] == "act" and layer > 0 and step["act"] != Activation.IDENTITY.name:
                expected_act[node_layer == layer] = int(Activation[step["act"]])
        self._compare_ids("node_act", "node", graph.node_act, expected_act, Activation,
                          " (the layout's activation of its layer)")

    def _compare_ids(self, key: str, what: str, actual: Tensor, expected: Tensor, codes,
                     why: str = "") -> None:
        wrong = actual != expected
        if bool(wrong.any()):
            index = _first(wrong)
            self.fail(key, f"of {what} {index} is {_code_name(codes, int(actual[index]))}, "
                      f"expected {_code_name(codes, int(expected[index]))}{why}")

    # --- edges -------------------------------------------------------------------
    def check_residual_edges(self, layout: Layout) -> int:
        """Residual edges: after all weight edges, exactly the layout's connections.
        Returns how many weight edges precede them."""
        graph = self.graph
        residual = graph.edge_kind == int(EdgeKind.RESIDUAL)
        count = int(residual.sum())
        total = residual.numel()
        if count and bool(residual[: total - count].any()):
            self.fail("edge_kind", f"edge {_first(residual)} is a residual edge before a "
                      "weight edge; residual edges come after all weight edges")
        expected_index, expected_layer = [], []
        sizes = layout.neuron_layer_sizes
        for source, target in sorted(layout.residuals(), key=lambda pair: (pair[1], pair[0])):
            positions = torch.arange(sizes[target])
            expected_index.append(torch.stack([positions + self.offsets[source],
                                               positions + self.offsets[target]]))
            expected_layer.append(torch.full((sizes[target],), target))
        expected = torch.cat(expected_index, 1) if expected_index else \
            torch.zeros(2, 0, dtype=torch.long)
        found = graph.edge_index[:, total - count:].cpu()
        if found.shape != expected.shape or not torch.equal(found, expected):
            self.fail("edge_index", f"has {count} residual edges; the layout's residual "
                      f"connections give {expected.size(1)}: neuron p of the source layer to "
                      "neuron p of the target layer, sorted by target")
        if count and not torch.equal(graph.edge_layer[total - count:].cpu(),
                                     torch.cat(expected_layer)):
            self.fail("edge_layer", "of a residual edge is not its target's neuron layer")
        return total - count

    def check_edges(self, layout: Layout) -> None:
        graph, num_nodes = self.graph, self.num_nodes
        layers = layout.weight_layers()
        weights = self.check_residual_edges(layout)
        edge_index, edge_layer = graph.edge_index, graph.edge_layer
        if edge_index.numel():
            outside = ((edge_index < 0) | (edge_index >= num_nodes)).any(0)
            if bool(outside.any()):
                edge = _first(outside)
                self.fail("edge_index", f"edge {edge} is {edge_index[:, edge].tolist()}, "
                          f"outside the node range [0, {num_nodes})")
        edge_index, edge_layer = edge_index[:, :weights], edge_layer[:weights]
        outside = (edge_layer < 1) | (edge_layer > len(layers))
        if bool(outside.any()):
            edge = _first(outside)
            self.fail("edge_layer", f"of edge {edge} is {int(edge_layer[edge])}, outside "
                      f"[1, {len(layers)}]")
        src, dst = edge_index
        node_layer = graph.node_layer
        wrong = node_layer[dst] != edge_layer
        if bool(wrong.any()):
            edge = _first(wrong)
            self.fail("edge_layer", f"of edge {edge} is {int(edge_layer[edge])} but its "
                      f"target node {int(dst[edge])} is in neuron layer "
                      f"{int(node_layer[dst[edge]])}")
        wrong = node_layer[src] != edge_layer - 1
        if bool(wrong.any()):
            edge = _first(wrong)
            self.fail("edge_index", f"edge {edge} goes from node {int(src[edge])} (layer "
                      f"{int(node_layer[src[edge]])}) to node {int(dst[edge])} (layer "
                      f"{int(node_layer[dst[edge]])}); edges go from layer l-1 to layer l")
        kinds = torch.tensor([int(_edge_kind(layer)) for layer in layers],
                             dtype=torch.long, device=edge_layer.device)
        self._compare_ids("edge_kind", "edge", graph.edge_kind[:weights], kinds[edge_layer - 1],
                          EdgeKind, " (the kind of its weight layer in the layout)")
        for layer in layers:
            if layer.groups == 1:
                continue
            mask = edge_layer == layer.index
            in_group = layer.in_neurons // layer.groups
            group_of_dst = (dst[mask] - self.offsets[layer.index]) // (
                layer.out_neurons // layer.groups)
            local = src[mask] - self.offsets[layer.index - 1] - group_of_dst * in_group
            wrong = (local < 0) | (local >= in_group)
            if bool(wrong.any()):
                edge = int(mask.nonzero().flatten()[_first(wrong)])
                self.fail("edge_index", f"edge {edge} joins neurons of different groups of "
                          f"the grouped layer '{layer.name}' (groups={layer.groups})")
        # canonical order: (layer, target, source) strictly increasing
        key = (edge_layer * num_nodes + dst) * num_nodes + src
        if key.numel() > 1:
            unique, counts = torch.unique(key, return_counts=True)
            if bool((counts > 1).any()):
                duplicate = unique[counts > 1][0]
                edges = (key == duplicate).nonzero().flatten().tolist()
                self.fail("edge_index", f"has duplicate edges {edges} "
                          f"({int(src[edges[0]])} -> {int(dst[edges[0]])})")
            unsorted = key[1:] < key[:-1]
            if bool(unsorted.any()):
                edge = _first(unsorted) + 1
                self.fail("edge_index", f"is not in canonical order: edge {edge} "
                          f"({int(src[edge])} -> {int(dst[edge])}, layer "
                          f"{int(edge_layer[edge])}) comes after edge {edge - 1}; edges are "
                          "sorted by layer, then target, then source")

    # --- values ---------------------------------------------------------------
    def check_values(self, layout: Layout) -> None:
        graph = self.graph
        if not self.allow_nonfinite:
            for key in ("x", "edge_attr", "node_norm"):
                bad = ~torch.isfinite(getattr(graph, key))
                if bool(bad.any()):
                    row = _first(bad.any(-1))
                    self.fail(key, f"holds NaN or inf (row {row}); pass allow_nonfinite=True "
                              "to accept non-finite values")
        self.check_node_norm(layout)
        if self.is_raw:
            if graph.x.size(1) != 1:
                self.fail("x", f"has shape {tuple(graph.x.shape)}; a raw graph has x [N, 1]")
            self.check_raw_values(layout)

    def check_node_norm(self, layout: Layout) -> None:
        """Entries that no norm of the layout provides keep their identity default."""
        node_norm = self.graph.node_norm
        provided = torch.zeros(node_norm.shape, dtype=torch.bool, device=node_norm.device)
        for layer, step in layout.steps_by_neuron_layer():
            if step["kind"] in NORM_KINDS:
                rows = slice(self.offsets[layer], self.offsets[layer + 1])
                for column in _norm_columns(step):
                    provided[rows, column] = True
        identity = torch.tensor(NORM_IDENTITY, dtype=node_norm.dtype, device=node_norm.device)
        wrong = ~provided & (node_norm != identity)
        if bool(wrong.any()):
            node, column = wrong.nonzero()[0].tolist()
            self.fail("node_norm", f"of node {node}, column {column} is "
                      f"{float(node_norm[node, column])}, expected the identity default "
                      f"{NORM_IDENTITY[column]} (no norm of the layout sets it)")

    def check_raw_values(self, layout: Layout) -> None:
        graph = self.graph
        width = int(graph.kernel_width[0])
        edge_layer = graph.edge_layer
        weight_edges = graph.edge_kind != int(EdgeKind.RESIDUAL)
        for layer in layout.weight_layers():
            if layer.positions < width:
                mask = (edge_layer == layer.index) & weight_edges
                padding = graph.edge_attr[mask, layer.positions:]
                if bool((padding != 0).any()):
                    edge = int(mask.nonzero().flatten()[_first((padding != 0).any(-1))])
                    self.fail("edge_attr", f"of edge {edge} (layer '{layer.name}', "
                              f"{layer.positions} kernel positions) has nonzero padding in "
                              f"columns {layer.positions}..{width - 1}; expected zeros")
        biased = torch.zeros(self.num_nodes, dtype=torch.bool, device=graph.x.device)
        for layer in layout.weight_layers():
            if layer.bias:
                biased[self.offsets[layer.index]:self.offsets[layer.index + 1]] = True
        wrong = ~biased & (graph.x[:, 0] != 0)
        if bool(wrong.any()):
            node = _first(wrong)
            layer = int(graph.node_layer[node])
            reason = ("an input neuron" if layer == 0 else
                      f"in bias-free layer '{layout.weight_layers()[layer - 1].name}'")
            self.fail("x", f"of node {node} is {float(graph.x[node, 0])}, expected 0 "
                      f"({reason} has no bias)")


def _edge_kind(layer) -> EdgeKind:
    if layer.kind == "conv":
        return EdgeKind.CONV
    return EdgeKind.FLATTEN if layer.kernel_shape else EdgeKind.LINEAR


def _norm_columns(step: dict[str, Any]) -> list[int]:
    columns = []
    if step.get("affine"):
        columns.append(0)
        if step["kind"] == "batchnorm" or step.get("bias"):
            columns.append(1)
    if step["kind"] == "batchnorm" and step.get("track_running_stats"):
        columns += [2, 3]
    return columns


def _code_name(codes, value: int) -> str:
    try:
        return f"{value} ({codes(value).name})"
    except ValueError:
        return f"{value} (not a {codes.__name__} code)"
