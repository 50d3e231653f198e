"""Networks <-> neuron graphs: ``from_module``, ``to_module`` and state dicts.

Every conversion goes through ``(layout, state_dict)``: a module is
described as a :class:`Layout` plus its state dict, which
:func:`from_state_dict` turns into a :class:`NeuronGraph`;
:func:`to_state_dict` and :func:`to_module` read it back. All copies are
exact: no arithmetic touches a weight on the way.
"""
from __future__ import annotations

import json
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch._utils import _flatten_dense_tensors
from torch_geometric.data import Batch

from . import modules
from .collate import collate_graphs
from .layout import NORM_KINDS, WEIGHT_KINDS, Layout, WeightLayer, state_key
from .neuron_graph import NORM_IDENTITY, NeuronGraph
from .trace import module_chain
from .types import Activation, EdgeKind, NodeRole

NONFINITE_CHOICES = ("error", "keep")
_PLAIN_TENSORS = (nn.Parameter, torch.Tensor)


# --- module -> layout ----------------------------------------------------
def layout_of(module: nn.Module) -> Layout:
    """The :class:`Layout` of a supported module (see :func:`from_module`)."""
    return _checked_layout(_steps_and_leaves(module)[0], module)


def _steps_and_leaves(module: nn.Module) -> tuple[list[dict[str, Any]], list[nn.Module]]:
    """The unchecked layout steps of ``module`` and the leaf module of each step."""
    if not isinstance(module, nn.Module):
        raise TypeError(f"from_module: expected a torch.nn.Module, got {type(module).__name__}")
    steps: list[dict[str, Any]] = []
    leaves: list[nn.Module] = []
    channels = None  # output channels of the last conv, while a feature map is live
    flattened = False
    for name, leaf in module_chain(module):
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


def _checked_layout(steps: list[dict[str, Any]], module: nn.Module) -> Layout:
    try:
        layout = Layout(steps)
    except ValueError as err:
        raise modules.UnsupportedModuleError("", module, str(err)) from None
    sizes = layout.neuron_layer_sizes
    normed: set[int] = set()
    for layer, step in layout.steps_by_neuron_layer():
        if step["kind"] in NORM_KINDS:
            if step["num_features"] != sizes[layer]:
                raise ValueError(f"from_module: norm '{step['name']}' has {step['num_features']}"
                                 f" features but its layer has {sizes[layer]} neurons")
            if layer in normed:
                raise ValueError(f"from_module: norm '{step['name']}' is the second norm on "
                                 f"neuron layer {layer}; one norm per layer is supported")
            normed.add(layer)
    return layout


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

    Args:
        module (torch.nn.Module): an ``nn.Sequential`` (nested or not) or any
            module whose forward is a chain of supported layers.
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
    graph = _gathered_graph(template, module, leaves, nonfinite)
    if graph is None:  # anything unusual: the general path (and its error messages)
        graph = _graph_from_state(template, _module_state(module, steps, leaves), nonfinite)
    return graph


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
                  leaves: list[nn.Module]) -> Mapping[str, torch.Tensor]:
    """The entries of ``module.state_dict()`` that the layout needs, read from
    the leaves directly (``state_dict()`` walks every module with hooks and
    costs more than the rest of the conversion on a small network)."""
    if module._state_dict_hooks or module._state_dict_pre_hooks:
        return module.state_dict()
    state: dict[str, torch.Tensor] = {}
    for step, leaf in zip(steps, leaves):
        if leaf._state_dict_hooks or leaf._state_dict_pre_hooks:
            return module.state_dict()
        prefix = f"{step['name']}." if step["name"] else ""
        for key, value in leaf._parameters.items():
            if value is not None:
                state[prefix + key] = value.detach()
        for key, value in leaf._buffers.items():
            if value is not None and key not in leaf._non_persistent_buffers_set:
                state[prefix + key] = value.detach()
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
    """Index of the first edge of each weight layer (and the edge count last)."""
    offsets = [0]
    for layer in layout.weight_layers():
        offsets.append(offsets[-1] + layer.in_neurons * layer.out_neurons)
    return offsets


