"""Networks <-> neuron graphs: ``from_module``, ``to_module`` and state dicts.

Every conversion goes through ``(layout, state_dict)``: a module is
described as a :class:`Layout` plus its state dict, which
:func:`from_state_dict` turns into a :class:`NeuronGraph`;
:func:`to_state_dict` and :func:`to_module` read it back. All copies are
exact: no arithmetic touches a weight on the way.
"""
from __future__ import annotations

import functools
import json
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.data import Batch

from . import modules
from .collate import collate_graphs
from .layout import NORM_KINDS, WEIGHT_KINDS, Layout, WeightLayer, state_key
from .neuron_graph import EDGE_IDS, NODE_IDS, NORM_IDENTITY, NeuronGraph
from .trace import module_chain
from .types import Activation, EdgeKind, NodeRole

NONFINITE_CHOICES = ("error", "keep")


# --- module -> layout ----------------------------------------------------
def layout_of(module: nn.Module) -> Layout:
    """The :class:`Layout` of a supported module (see :func:`from_module`)."""
    return _checked_layout(_steps_and_leaves(module)[0], module)


def _steps_and_leaves(module: nn.Module) -> tuple[list[dict[str, Any]], list[nn.Module | None]]:
    """The unchecked layout steps of ``module`` and the leaf module of each step
    (``None`` for a residual step)."""
    if not isinstance(module, nn.Module):
        raise TypeError(f"from_module: expected a torch.nn.Module, got {type(module).__name__}")
    steps: list[dict[str, Any]] = []
    leaves: list[nn.Module | None] = []
    channels = None  # output channels of the last conv, while a feature map is live
    flattened = False
    for name, leaf in module_chain(module):
        if isinstance(leaf, modules.ResidualAdd):
            steps.append(_residual_step(name, leaf, steps))
            leaves.append(None)
            continue
        step = modules.describe(name, leaf)
        if step["kind"] == "conv":
            channels, flattened = step["out"], False
        elif step["kind"] == "flatten":
            flattened = channels is not None
        elif step["kind"] == "layernorm" and channels is not None and not flattened:
            raise modules.UnsupportedModuleError(
                name, leaf, "a LayerNorm on a conv feature map normalises its last spatial "
                "axis, not the channels; only a LayerNorm over the neurons of a Linear layer "
                "keeps one set of parameters per neuron")
        elif step["kind"] == "linear" and channels is not None:
            if not flattened:
                raise modules.UnsupportedModuleError(
                    name, leaf, "a Linear after a Conv needs a Flatten in between")
            if step["in"] % channels:
                raise modules.UnsupportedModuleError(
                    name, leaf, f"in_features={step['in']} is not a multiple of the "
                    f"{channels} channels of the flattened feature map")
            if step["in"] != channels:
                step["positions"] = step["in"] // channels
            channels = None
        steps.append(step)
        leaves.append(leaf)
    return steps, leaves


def _residual_step(name: str, add: modules.ResidualAdd,
                   steps: list[dict[str, Any]]) -> dict[str, Any]:
    """The layout step of a residual addition of the value after ``steps[:source]``."""
    source = add.source
    if source >= len(steps) or steps[source]["kind"] not in WEIGHT_KINDS:
        after = f"after '{steps[source - 1]['name']}'" if source else "at the input"
        where = f"'{steps[source]['name']}'" if source < len(steps) else "the addition"
        raise modules.UnsupportedModuleError(
            add.owner_path, add.owner, f"its residual addition adds the value {after}, but "
            f"that value is not what the next weight layer reads ({where} comes first); "
            "supported: h + f(h) where h is a layer's output after its norm and activation "
            "and f starts with a Linear or Conv (not a pre-activation block)")
    layer = sum(step["kind"] in WEIGHT_KINDS for step in steps[:source])
    return {"kind": "residual", "name": name, "source": layer}


def _checked_layout(steps: list[dict[str, Any]], module: nn.Module) -> Layout:
    try:
        layout = Layout(steps)
    except ValueError as err:
        raise modules.UnsupportedModuleError("", module, str(err)) from None
    _check_norms(layout)
    return layout


def _check_norms(layout: Layout) -> None:
    sizes = layout.neuron_layer_sizes
    normed: set[int] = set()
    for layer, step in layout.steps_by_neuron_layer():
        if step["kind"] in NORM_KINDS:
            if step["num_features"] != sizes[layer]:
                raise ValueError(f"layout: norm '{step['name']}' has {step['num_features']}"
                                 f" features but its layer has {sizes[layer]} neurons")
            if layer in normed:
                raise ValueError(f"layout: norm '{step['name']}' is the second norm on "
                                 f"neuron layer {layer}; one norm per layer is supported")
            normed.add(layer)


