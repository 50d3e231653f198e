"""Networks <-> neuron graphs: ``from_module``, ``to_module`` and state dicts.

Every conversion goes through ``(layout, state_dict)``: a module is
described as a :class:`Layout` plus its state dict, which
:func:`from_state_dict` turns into a :class:`NeuronGraph`;
:func:`to_state_dict` and :func:`to_module` read it back. All copies are
exact: no arithmetic touches a weight on the way.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Mapping

import torch
from torch import nn

from . import modules
from .layout import NORM_KINDS, Layout
from .neuron_graph import NORM_IDENTITY, NeuronGraph
from .trace import module_chain
from .types import Activation, EdgeKind, NodeRole

NONFINITE_CHOICES = ("error", "keep")


# --- module -> layout ----------------------------------------------------
def layout_of(module: nn.Module) -> Layout:
    """The :class:`Layout` of a supported module (see :func:`from_module`)."""
    if not isinstance(module, nn.Module):
        raise TypeError(f"from_module: expected a torch.nn.Module, got {type(module).__name__}")
    steps: list[dict[str, Any]] = []
    channels = None  # output channels of the last conv, while a feature map is live
    flattened = False
    for name, leaf in module_chain(module):
        step = modules.describe(name, leaf)
        if step["kind"] == "conv":
            channels, flattened = step["out"], False
        elif step["kind"] == "flatten":
            flattened = channels is not None
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
    return _checked_layout(steps, module)


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


def from_module(module: nn.Module, *, kernel_width: int | None = None,
                nonfinite: str = "error") -> NeuronGraph:
    """Convert a network into a :class:`NeuronGraph`.

    Args:
        module (torch.nn.Module): an ``nn.Sequential`` (nested or not) or any
            module whose forward is a chain of supported layers.
        kernel_width (int, optional): pad ``edge_attr`` to this many kernel
            positions (to batch with graphs of larger kernels). Default: the
            largest kernel of the network.
        nonfinite (str): ``"error"`` (default) rejects NaN/inf weights,
            ``"keep"`` copies them.
    """
    layout = layout_of(module)
    return from_state_dict(module.state_dict(), layout, kernel_width=kernel_width,
                           nonfinite=nonfinite)


# --- state dict -> graph -------------------------------------------------
def _tensor(state_dict: Mapping[str, torch.Tensor], key: str, shape: tuple[int, ...],
            nonfinite: str) -> torch.Tensor:
    if key not in state_dict:
        raise KeyError(f"from_state_dict: the state dict has no entry '{key}' "
                       f"(expected shape {tuple(shape)})")
    value = state_dict[key]
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"from_state_dict: '{key}' is a {type(value).__name__}, not a tensor")
    if tuple(value.shape) != tuple(shape):
        raise ValueError(f"from_state_dict: '{key}' has shape {tuple(value.shape)}, "
                         f"the layout expects {tuple(shape)}")
    if nonfinite == "error" and value.is_floating_point() and not torch.isfinite(value).all():
        raise ValueError(f"from_state_dict: '{key}' holds NaN or inf values "
                         "(pass nonfinite='keep' to convert them anyway)")
    return value


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
    if nonfinite not in NONFINITE_CHOICES:
        raise ValueError(f"from_state_dict: nonfinite must be one of {NONFINITE_CHOICES}, "
                         f"got {nonfinite!r}")
    layout = Layout.coerce(layout)
    graph = graph_structure(layout, kernel_width, dtype=_weight_dtype(state_dict, layout))
    offsets = layer_offsets(layout)
    for layer, start in zip(layout.weight_layers(), edge_layer_offsets(layout)):
        weight = _tensor(state_dict, f"{layer.name}.weight", layer.weight_shape, nonfinite)
        kernels = weight.reshape(-1, layer.positions).to(graph.edge_attr.dtype)
        graph.edge_attr[start:start + kernels.size(0), : layer.positions] = kernels
        if layer.bias:
            bias = _tensor(state_dict, f"{layer.name}.bias", (layer.out_neurons,), nonfinite)
            graph.x[offsets[layer.index]:offsets[layer.index + 1], 0] = bias
    sizes = layout.neuron_layer_sizes
    for neuron_layer, step in layout.steps_by_neuron_layer():
        span = slice(offsets[neuron_layer], offsets[neuron_layer + 1])
        if step["kind"] in NORM_KINDS:
            for column, key in _norm_entries(step):
                graph.node_norm[span, column] = _tensor(
                    state_dict, f"{step['name']}.{key}", (sizes[neuron_layer],), nonfinite)
            tracked = state_dict.get(f"{step['name']}.num_batches_tracked")
            if step["kind"] == "batchnorm" and tracked is not None \
                    and int(tracked) != step["num_batches_tracked"]:
                layout = _with_batches_tracked(layout, step["name"], int(tracked))
                graph.layout = layout.to_json()
    return graph


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
    layout = Layout.coerce(layout)
    dtype = dtype or torch.get_default_dtype()
    sizes = layout.neuron_layer_sizes
    width = layout.kernel_width if kernel_width is None else int(kernel_width)
    if width < layout.kernel_width:
        raise ValueError(f"kernel_width={width} is smaller than the largest kernel of the "
                         f"network ({layout.kernel_width} positions)")
    offsets = layer_offsets(layout)
    num_nodes = offsets[-1]
    node_role = torch.full((num_nodes,), int(NodeRole.HIDDEN), dtype=torch.long)
    node_role[: sizes[0]] = int(NodeRole.INPUT)
    node_role[offsets[-2]:] = int(NodeRole.OUTPUT)
    node_act = torch.full((num_nodes,), int(Activation.IDENTITY), dtype=torch.long)
    for neuron_layer, step in layout.steps_by_neuron_layer():
        if step["kind"] == "act" and neuron_layer > 0:
            node_act[offsets[neuron_layer]:offsets[neuron_layer + 1]] = int(
                modules.activation_code(step))

    edge_index, edge_layer, edge_kind = [], [], []
    for layer in layout.weight_layers():
        dst = torch.arange(layer.out_neurons).repeat_interleave(layer.in_neurons)
        src = torch.arange(layer.in_neurons).repeat(layer.out_neurons)
        edge_index.append(torch.stack([src + offsets[layer.index - 1],
                                       dst + offsets[layer.index]]))
        edge_layer.append(torch.full((dst.numel(),), layer.index, dtype=torch.long))
        kind = (EdgeKind.CONV if layer.kind == "conv" else
                EdgeKind.FLATTEN if layer.kernel_shape else EdgeKind.LINEAR)
        edge_kind.append(torch.full((dst.numel(),), int(kind), dtype=torch.long))
    edge_index = torch.cat(edge_index, dim=1)
    return NeuronGraph(
        x=torch.zeros(num_nodes, 1, dtype=dtype), edge_index=edge_index,
        edge_attr=torch.zeros(edge_index.size(1), width, dtype=dtype),
        node_layer=torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes)),
        node_role=node_role, node_pos=torch.cat([torch.arange(n) for n in sizes]),
        node_act=node_act, edge_layer=torch.cat(edge_layer), edge_kind=torch.cat(edge_kind),
        node_norm=torch.tensor(NORM_IDENTITY, dtype=dtype).repeat(num_nodes, 1),
        kernel_width=torch.tensor([width]), layout=layout.to_json(), num_nodes=num_nodes)


def _weight_dtype(state_dict: Mapping[str, torch.Tensor], layout: Layout) -> torch.dtype:
    key = f"{layout.weight_layers()[0].name}.weight"
    value = state_dict.get(key)
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
            state[f"{layer.name}.weight"] = _layer_weight(graph, layer, offsets, width)
            if layer.bias:
                state[f"{layer.name}.bias"] = graph.x[span, 0].clone()
            elif bool((graph.x[span, 0] != 0).any()):
                raise ValueError(f"to_state_dict: layer '{layer.name}' has no bias but the "
                                 "graph gives its neurons nonzero biases")
        elif step["kind"] in NORM_KINDS:
            for column, key in _norm_entries(step):
                state[f"{step['name']}.{key}"] = graph.node_norm[span, column].clone()
            if step["kind"] == "batchnorm" and step["track_running_stats"]:
                state[f"{step['name']}.num_batches_tracked"] = torch.tensor(
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
            renamed[f"{index}.{key}"] = state[f"{step['name']}.{key}"]
    module = nn.Sequential(*children)
    module.load_state_dict(renamed)
    return module