def graph_structure(layout: Layout | str | list, kernel_width: int | None = None,
                    dtype: torch.dtype | None = None) -> NeuronGraph:
    """The raw graph of a layout with zero weights and biases.

    Nodes are sorted by layer, then position; edges by layer, then target,
    then source (the row-major order of each weight matrix).
    """
    template = _template(layout, kernel_width)
    dtype = dtype or torch.get_default_dtype()
    return template.graph(torch.zeros(template.num_nodes, 1, dtype=dtype),
                          torch.zeros(template.num_edges, template.width, dtype=dtype),
                          template.identity_norms(dtype), template.layout_json)


# --- per-layout structure, cached -------------------------------------------
@dataclass(eq=False)
class _Template:
    """What a layout's graph holds besides weights: built once per layout.

    Never handed out: graphs get clones of the id tensors.
    """

    layout: Layout
    layout_json: str
    layers: list[WeightLayer]
    sizes: list[int]
    offsets: list[int]
    width: int
    norm_steps: list[tuple[int, dict[str, Any]]]
    node_ids: torch.Tensor    # [4, N]: node_layer, node_role, node_pos, node_act
    edge_ids: torch.Tensor    # [2, E]: edge_layer, edge_kind
    edge_index: torch.Tensor  # [2, E]
    kernel_width: torch.Tensor  # [1]
    _identity_norms: dict = field(default_factory=dict)  # dtype -> [N, 4]
    _gather: "_GatherPlan | None" = None

    @property
    def gather(self) -> "_GatherPlan":
        if self._gather is None:
            self._gather = _GatherPlan(self)
        return self._gather

    @property
    def num_nodes(self) -> int:
        return self.offsets[-1]

    @property
    def num_edges(self) -> int:
        return self.edge_index.size(1)

    def identity_norms(self, dtype: torch.dtype, copies: int = 1) -> torch.Tensor:
        """A fresh ``[copies * N, 4]`` tensor of identity norm parameters."""
        if copies != 1:
            return torch.tensor(NORM_IDENTITY, dtype=dtype).repeat(copies * self.num_nodes, 1)
        norms = self._identity_norms.get(dtype)
        if norms is None:
            norms = torch.tensor(NORM_IDENTITY, dtype=dtype).repeat(self.num_nodes, 1)
            self._identity_norms[dtype] = norms
        return norms.clone()

    def graph(self, x: torch.Tensor, edge_attr: torch.Tensor, node_norm: torch.Tensor,
              layout_json: str) -> NeuronGraph:
        node_ids, edge_ids = self.node_ids.clone(), self.edge_ids.clone()
        return NeuronGraph.from_attributes(
            x=x, edge_index=self.edge_index.clone(), edge_attr=edge_attr,
            node_layer=node_ids[0], node_role=node_ids[1], node_pos=node_ids[2],
            node_act=node_ids[3], edge_layer=edge_ids[0], edge_kind=edge_ids[1],
            node_norm=node_norm, kernel_width=self.kernel_width.clone(), layout=layout_json,
            num_nodes=self.num_nodes)


#: (layout JSON, kernel_width) -> _Template, least recently built dropped first
_TEMPLATES: "OrderedDict[tuple[str, int | None], _Template]" = OrderedDict()
_TEMPLATE_CACHE_SIZE = 256
#: (repr of a module's layout steps, kernel_width) -> _Template: from_module's cache
_TEMPLATES_BY_REPR: "OrderedDict[tuple[str, int | None], _Template]" = OrderedDict()


def _width_key(kernel_width: int | None) -> int | None:
    return None if kernel_width is None else int(kernel_width)


def _remember(key: tuple[str, int | None], template: _Template) -> _Template:
    _TEMPLATES[key] = template
    while len(_TEMPLATES) > _TEMPLATE_CACHE_SIZE:
        _TEMPLATES.popitem(last=False)
    return template


def _template(layout: Layout | str | list, kernel_width: int | None) -> _Template:
    width = _width_key(kernel_width)
    if isinstance(layout, str):  # a graph's own layout string: no parsing on a hit
        hit = _TEMPLATES.get((layout, width))
        if hit is not None:
            return hit
    parsed = Layout.coerce(layout)
    layout_json = parsed.to_json()
    template = _TEMPLATES.get((layout_json, width))
    if template is None:
        template = _remember((layout_json, width), _build_template(parsed, layout_json, width))
    if isinstance(layout, str) and layout != layout_json:
        _remember((layout, width), template)
    return template