#: class -> whether it is an escnn module (the test depends on the class only)
_ESCNN_CLASSES: dict[type, bool] = {}


def _is_escnn(module: Any) -> bool:
    cls = type(module)
    known = _ESCNN_CLASSES.get(cls)
    if known is None:
        from .families import is_escnn_module
        known = is_escnn_module(module)
        if len(_ESCNN_CLASSES) < 4096:  # classes made on the fly must not grow it forever
            _ESCNN_CLASSES[cls] = known
    return known


def from_module(module: nn.Module, *, kernel_width: int | None = None,
                nonfinite: str = "error", view: str | None = None) -> NeuronGraph:
    """Convert a network into a :class:`NeuronGraph`.

    The network is read by what its forward computes (``docs/graph_format.md``,
    section 0): ``nn.Sequential`` s are walked, other modules traced one at a
    time; activations are recognised by their computation (``sin(w0 * x)``,
    ``F.leaky_relu(x, 0.2)``, ...), residual additions ``h + f(h)`` become
    residual edges, weight-normalised / parametrised layers give their
    effective weight. Anything else raises
    :class:`~nft_pyg.graph.UnsupportedModuleError` naming the module by its
    path and what it computes; nothing converts to a different function.

    Args:
        module (torch.nn.Module): the network (one input, one output).
        kernel_width (int, optional): pad ``edge_attr`` to this many kernel
            positions (to batch with graphs of larger kernels). Default: the
            largest kernel of the network.
        nonfinite (str): ``"error"`` (default) rejects NaN/inf weights,
            ``"keep"`` copies them.
        view (str, optional): escnn networks only: ``"channel"`` (default)
            or ``"field"``, see :func:`nft_pyg.graph.escnn.from_escnn`.

    To convert many networks of one architecture into a batch, use
    :func:`from_modules` (one stacked copy per weight layer instead of one
    graph per network).
    """
    if _is_escnn(module):
        from .families import convert_escnn as from_escnn
        return from_escnn(module, view or "channel", kernel_width=kernel_width,
                          nonfinite=nonfinite)
    if view is not None:
        raise ValueError(f"from_module: view={view!r} is for escnn networks only")
    steps, leaves = _steps_and_leaves(module)
    template = _template_of_steps(steps, module, kernel_width)
    _check_nonfinite_choice(nonfinite)
    return _graph_from_state(template, _module_state(module, steps, leaves), nonfinite)


def from_modules(modules: Sequence[nn.Module], *, kernel_width: int | None = None,
                 nonfinite: str = "error") -> Batch:
    """Convert many networks into one ``Batch`` of :class:`NeuronGraph` s.

    The result equals ``Batch.from_data_list([from_module(m) for m in
    modules])`` (same attributes, same ``to_data_list()``). When all networks
    share one layout (the usual case: a model zoo, a batch of INRs) it is
    built directly, with one ``torch.stack`` per weight tensor, several
    times faster than converting and collating graph by graph; otherwise
    (or with tracked BatchNorm statistics, whose counters live in each
    graph's layout) it falls back to exactly that.

    Args:
        modules (Sequence[torch.nn.Module]): the networks.
        kernel_width (int, optional): see :func:`from_module`.
        nonfinite (str): see :func:`from_module`.
    """
    modules = list(modules)
    if not modules:
        raise ValueError("from_modules: needs at least one module")
    steps, leaves = _steps_and_leaves(modules[0])
    template = _template_of_steps(steps, modules[0], kernel_width)
    _check_nonfinite_choice(nonfinite)
    states = [_module_state(modules[0], steps, leaves)]
    for module in modules[1:]:
        other_steps, other_leaves = _steps_and_leaves(module)
        if other_steps != steps:
            states = None
            break
        states.append(_module_state(module, other_steps, other_leaves))
    if states is None or not _batchable(template, states):
        return collate_graphs([from_module(module, kernel_width=kernel_width,
                                           nonfinite=nonfinite) for module in modules])
    return _batch_from_states(template, states, nonfinite)


def _module_state(module: nn.Module, steps: list[dict[str, Any]],
                  leaves: list[nn.Module | None]) -> dict[str, torch.Tensor]:
    """The tensors the layout needs, read from the layers themselves under their
    state-dict names: what each layer's forward uses (a weight-normalised or
    parametrised layer gives its effective weight; state-dict hooks, which
    change only what is saved, play no part)."""
    state: dict[str, torch.Tensor] = {}
    for step, leaf in zip(steps, leaves):
        kind = step["kind"]
        if kind in WEIGHT_KINDS:
            names = ("weight", "bias") if step["bias"] else ("weight",)
        elif kind == "batchnorm":
            names = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
        elif kind == "layernorm":
            names = ("weight", "bias")
        else:
            continue
        for key in names:
            value = modules.effective_tensor(leaf, key)
            if value is not None:
                state[state_key(step["name"], key)] = value.detach()
    return state


# --- state dict -> graph -------------------------------------------------
def _check_nonfinite_choice(nonfinite: str) -> None:
    if nonfinite not in NONFINITE_CHOICES:
        raise ValueError(f"from_state_dict: nonfinite must be one of {NONFINITE_CHOICES}, "
                         f"got {nonfinite!r}")


def _tensor(state_dict: Mapping[str, torch.Tensor], key: str,
            shape: tuple[int, ...]) -> torch.Tensor:
    if key not in state_dict:
        raise KeyError(f"from_state_dict: the state dict has no entry '{key}' "
                       f"(expected shape {tuple(shape)})")
    value = state_dict[key]
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"from_state_dict: '{key}' is a {type(value).__name__}, not a tensor")
    if tuple(value.shape) != tuple(shape):
        raise ValueError(f"from_state_dict: '{key}' has shape {tuple(value.shape)}, "
                         f"the layout expects {tuple(shape)}")
    return value


def _check_finite(totals: list[torch.Tensor], named: list[tuple[str, torch.Tensor]]) -> None:
    """Reject NaN / inf among ``named`` tensors (in order).

    A sum of finite numbers is finite unless it overflows, and any NaN or
    inf makes it non-finite: one reduction over the assembled features
    decides the common case; only a non-finite sum looks at each tensor.
    """
    if all(bool(torch.isfinite(total)) for total in totals):
        return
    for key, value in named:
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise ValueError(f"from_state_dict: '{key}' holds NaN or inf values "
                             "(pass nonfinite='keep' to convert them anyway)")


def from_state_dict(state_dict: Mapping[str, torch.Tensor], layout: Layout | str | list, *,
                    kernel_width: int | None = None, nonfinite: str = "error") -> NeuronGraph:
    """Build a :class:`NeuronGraph` from weights and their :class:`Layout`.

    Args:
        state_dict (Mapping[str, Tensor]): tensors named as in the original
            module (``"<step name>.weight"``, ``".bias"``, norm buffers).
        layout (Layout | str | list): the network's layout (e.g.
            ``graph.layout`` of another graph of the same architecture).
        kernel_width (int, optional): see :func:`from_module`.
        nonfinite (str): see :func:`from_module`.
    """
    _check_nonfinite_choice(nonfinite)
    return _graph_from_state(_template(layout, kernel_width), state_dict, nonfinite)


def from_state_dicts(state_dicts: Sequence[Mapping[str, torch.Tensor]],
                     layout: Layout | str | list, *, kernel_width: int | None = None,
                     nonfinite: str = "error") -> Batch:
    """One ``Batch`` of the graphs of many state dicts of one layout.

    Equals ``Batch.from_data_list([from_state_dict(sd, layout) for sd in
    state_dicts])``, built with one ``torch.stack`` per tensor (see
    :func:`from_modules`).
    """
    _check_nonfinite_choice(nonfinite)
    states = list(state_dicts)
    if not states:
        raise ValueError("from_state_dicts: needs at least one state dict")
    template = _template(layout, kernel_width)
    if not _batchable(template, states):
        return collate_graphs([from_state_dict(state, layout, kernel_width=kernel_width,
                                               nonfinite=nonfinite) for state in states])
    return _batch_from_states(template, states, nonfinite)


def layer_offsets(layout: Layout) -> list[int]:
    """Index of the first node of each neuron layer (and the node count last)."""
    offsets = [0]
    for n in layout.neuron_layer_sizes:
        offsets.append(offsets[-1] + n)
    return offsets


def edge_layer_offsets(layout: Layout) -> list[int]:
    """Index of the first edge of each weight layer (and the weight-edge count
    last; residual edges follow)."""
    offsets = [0]
    for layer in layout.weight_layers():
        offsets.append(offsets[-1] + layer.num_edges)
    return offsets


def graph_structure(layout: Layout | str | list, kernel_width: int | None = None,
                    dtype: torch.dtype | None = None) -> NeuronGraph:
    """The raw graph of a layout with zero weights and biases.

    Nodes are sorted by layer, then position; edges by layer, then target,
    then source (the row-major order of each weight matrix).
    """
    template = _template(layout, kernel_width)
    dtype = dtype or torch.get_default_dtype()
    weights = torch.zeros(template.num_edges - template.residual_rows, template.width,
                          dtype=dtype)
    return template.graph(torch.zeros(template.num_nodes, 1, dtype=dtype),
                          torch.cat([weights, template.residual_edge_rows(dtype)]),
                          template.identity_norms(dtype), template.layout_json)