def _template_of_steps(steps: list[dict[str, Any]], module: nn.Module,
                       kernel_width: int | None) -> _Template:
    """The template of a module's (unchecked) steps; checks them on a cache miss
    only (equal steps pass the same checks)."""
    width = _width_key(kernel_width)
    # repr() is several times cheaper than the JSON key; equal reprs of these plain
    # JSON values mean equal JSON (the converse may fail: then a miss, not an error)
    quick_key = (repr(steps), width)
    template = _TEMPLATES_BY_REPR.get(quick_key)
    if template is not None:
        return template
    layout_json = json.dumps(steps, separators=(",", ":"), sort_keys=True)  # Layout.to_json
    template = _TEMPLATES.get((layout_json, width))
    if template is None:
        layout = _checked_layout(steps, module)
        template = _remember((layout_json, width), _build_template(layout, layout_json, width))
    _TEMPLATES_BY_REPR[quick_key] = template
    while len(_TEMPLATES_BY_REPR) > _TEMPLATE_CACHE_SIZE:
        _TEMPLATES_BY_REPR.popitem(last=False)
    return template


def _build_template(layout: Layout, layout_json: str, kernel_width: int | None) -> _Template:
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
        dst = torch.arange(layer.out_neurons).repeat_interleave(layer.in_neurons)
        src = torch.arange(layer.in_neurons).repeat(layer.out_neurons)
        edge_index.append(torch.stack([src + offsets[layer.index - 1],
                                       dst + offsets[layer.index]]))
        edge_layer.append(torch.full((dst.numel(),), layer.index, dtype=torch.long))
        kind = (EdgeKind.CONV if layer.kind == "conv" else
                EdgeKind.FLATTEN if layer.kernel_shape else EdgeKind.LINEAR)
        edge_kind.append(torch.full((dst.numel(),), int(kind), dtype=torch.long))
    node_layer = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    node_pos = torch.cat([torch.arange(n) for n in sizes])
    return _Template(layout, layout_json, layers, sizes, offsets, width, norm_steps,
                     torch.stack([node_layer, node_role, node_pos, node_act]),
                     torch.stack([torch.cat(edge_layer), torch.cat(edge_kind)]),
                     torch.cat(edge_index, dim=1), torch.tensor([width]))


# --- filling a template with weights ------------------------------------------
def _as_edge_rows(weight: torch.Tensor, layer: WeightLayer, width: int,
                  dtype: torch.dtype) -> torch.Tensor:
    """``[..., out * in, width]``: a (stacked) weight as zero-padded edge kernels."""
    lead = weight.shape[: weight.dim() - len(layer.weight_shape)]
    kernels = weight.to("cpu", dtype).reshape(*lead, -1, layer.positions)
    if layer.positions < width:
        kernels = F.pad(kernels, (0, width - layer.positions))
    return kernels


class _GatherPlan:
    """How :func:`from_module` fills a template straight from a module's leaves.

    All float attributes of the graph (``edge_attr``, ``x``, ``node_norm``,
    in that order) are one ``torch.cat`` of the weights, biases and cached
    constant pieces (zero biases, identity norms), and all integer attributes
    one clone of a cached buffer: a handful of tensor operations per network
    instead of a few per weight layer and attribute.
    """

    def __init__(self, template: _Template):
        steps = template.layout.steps
        weight_steps = [index for index, step in enumerate(steps) if step["kind"] in WEIGHT_KINDS]
        self.layers = [(index, torch.Size(layer.weight_shape), layer.bias,
                        layer.out_neurons * layer.in_neurons, layer.positions,
                        template.width - layer.positions)
                       for index, layer in zip(weight_steps, template.layers)]
        self.first_name = template.layers[0].name
        num_nodes, num_edges, width = template.num_nodes, template.num_edges, template.width
        self.ints = torch.cat([template.node_ids.reshape(-1), template.edge_ids.reshape(-1),
                               template.edge_index.reshape(-1), template.kernel_width])
        self.num_nodes, self.num_edges = num_nodes, num_edges
        # (size, stride, offset) of x, edge_attr, node_norm in the float buffer
        norms = len(NORM_IDENTITY)
        self.float_views = [((num_nodes, 1), (1, 1), num_edges * width),
                            ((num_edges, width), (width, 1), 0),
                            ((num_nodes, norms), (norms, 1), num_edges * width + num_nodes)]
        self.int_sizes = [num_nodes] * 4 + [num_edges] * 2 + [2 * num_edges, 1]
        self.padded = any(pad for *_, pad in self.layers)
        self.sizes = template.sizes
        self.layout_json = template.layout_json
        self._constants: dict[torch.dtype, tuple[torch.Tensor, list, torch.Tensor]] = {}

    def constants(self, dtype: torch.dtype) -> tuple[torch.Tensor, list, torch.Tensor]:
        """Input-neuron zeros, per-layer zero biases (None where the layer has a
        bias) and flat identity norms, of ``dtype``; only ever read (cat copies)."""
        constants = self._constants.get(dtype)
        if constants is None:
            constants = (torch.zeros(self.sizes[0], dtype=dtype),
                         [None if bias else torch.zeros(self.sizes[i + 1], dtype=dtype)
                          for i, (_, _, bias, _, _, _) in enumerate(self.layers)],
                         torch.tensor(NORM_IDENTITY, dtype=dtype).repeat(self.num_nodes))
            self._constants[dtype] = constants
        return constants