# --- per-layout structure, cached -------------------------------------------
@dataclass(eq=False)
class _Template:
    """What a layout's graph holds besides weights: built once per layout.

    Never handed out: graphs get clones of the id tensors (each its own
    compact storage, so a graph pickles at the size of its data).
    """

    layout: Layout
    layout_json: str
    layers: list[WeightLayer]
    sizes: list[int]
    offsets: list[int]
    width: int
    norm_steps: list[tuple[int, dict[str, Any]]]
    ids: dict[str, torch.Tensor]  # node_layer, ..., edge_kind, edge_index
    residual_rows: int            # residual edges, after the weight edges
    _identity_norms: dict = field(default_factory=dict)  # dtype -> [N, 4]
    _zeros: dict = field(default_factory=dict)  # dtype -> zero biases of layers 0..L

    def __post_init__(self):
        #: per weight layer: weight key, bias key (None without bias), weight shape,
        #: index of its zero biases in zeros()
        self.keys = [(state_key(layer.name, "weight"),
                      state_key(layer.name, "bias") if layer.bias else None,
                      layer.weight_shape, layer.index) for layer in self.layers]

    def zeros(self, dtype: torch.dtype) -> list[torch.Tensor]:
        """Zero biases of each neuron layer (inputs first), never written to."""
        zeros = self._zeros.get(dtype)
        if zeros is None:
            zeros = self._zeros[dtype] = [torch.zeros(n, dtype=dtype) for n in self.sizes]
        return zeros

    @property
    def num_nodes(self) -> int:
        return self.offsets[-1]

    @property
    def num_edges(self) -> int:
        return self.ids["edge_index"].size(1)

    def identity_norms(self, dtype: torch.dtype, copies: int = 1) -> torch.Tensor:
        """A fresh ``[copies * N, 4]`` tensor of identity norm parameters."""
        norms = self._identity_norms.get(dtype)
        if norms is None:
            norms = torch.tensor(NORM_IDENTITY, dtype=dtype).repeat(self.num_nodes, 1)
            self._identity_norms[dtype] = norms
        return norms.repeat(copies, 1) if copies != 1 else norms.clone()

    def residual_edge_rows(self, dtype: torch.dtype, lead: tuple[int, ...] = ()) -> torch.Tensor:
        """The raw features of the residual edges: 1 at kernel position 0."""
        rows = torch.zeros(*lead, self.residual_rows, self.width, dtype=dtype)
        rows[..., 0] = 1
        return rows

    def graph(self, x: torch.Tensor, edge_attr: torch.Tensor, node_norm: torch.Tensor,
              layout_json: str) -> NeuronGraph:
        ids = {key: value.clone() for key, value in self.ids.items()}
        attributes = {
            "x": x, "edge_index": ids["edge_index"], "edge_attr": edge_attr,
            **{key: ids[key] for key in NODE_IDS}, **{key: ids[key] for key in EDGE_IDS},
            "node_norm": node_norm, "kernel_width": torch.tensor([self.width]),
            "layout": layout_json, "num_nodes": self.num_nodes}
        # public API only: item assignment costs ~27 us a graph against ~37 us for
        # NeuronGraph(**attributes) (which goes through Data.__setattr__); filling PyG's
        # private store directly (~3 us) is not done
        graph = NeuronGraph()
        for key, value in attributes.items():
            graph[key] = value
        return graph


def _width_key(kernel_width: int | None) -> int | None:
    return None if kernel_width is None else int(kernel_width)


@functools.lru_cache(maxsize=256)
def _cached_template(layout_json: str, width: int | None) -> _Template:
    layout = Layout.coerce(layout_json)
    return _build_template(layout, layout.to_json(), width)


def _template(layout: Layout | str | list, kernel_width: int | None) -> _Template:
    width = _width_key(kernel_width)
    if isinstance(layout, str):  # a graph's own layout string: no parsing on a hit
        return _cached_template(layout, width)
    return _cached_template(Layout.coerce(layout).to_json(), width)


def _template_of_steps(steps: list[dict[str, Any]], module: nn.Module,
                       kernel_width: int | None) -> _Template:
    """The template of a module's (unchecked) steps, with from_module's errors."""
    layout_json = json.dumps(steps, separators=(",", ":"), sort_keys=True)  # Layout.to_json
    try:
        return _cached_template(layout_json, _width_key(kernel_width))
    except ValueError:
        _checked_layout(steps, module)  # an error naming the module, when the layout is at fault
        raise


def _build_template(layout: Layout, layout_json: str, kernel_width: int | None) -> _Template:
    _check_norms(layout)
    sizes = layout.neuron_layer_sizes
    width = layout.kernel_width if kernel_width is None else kernel_width
    if width < layout.kernel_width:
        raise ValueError(f"kernel_width={width} is smaller than the largest kernel of the "
                         f"network ({layout.kernel_width} positions)")
    offsets = layer_offsets(layout)
    num_nodes = offsets[-1]
    node_role = torch.full((num_nodes,), int(NodeRole.HIDDEN), dtype=torch.long)
    node_role[: sizes[0]] = int(NodeRole.INPUT)
    node_role[offsets[-2]:] = int(NodeRole.OUTPUT)
    node_act = torch.full((num_nodes,), int(Activation.IDENTITY), dtype=torch.long)
    norm_steps = []
    for neuron_layer, step in layout.steps_by_neuron_layer():
        if step["kind"] == "act" and neuron_layer > 0 \
                and modules.activation_code(step) != Activation.IDENTITY:
            node_act[offsets[neuron_layer]:offsets[neuron_layer + 1]] = int(
                modules.activation_code(step))
        elif step["kind"] in NORM_KINDS:
            norm_steps.append((neuron_layer, step))

    layers = layout.weight_layers()
    edge_index, edge_layer, edge_kind = [], [], []
    for layer in layers:
        in_group = layer.in_neurons // layer.groups
        dst = torch.arange(layer.out_neurons).repeat_interleave(in_group)
        group = dst // (layer.out_neurons // layer.groups)
        src = torch.arange(in_group).repeat(layer.out_neurons) + group * in_group
        edge_index.append(torch.stack([src + offsets[layer.index - 1],
                                       dst + offsets[layer.index]]))
        edge_layer.append(torch.full((dst.numel(),), layer.index, dtype=torch.long))
        kind = (EdgeKind.CONV if layer.kind == "conv" else
                EdgeKind.FLATTEN if layer.kernel_shape else EdgeKind.LINEAR)
        edge_kind.append(torch.full((dst.numel(),), int(kind), dtype=torch.long))
    residual_rows = 0
    for source, target in sorted(layout.residuals(), key=lambda pair: (pair[1], pair[0])):
        positions = torch.arange(sizes[target])
        edge_index.append(torch.stack([positions + offsets[source],
                                       positions + offsets[target]]))
        edge_layer.append(torch.full((sizes[target],), target, dtype=torch.long))
        edge_kind.append(torch.full((sizes[target],), int(EdgeKind.RESIDUAL), dtype=torch.long))
        residual_rows += sizes[target]
    node_layer = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    node_pos = torch.cat([torch.arange(n) for n in sizes])
    ids = {"node_layer": node_layer, "node_role": node_role, "node_pos": node_pos,
           "node_act": node_act, "edge_layer": torch.cat(edge_layer),
           "edge_kind": torch.cat(edge_kind), "edge_index": torch.cat(edge_index, dim=1)}
    return _Template(layout, layout_json, layers, sizes, offsets, width, norm_steps, ids,
                     residual_rows)


# --- filling a template with weights ------------------------------------------
def _as_edge_rows(weight: torch.Tensor, layer: WeightLayer, width: int,
                  dtype: torch.dtype) -> torch.Tensor:
    """``[..., edges, width]``: a (stacked) weight as zero-padded edge kernels."""
    lead = weight.shape[: weight.dim() - len(layer.weight_shape)]
    kernels = weight.to("cpu", dtype).reshape(*lead, -1, layer.positions)
    if layer.positions < width:
        kernels = F.pad(kernels, (0, width - layer.positions))
    return kernels