def _gathered_graph(template: _Template, module: nn.Module, leaves: list[nn.Module],
                    nonfinite: str) -> NeuronGraph | None:
    """:func:`from_module`'s graph read from the leaves' parameters, or ``None``
    when the module needs the general path: norms, state-dict hooks, tensors
    off the CPU, dtypes that need converting, shapes that do not match the
    layout (which the general path reports), non-finite values to report."""
    if template.norm_steps or module._state_dict_hooks or module._state_dict_pre_hooks:
        return None
    for leaf in leaves:
        if leaf._state_dict_hooks or leaf._state_dict_pre_hooks:
            return None
    plan = template.gather
    first_weight = leaves[plan.layers[0][0]]._parameters.get("weight")
    if type(first_weight) not in _PLAIN_TENSORS:
        return None
    # the general path takes the dtype of the first layer's weight (see _weight_dtype)
    dtype = first_weight.dtype if plan.first_name and first_weight.is_floating_point() \
        else torch.get_default_dtype()
    zeros_in, zero_biases, identity_norms = plan.constants(dtype)
    weights, biases = [], [zeros_in]
    for (index, shape, bias, _, _, _), zero_bias in zip(plan.layers, zero_biases):
        parameters = leaves[index]._parameters
        weight = parameters.get("weight")
        if type(weight) not in _PLAIN_TENSORS or weight.shape != shape \
                or weight.dtype != dtype or not weight.is_cpu or weight.layout != torch.strided:
            return None
        weights.append(weight)
        if bias:
            value = parameters.get("bias")
            if type(value) not in _PLAIN_TENSORS or value.shape != shape[:1] \
                    or value.dtype != dtype or not value.is_cpu or value.layout != torch.strided:
                return None
            biases.append(value)
        else:
            biases.append(zero_bias)
    biases.append(identity_norms)
    grad = torch.is_grad_enabled()
    torch.set_grad_enabled(False)  # cheaper than a no_grad() block
    try:
        if plan.padded:  # layers with fewer kernel positions than the graph
            weights = [F.pad(weight.reshape(rows, positions), (0, pad)) if pad else weight
                       for weight, (_, _, _, rows, positions, pad) in zip(weights, plan.layers)]
        # flatten + cat in one C++ call (how DDP packs gradients); always a copy,
        # as it gets at least a weight, a bias and two constants
        values = _flatten_dense_tensors(weights + biases)
    finally:
        torch.set_grad_enabled(grad)
    if nonfinite == "error" and not math.isfinite(values.sum().item()):
        return None  # the general path names the offending tensor (or finds an overflow)
    node_layer, node_role, node_pos, node_act, edge_layer, edge_kind, edge_index, kernel_width = \
        torch.split_with_sizes(plan.ints.clone(), plan.int_sizes)
    x_view, edge_view, norm_view = plan.float_views
    return NeuronGraph.from_attributes(
        x=values.as_strided(*x_view), edge_index=edge_index.view(2, plan.num_edges),
        edge_attr=values.as_strided(*edge_view), node_layer=node_layer, node_role=node_role,
        node_pos=node_pos, node_act=node_act, edge_layer=edge_layer, edge_kind=edge_kind,
        node_norm=values.as_strided(*norm_view), kernel_width=kernel_width,
        layout=plan.layout_json, num_nodes=plan.num_nodes)