def _graph_from_state(template: _Template, state_dict: Mapping[str, torch.Tensor],
                      nonfinite: str) -> NeuronGraph:
    dtype = _weight_dtype(state_dict, template.layers)
    named: list[tuple[str, torch.Tensor]] = []

    def entry(key: str, shape: tuple[int, ...]) -> torch.Tensor:
        value = _tensor(state_dict, key, shape)
        named.append((key, value))
        return value

    zeros = template.zeros(dtype)  # read only: the cats below copy
    edges, nodes = [], [zeros[0]]
    for layer, (weight_key, bias_key, shape, zero) in zip(template.layers, template.keys):
        edges.append(_as_edge_rows(entry(weight_key, shape), layer, template.width, dtype))
        nodes.append(entry(bias_key, shape[:1]).to("cpu", dtype) if bias_key else zeros[zero])
    if template.residual_rows:
        edges.append(template.residual_edge_rows(dtype))
    edge_attr = torch.cat(edges)
    x = torch.cat(nodes).unsqueeze(1)
    node_norm = template.identity_norms(dtype)
    layout, layout_json = template.layout, template.layout_json
    offsets = template.offsets
    for neuron_layer, step in template.norm_steps:
        span = slice(offsets[neuron_layer], offsets[neuron_layer + 1])
        for column, key in _norm_entries(step):
            node_norm[span, column] = entry(state_key(step["name"], key),
                                            (template.sizes[neuron_layer],))
        tracked = state_dict.get(state_key(step["name"], "num_batches_tracked"))
        if step["kind"] == "batchnorm" and tracked is not None \
                and int(tracked) != step["num_batches_tracked"]:
            layout = _with_batches_tracked(layout, step["name"], int(tracked))
            layout_json = layout.to_json()
    if nonfinite == "error":
        total = edge_attr.sum() + x.sum()
        _check_finite([total + node_norm.sum() if template.norm_steps else total], named)
    return template.graph(x, edge_attr, node_norm, layout_json)


def _batchable(template: _Template, states: list[Mapping[str, torch.Tensor]]) -> bool:
    """Whether :func:`_batch_from_states` gives what graph-by-graph collation gives:
    one weight dtype (collation would promote) and no per-graph layout changes."""
    if any(step["kind"] == "batchnorm" and step["track_running_stats"]
           for _, step in template.norm_steps):
        return False
    dtype = _weight_dtype(states[0], template.layers)
    return all(_weight_dtype(state, template.layers) == dtype for state in states[1:])


def _batch_from_states(template: _Template, states: list[Mapping[str, torch.Tensor]],
                       nonfinite: str) -> Batch:
    dtype = _weight_dtype(states[0], template.layers)
    count = len(states)
    named: list[tuple[str, torch.Tensor]] = []

    def stacked(key: str, shape: tuple[int, ...]) -> torch.Tensor:
        values = []
        for state in states:
            value = _tensor(state, key, shape)
            named.append((key, value))
            values.append(value.to("cpu", dtype))
        return torch.stack(values)

    edges, nodes = [], [torch.zeros(count, template.sizes[0], dtype=dtype)]
    for layer in template.layers:
        edges.append(_as_edge_rows(stacked(state_key(layer.name, "weight"), layer.weight_shape),
                                   layer, template.width, dtype))
        nodes.append(stacked(state_key(layer.name, "bias"), (layer.out_neurons,)) if layer.bias
                     else torch.zeros(count, layer.out_neurons, dtype=dtype))
    if template.residual_rows:
        edges.append(template.residual_edge_rows(dtype, (count,)))
    edge_attr = torch.cat(edges, dim=1).reshape(-1, template.width)
    x = torch.cat(nodes, dim=1).reshape(-1, 1)
    node_norm = template.identity_norms(dtype, count)
    per_graph = node_norm.view(count, template.num_nodes, len(NORM_IDENTITY))
    offsets = template.offsets
    for neuron_layer, step in template.norm_steps:
        span = slice(offsets[neuron_layer], offsets[neuron_layer + 1])
        for column, key in _norm_entries(step):
            per_graph[:, span, column] = stacked(state_key(step["name"], key),
                                                 (template.sizes[neuron_layer],))
    if nonfinite == "error":
        _check_finite([edge_attr.sum() + x.sum() + node_norm.sum()], named)
    return _collated(template, count, x, edge_attr, node_norm)


def _collated(template: _Template, count: int, x: torch.Tensor, edge_attr: torch.Tensor,
              node_norm: torch.Tensor) -> Batch:
    """The ``Batch`` that ``Batch.from_data_list`` makes of ``count`` graphs of one
    template (attributes, slices and increments), without building the graphs."""
    num_nodes, num_edges = template.num_nodes, template.num_edges
    graph_ids = torch.arange(count)
    node_slices = torch.arange(count + 1) * num_nodes
    edge_slices = torch.arange(count + 1) * num_edges
    node_shift = node_slices[:-1]
    ids = template.ids
    edge_index = (ids["edge_index"].unsqueeze(1) + node_shift.view(1, -1, 1)).reshape(2, -1)
    attributes = {
        "x": x, "edge_index": edge_index, "edge_attr": edge_attr,
        **{key: ids[key].repeat(count) for key in NODE_IDS},
        **{key: ids[key].repeat(count) for key in EDGE_IDS},
        "node_norm": node_norm, "kernel_width": torch.full((count,), template.width),
        "layout": [template.layout_json] * count}
    node_keys = ("x", "node_layer", "node_role", "node_pos", "node_act", "node_norm")
    slices = {key: node_slices if key in node_keys else
              graph_ids.new_tensor(range(count + 1)) if key in ("kernel_width", "layout")
              else edge_slices for key in attributes}
    increments = {key: None if key == "layout" else
                  node_shift if key == "edge_index" else torch.zeros(count, dtype=torch.long)
                  for key in attributes}
    batch = Batch(_base_cls=NeuronGraph)
    for key, value in attributes.items():
        batch[key] = value
    batch._store._num_nodes = [num_nodes] * count
    batch.num_nodes = num_nodes * count
    batch.batch = graph_ids.repeat_interleave(num_nodes)
    batch.ptr = node_slices
    batch._num_graphs = count
    batch._slice_dict = slices
    batch._inc_dict = increments
    return batch


def _weight_dtype(state_dict: Mapping[str, torch.Tensor],
                  layers: list[WeightLayer]) -> torch.dtype:
    value = state_dict.get(state_key(layers[0].name, "weight"))
    return value.dtype if isinstance(value, torch.Tensor) and value.is_floating_point() \
        else torch.get_default_dtype()


def _norm_entries(step: dict[str, Any]) -> list[tuple[int, str]]:
    """(column of ``node_norm``, state-dict suffix) of a norm step's tensors."""
    entries = []
    if step["affine"]:
        entries.append((0, "weight"))
        if step["kind"] == "batchnorm" or step["bias"]:
            entries.append((1, "bias"))
    if step["kind"] == "batchnorm" and step["track_running_stats"]:
        entries += [(2, "running_mean"), (3, "running_var")]
    return entries


def _with_batches_tracked(layout: Layout, name: str, tracked: int) -> Layout:
    steps = [dict(step, num_batches_tracked=tracked) if step["name"] == name else step
             for step in layout.steps]
    return Layout(steps)


# --- graph -> state dict / module ----------------------------------------
def _single(graph: NeuronGraph, where: str) -> Layout:
    if not isinstance(graph, NeuronGraph):
        raise TypeError(f"{where}: expected a NeuronGraph, got {type(graph).__name__}")
    if isinstance(graph.layout, (list, tuple)):
        raise ValueError(f"{where}: got a batch of {len(graph.layout)} graphs; convert each "
                         "graph of batch.to_data_list()")
    return graph.layout_obj


def to_state_dict(graph: NeuronGraph) -> OrderedDict[str, torch.Tensor]:
    """The network's state dict, with its original names, from a raw graph.

    The graph must be raw (one channel): ``x`` ``[N, 1]`` and ``edge_attr``
    ``[E, kernel_width]``. Edges may be missing (a pruned network): their
    weights are zero. Residual edges must carry their fixed weight 1.
    """
    layout = _single(graph, "to_state_dict")
    width = int(graph.kernel_width.reshape(-1)[0])
    if graph.x.dim() != 2 or graph.x.size(1) != 1 or graph.edge_attr.size(-1) != width:
        raise ValueError(f"to_state_dict: expects a raw graph with x [N, 1] and edge_attr "
                         f"[E, {width}], got x {tuple(graph.x.shape)} and edge_attr "
                         f"{tuple(graph.edge_attr.shape)}")
    sizes = layout.neuron_layer_sizes
    offsets = torch.tensor([0] + sizes).cumsum(0).tolist()
    layers = {layer.name: layer for layer in layout.weight_layers()}
    residual = graph.edge_kind == int(EdgeKind.RESIDUAL)
    if layout.residuals() or bool(residual.any()):
        _check_residual_edges(graph, layout, offsets, residual)
    state = OrderedDict()
    for neuron_layer, step in layout.steps_by_neuron_layer():
        span = slice(offsets[neuron_layer], offsets[neuron_layer + 1])
        if step["kind"] in ("linear", "conv"):
            layer = layers[step["name"]]
            state[state_key(layer.name, "weight")] = _layer_weight(graph, layer, offsets, width,
                                                                   ~residual)
            if layer.bias:
                state[state_key(layer.name, "bias")] = graph.x[span, 0].clone()
            elif bool((graph.x[span, 0] != 0).any()):
                raise ValueError(f"to_state_dict: layer '{layer.name}' has no bias but the "
                                 "graph gives its neurons nonzero biases")
        elif step["kind"] in NORM_KINDS:
            for column, key in _norm_entries(step):
                state[state_key(step["name"], key)] = graph.node_norm[span, column].clone()
            if step["kind"] == "batchnorm" and step["track_running_stats"]:
                state[state_key(step["name"], "num_batches_tracked")] = torch.tensor(
                    step["num_batches_tracked"], dtype=torch.long)
    return state