def _graph_from_state(template: _Template, state_dict: Mapping[str, torch.Tensor],
                      nonfinite: str) -> NeuronGraph:
    dtype = _weight_dtype(state_dict, template.layers)
    named: list[tuple[str, torch.Tensor]] = []

    def entry(key: str, shape: tuple[int, ...]) -> torch.Tensor:
        value = _tensor(state_dict, key, shape)
        named.append((key, value))
        return value

    edges, nodes = [], [torch.zeros(template.sizes[0], dtype=dtype)]
    for layer in template.layers:
        edges.append(_as_edge_rows(entry(state_key(layer.name, "weight"), layer.weight_shape),
                                   layer, template.width, dtype))
        nodes.append(entry(state_key(layer.name, "bias"), (layer.out_neurons,)).to("cpu", dtype)
                     if layer.bias else torch.zeros(layer.out_neurons, dtype=dtype))
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
    edge_index = (template.edge_index.unsqueeze(1) + node_shift.view(1, -1, 1)).reshape(2, -1)
    node_ids = template.node_ids.repeat(1, count)
    edge_ids = template.edge_ids.repeat(1, count)
    attributes = {
        "x": x, "edge_index": edge_index, "edge_attr": edge_attr,
        "node_layer": node_ids[0], "node_role": node_ids[1], "node_pos": node_ids[2],
        "node_act": node_ids[3], "edge_layer": edge_ids[0], "edge_kind": edge_ids[1],
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
    value = state_dict.get(f"{layers[0].name}.weight")
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


def to_state_dict(graph: NeuronGraph) -> "OrderedDict[str, torch.Tensor]":
    """The network's state dict, with its original names, from a raw graph.

    The graph must be raw (one channel): ``x`` ``[N, 1]`` and ``edge_attr``
    ``[E, kernel_width]``. Edges may be missing (a pruned network): their
    weights are zero.
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
    state = OrderedDict()
    for neuron_layer, step in layout.steps_by_neuron_layer():
        span = slice(offsets[neuron_layer], offsets[neuron_layer + 1])
        if step["kind"] in ("linear", "conv"):
            layer = layers[step["name"]]
            state[state_key(layer.name, "weight")] = _layer_weight(graph, layer, offsets, width)
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


def _layer_weight(graph: NeuronGraph, layer, offsets, width: int) -> torch.Tensor:
    mask = graph.edge_layer == layer.index
    src = graph.edge_index[0, mask] - offsets[layer.index - 1]
    dst = graph.edge_index[1, mask] - offsets[layer.index]
    kernels = graph.edge_attr[mask, : layer.positions]
    if (graph.edge_attr[mask, layer.positions:width] != 0).any():
        raise ValueError(f"to_state_dict: layer '{layer.name}' has nonzero entries past its "
                         f"{layer.positions} kernel positions")
    weight = kernels.new_zeros(layer.out_neurons, layer.in_neurons, layer.positions)
    if kernels.size(0) == weight.size(0) * weight.size(1) and _is_canonical(src, dst, layer):
        weight = kernels.reshape(weight.shape).clone()
    else:
        weight[dst, src] = kernels
    return weight.reshape(layer.weight_shape)


def _is_canonical(src: torch.Tensor, dst: torch.Tensor, layer) -> bool:
    flat = dst * layer.in_neurons + src
    return bool((flat == torch.arange(flat.numel())).all())


def to_module(graph: NeuronGraph) -> nn.Sequential:
    """Rebuild the network of a raw graph as a flat ``nn.Sequential``.

    The rebuilt module computes the same function as the original; its
    children are numbered ``0, 1, ...`` in chain order (use
    :func:`to_state_dict` for the original parameter names). It is in
    training mode, like a freshly built module.
    """
    layout = _single(graph, "to_module")
    state = to_state_dict(graph)
    dtype = graph.edge_attr.dtype
    children = []
    renamed = OrderedDict()
    for index, step in enumerate(layout.steps):
        child = modules.build(step).to(dtype)
        children.append(child)
        for key in child.state_dict():
            renamed[f"{index}.{key}"] = state[state_key(step["name"], key)]
    module = nn.Sequential(*children)
    module.load_state_dict(renamed)
    return module