def _check_residual_edges(graph: NeuronGraph, layout: Layout, offsets: list[int],
                          residual: torch.Tensor) -> None:
    """The residual edges are exactly the layout's connections, each with weight 1."""
    expected = []
    for source, target in sorted(layout.residuals(), key=lambda pair: (pair[1], pair[0])):
        positions = torch.arange(layout.neuron_layer_sizes[target])
        expected.append(torch.stack([positions + offsets[source], positions + offsets[target]]))
    expected = torch.cat(expected, dim=1) if expected else torch.zeros(2, 0, dtype=torch.long)
    found = graph.edge_index[:, residual]
    if found.shape != expected.shape or not torch.equal(found.cpu(), expected):
        raise ValueError("to_state_dict: the graph's residual edges (edge_kind RESIDUAL) are "
                         f"not the {expected.size(1)} edges of the layout's residual "
                         "connections (neuron p of the source layer to neuron p of the target)")
    values = graph.edge_attr[residual]
    fixed = torch.zeros_like(values)
    fixed[:, 0] = 1
    if not torch.equal(values, fixed):
        raise ValueError("to_state_dict: residual edges carry the fixed weight 1 (1 at kernel "
                         "position 0, zeros after); the graph gives them other values")


def _layer_weight(graph: NeuronGraph, layer: WeightLayer, offsets, width: int,
                  weights: torch.Tensor) -> torch.Tensor:
    mask = (graph.edge_layer == layer.index) & weights
    src = graph.edge_index[0, mask] - offsets[layer.index - 1]
    dst = graph.edge_index[1, mask] - offsets[layer.index]
    kernels = graph.edge_attr[mask, : layer.positions]
    if (graph.edge_attr[mask, layer.positions:width] != 0).any():
        raise ValueError(f"to_state_dict: layer '{layer.name}' has nonzero entries past its "
                         f"{layer.positions} kernel positions")
    in_group = layer.in_neurons // layer.groups
    local = src - dst // (layer.out_neurons // layer.groups) * in_group
    if bool(((local < 0) | (local >= in_group)).any()):
        raise ValueError(f"to_state_dict: layer '{layer.name}' (groups={layer.groups}) has "
                         "an edge between neurons of different groups")
    weight = kernels.new_zeros(layer.out_neurons, in_group, layer.positions)
    if kernels.size(0) == weight.size(0) * weight.size(1) and _is_canonical(local, dst, in_group):
        weight = kernels.reshape(weight.shape).clone()
    else:
        weight[dst, local] = kernels
    return weight.reshape(layer.weight_shape)


def _is_canonical(src: torch.Tensor, dst: torch.Tensor, in_group: int) -> bool:
    flat = dst * in_group + src
    return bool((flat == torch.arange(flat.numel(), device=flat.device)).all())


def to_module(graph: NeuronGraph) -> nn.Sequential:
    """Rebuild the network of a raw graph as a flat ``nn.Sequential``.

    The rebuilt module computes the same function as the original; its
    children are numbered ``0, 1, ...`` in chain order (use
    :func:`to_state_dict` for the original parameter names). A network with
    residual connections becomes a :class:`~nft_pyg.graph.modules.GraphNet` (an ``nn.Sequential``
    with :class:`~nft_pyg.graph.modules.Residual` children). It is in
    training mode, like a freshly built module.

    The layout is checked: only the module kinds :func:`from_module` writes
    are built (known pooling and dropout classes, known activations with
    their own parameters); anything else is a ``ValueError`` naming the step.
    """
    layout = _single(graph, "to_module")
    state = to_state_dict(graph)
    dtype = graph.edge_attr.dtype
    starts = {}  # neuron layer -> index of the child that reads its output
    layer = 0
    for index, step in enumerate(layout.steps):
        if step["kind"] in WEIGHT_KINDS:
            starts.setdefault(layer, index)
            layer += 1
    children = []
    renamed = OrderedDict()
    for index, step in enumerate(layout.steps):
        if step["kind"] == "residual":
            children.append(modules.Residual(starts[step["source"]]))
            continue
        child = modules.build(step).to(dtype)
        children.append(child)
        for key in child.state_dict():
            renamed[f"{index}.{key}"] = state[state_key(step["name"], key)]
    module = modules.GraphNet(*children) if layout.residuals() else nn.Sequential(*children)
    module.load_state_dict(renamed)
    return module
