r"""escnn networks as neuron graphs: a channel view and a field view.

An escnn network (``escnn.nn.SequentialModule`` of ``R2Conv`` / ``R3Conv`` /
``Linear`` layers, pointwise non-linearities, pooling, dropout) has two
natural graphs:

- **channel view** (:func:`from_escnn` with ``view="channel"``, also what
  :func:`~nft_pyg.from_module` gives): the network is exported to plain
  PyTorch (``module.export()``: ``R2Conv`` becomes ``Conv2d`` with the
  expanded filter) and converted as usual, one neuron per channel. Hidden
  channels are permutable in the exported network, but a channel
  permutation that is not a permutation of whole fields of one type gives
  weights that are no longer equivariant filters.
- **field view** (``view="field"``): one node per *field* (a group of
  channels transforming under one representation of the group), typed by
  ``node_field_type`` (an id of its representation). An edge from field
  :math:`b` of layer :math:`l-1` to field :math:`a` of layer :math:`l`
  carries the block ``W[a_channels, b_channels, *kernel]`` of the expanded
  filter, flattened; ``x`` of field :math:`a` is the expanded bias of its
  channels. Permuting the hidden fields of one type (with all their
  channels) keeps the network's function, and since escnn's layers map
  between whole fields, the permuted weights are still equivariant filters.

The user's module is never touched: ``export()`` switches a module to eval
mode (which is also what fills ``R2Conv.filter``, empty in training mode
until expanded), so every conversion works on a deep copy.

Field graphs (see ``docs/escnn.md``):

- ``x`` ``[N, D]``: the field's expanded bias, zero padded to ``D``, the
  largest field size (zeros for input fields and bias-free layers);
- ``edge_attr`` ``[E, B]``: the flattened ``(d_out, d_in, *kernel)`` block,
  zero padded to ``B``, the largest block; ``kernel_width`` is ``[B]``;
- ``node_layer``, ``node_role``, ``node_pos`` (position of the field in its
  layer), ``node_act``, ``edge_layer``, ``edge_kind``, ``node_norm`` as in a
  channel graph, plus ``node_field_type`` ``[N]`` (long; not shifted by
  batching, its name has neither ``index`` nor ``batch``);
- ``field_layout``: a JSON string describing the fields of every layer and
  the representation table (instead of ``layout``; a field graph is turned
  back into weights with :func:`field_to_state_dict` or, when the exported
  network is itself convertible, :func:`field_to_channel_graph`).
"""
from __future__ import annotations

import copy
import json
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from .convert import from_module as _from_torch_module
from .convert import from_state_dict, layout_of
from .families import is_escnn_module, register_escnn_converter
from .modules import UnsupportedModuleError
from .neuron_graph import NORM_IDENTITY, NeuronGraph
from .types import Activation, EdgeKind, NodeRole

VIEWS = ("channel", "field")

# escnn non-linearities -> activation codes (field view ``node_act``)
_ESCNN_ACTIVATIONS = {"ReLU": Activation.RELU, "ELU": Activation.ELU,
                      "LeakyReLU": Activation.LEAKY_RELU}
_POINTWISE_FUNCTIONS = {"relu": Activation.RELU, "elu": Activation.ELU,
                        "sigmoid": Activation.SIGMOID, "tanh": Activation.TANH}


ESCNN_SUPPORTED = ("R2Conv, R3Conv, Linear (groups=1) and, between them, modules that keep the "
                   "fields: ReLU, ELU, LeakyReLU, PointwiseNonLinearity, pointwise / group "
                   "pooling, dropout, IdentityModule (channel view: whatever exports to a "
                   "PyTorch module nft_pyg.from_module supports)")


class EscnnUnsupportedError(UnsupportedModuleError):
    """An escnn module that a neuron graph (of the chosen view) cannot express."""

    def __init__(self, name: str, module: Any, reason: str):
        TypeError.__init__(self, f"module '{name or '<root>'}' of type {type(module).__name__}: "
                           f"{reason}. Supported escnn modules: {ESCNN_SUPPORTED}.")


def _require_escnn(module: Any, where: str) -> None:
    if not is_escnn_module(module):
        raise TypeError(f"{where}: expected an escnn module (escnn.nn.EquivariantModule), got "
                        f"{type(module).__name__}; use nft_pyg.from_module for torch modules")


def export_escnn(module: nn.Module) -> nn.Module:
    """``module.export()`` on a deep copy: the plain PyTorch twin of an escnn network.

    The user's module keeps its mode (``export()`` switches to eval mode).
    Raises :class:`~nft_pyg.graph.modules.UnsupportedModuleError` naming the
    first submodule escnn cannot export.
    """
    _require_escnn(module, "export_escnn")
    with torch.no_grad():
        return _export(_fresh_copy(module), "")


def _fresh_copy(module: nn.Module) -> nn.Module:
    """A deep copy in training mode, so that ``export()`` expands the filters
    from the current parameters.

    In eval mode escnn caches the expanded filters as buffers, computed with
    autograd on, which ``copy.deepcopy`` refuses; they are copied detached.
    """
    memo = {id(t): t.detach().clone() for t in module.buffers() if t.grad_fn is not None}
    duplicate = copy.deepcopy(module, memo)
    duplicate.train()
    return duplicate


def _export(module: nn.Module, name: str) -> nn.Module:
    if type(module).__name__ == "SequentialModule":
        module.eval()
        return nn.Sequential(OrderedDict(
            (child_name, _export(child, f"{name}.{child_name}" if name else child_name)
             if is_escnn_module(child) else child)
            for child_name, child in module._modules.items()))
    try:
        return module.export()
    except Exception as err:  # escnn raises NotImplementedError / RuntimeError
        raise EscnnUnsupportedError(name, module, f"escnn cannot export it to PyTorch ({err}); "
                                     "try view='field'") from None


# --- channel view -------------------------------------------------------------
def _channel_graph(module: nn.Module, kernel_width: int | None, nonfinite: str) -> NeuronGraph:
    exported = export_escnn(module)
    for name, child in exported.named_modules():
        if type(child).__name__ == "MaxPoolChannels":
            raise EscnnUnsupportedError(
                name, child, "GroupPooling takes the maximum over the channels of each field, "
                "which a graph of channels cannot express; use view='field'")
    return _from_torch_module(exported, kernel_width=kernel_width, nonfinite=nonfinite)


# --- field view ---------------------------------------------------------------
def _escnn_chain(module: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    if type(module).__name__ == "SequentialModule":
        chain = []
        for name, child in module._modules.items():
            chain += _escnn_chain(child, f"{prefix}.{name}" if prefix else name)
        return chain
    return [(prefix, module)]


def _is_weight_layer(module: nn.Module) -> bool:
    from escnn.nn import Linear
    from escnn.nn.modules.conv import _RdConv
    return isinstance(module, (_RdConv, Linear))


def _activation(module: nn.Module) -> Activation | None:
    name = type(module).__name__
    if name in _ESCNN_ACTIVATIONS:
        return _ESCNN_ACTIVATIONS[name]
    if name == "PointwiseNonLinearity":
        function = getattr(module._function, "__name__", "")
        if function in _POINTWISE_FUNCTIONS:
            return _POINTWISE_FUNCTIONS[function]
        raise EscnnUnsupportedError("", module, f"unknown pointwise function {function!r}")
    return None


def _type_key(representation) -> str:
    return f"{representation.group.name}:{representation.name}"


def _field_types(field_type) -> list[tuple[str, int]]:
    return [(_type_key(r), int(r.size)) for r in field_type.representations]


def _field_layers(module: nn.Module) -> tuple[list[dict[str, Any]], list[dict[str, Any]],
                                              list[nn.Module]]:
    """(weight layers, other steps, exported weight modules) of an escnn chain."""
    layers, steps, exported = [], [], []
    current = None  # the field type flowing between modules
    for name, child in _escnn_chain(_fresh_copy(module)):
        if not is_escnn_module(child):
            raise EscnnUnsupportedError(name, child, "the field view takes escnn modules only")
        if _is_weight_layer(child):
            if getattr(child, "groups", 1) != 1:
                raise EscnnUnsupportedError(name, child, f"groups={child.groups}, only groups=1")
            if current is not None and child.in_type != current:
                raise EscnnUnsupportedError(name, child, f"its input type {child.in_type} is "
                                             f"not the type {current} the previous layer gives")
            with torch.no_grad():
                torch_layer = _export(child, name)
            layers.append({"name": name, "kind": "linear" if isinstance(torch_layer, nn.Linear)
                           else "conv", "in_fields": _field_types(child.in_type),
                           "out_fields": _field_types(child.out_type),
                           "kernel_size": list(torch_layer.weight.shape[2:]),
                           "bias": torch_layer.bias is not None})
            exported.append(torch_layer)
        else:
            if not layers:
                raise EscnnUnsupportedError(name, child, "the field view needs a weight layer "
                                             "(R2Conv, R3Conv, Linear) first")
            if len(child.in_type) != len(child.out_type) or child.in_type != current:
                raise EscnnUnsupportedError(name, child, "the field view needs every module "
                                             "between weight layers to keep the fields (same "
                                             "number, one output field per input field)")
            if any(True for _ in child.parameters()) or "Norm" in type(child).__name__:
                raise EscnnUnsupportedError(name, child, "it has parameters or is a norm (e.g. a "
                                             "batch norm), which fields cannot carry; use the "
                                             "channel view")
            act = _activation(child)
            steps.append({"name": name, "type": type(child).__name__, "after": len(layers),
                          "act": act.name if act is not None else None})
        current = child.out_type
    if not layers:
        raise EscnnUnsupportedError("", module, "the network has no R2Conv / R3Conv / Linear")
    return layers, steps, exported


def _type_table(layers: list[dict[str, Any]], type_ids: Mapping[str, int] | None
                ) -> dict[str, int]:
    keys = {key: size for layer in layers for key, size in layer["in_fields"]
            + layer["out_fields"]}
    if type_ids is None:
        return {key: i for i, key in enumerate(sorted(keys, key=lambda k: (keys[k], k)))}
    missing = sorted(set(keys) - set(type_ids))
    if missing:
        raise ValueError(f"from_escnn: type_ids has no id for the representation(s) {missing}")
    return {key: int(type_ids[key]) for key in keys}


def neuron_fields(layers: list[dict[str, Any]]) -> list[list[tuple[str, int]]]:
    """Fields of each neuron layer: the first layer's input, then every layer's output."""
    return [layers[0]["in_fields"]] + [layer["out_fields"] for layer in layers]


def field_offsets(sizes: list[int]) -> list[int]:
    """Start of each field (and the end of the last) in a layer of fields of ``sizes``."""
    starts = [0]
    for size in sizes:
        starts.append(starts[-1] + size)
    return starts


def _field_graph(module: nn.Module, nonfinite: str,
                 type_ids: Mapping[str, int] | None) -> NeuronGraph:
    layers, steps, exported = _field_layers(module)
    table = _type_table(layers, type_ids)
    fields = neuron_fields(layers)
    counts = [len(layer_fields) for layer_fields in fields]
    node_start = field_offsets(counts)
    num_nodes, depth = node_start[-1], len(layers)
    dtype = exported[0].weight.dtype
    node_width = max(size for layer_fields in fields for _, size in layer_fields)
    blocks = []
    for layer, torch_layer in zip(layers, exported):
        positions = max(1, torch_layer.weight[0, 0].numel())
        blocks += [d_out * d_in * positions for _, d_out in layer["out_fields"]
                   for _, d_in in layer["in_fields"]]
    edge_width = max(blocks)

    x = torch.zeros(num_nodes, node_width, dtype=dtype)
    edge_attr, edge_index, edge_layer, edge_kind = [], [], [], []
    for l, (layer, torch_layer) in enumerate(zip(layers, exported), start=1):
        weight = torch_layer.weight.detach()
        if nonfinite == "error" and not torch.isfinite(weight).all():
            raise ValueError(f"from_escnn: layer '{layer['name']}' holds NaN or inf values "
                             "(pass nonfinite='keep' to convert them anyway)")
        out_start = field_offsets([size for _, size in layer["out_fields"]])
        in_start = field_offsets([size for _, size in layer["in_fields"]])
        for a in range(len(layer["out_fields"])):
            rows = slice(out_start[a], out_start[a + 1])
            if torch_layer.bias is not None:
                bias = torch_layer.bias.detach()[rows]
                x[node_start[l] + a, : bias.numel()] = bias
            for b in range(len(layer["in_fields"])):
                block = weight[rows, in_start[b]:in_start[b + 1]].reshape(-1)
                edge_attr.append(nn.functional.pad(block, (0, edge_width - block.numel())))
                edge_index.append((node_start[l - 1] + b, node_start[l] + a))
        num_edges = len(layer["out_fields"]) * len(layer["in_fields"])
        edge_layer += [l] * num_edges
        kind = EdgeKind.CONV if layer["kind"] == "conv" else EdgeKind.LINEAR
        edge_kind += [int(kind)] * num_edges

    node_layer = torch.repeat_interleave(torch.arange(depth + 1), torch.tensor(counts))
    node_role = torch.full((num_nodes,), int(NodeRole.HIDDEN), dtype=torch.long)
    node_role[: counts[0]] = int(NodeRole.INPUT)
    node_role[node_start[-2]:] = int(NodeRole.OUTPUT)
    node_act = torch.full((num_nodes,), int(Activation.IDENTITY), dtype=torch.long)
    for step in steps:
        if step["act"] is not None:
            l = step["after"]
            node_act[node_start[l]:node_start[l + 1]] = int(Activation[step["act"]])
    node_field_type = torch.tensor([table[key] for layer_fields in fields
                                    for key, _ in layer_fields], dtype=torch.long)
    field_layout = {"view": "field", "types": {key: {"id": table[key], "size": size}
                                               for layer in layers for key, size in
                                               layer["in_fields"] + layer["out_fields"]},
                    "layers": layers, "steps": steps,
                    "channel_layout": _channel_layout_json(module)}
    return NeuronGraph(
        x=x, edge_index=torch.tensor(edge_index, dtype=torch.long).t().contiguous(),
        edge_attr=torch.stack(edge_attr), node_layer=node_layer, node_role=node_role,
        node_pos=torch.cat([torch.arange(n) for n in counts]), node_act=node_act,
        edge_layer=torch.tensor(edge_layer), edge_kind=torch.tensor(edge_kind),
        node_norm=torch.tensor(NORM_IDENTITY, dtype=dtype).repeat(num_nodes, 1),
        node_field_type=node_field_type, kernel_width=torch.tensor([edge_width]),
        field_layout=json.dumps(field_layout, sort_keys=True, separators=(",", ":")),
        num_nodes=num_nodes)


def _channel_layout_json(module: nn.Module) -> str | None:
    """The channel-level layout of the exported network, if it has one."""
    try:
        return layout_of(export_escnn(module)).to_json()
    except (UnsupportedModuleError, ValueError):
        return None


def from_escnn(module: nn.Module, view: str = "channel", *, kernel_width: int | None = None,
               type_ids: Mapping[str, int] | None = None,
               nonfinite: str = "error") -> NeuronGraph:
    """Convert an escnn network into a :class:`~nft_pyg.NeuronGraph`.

    Args:
        module (escnn.nn.EquivariantModule): a ``SequentialModule`` (nested or
            not) of ``R2Conv`` / ``R3Conv`` / ``Linear`` layers and
            field-preserving modules (pointwise non-linearities, pooling,
            ``GroupPooling``, dropout), or a single weight layer.
        view (str): ``"channel"`` (one neuron per channel of the exported
            network; needs every module to export to a supported PyTorch
            module, so no ``GroupPooling`` or ``PointwiseNonLinearity``) or
            ``"field"`` (one node per field; no modules with parameters
            between weight layers, e.g. batch norms).
        kernel_width (int, optional): channel view only, see
            :func:`~nft_pyg.from_module`.
        type_ids (Mapping[str, int], optional): field view only: the id of
            each representation, keyed ``"<group name>:<representation
            name>"`` (e.g. ``"C4:regular"``), to share one vocabulary over a
            dataset. Default: the network's representations numbered by
            (size, key).
        nonfinite (str): ``"error"`` (default) or ``"keep"``.

    The module is not modified and keeps its training / eval mode.
    """
    _require_escnn(module, "from_escnn")
    if view not in VIEWS:
        raise ValueError(f"from_escnn: view must be one of {VIEWS}, got {view!r}")
    if view == "channel":
        if type_ids is not None:
            raise ValueError("from_escnn: type_ids is for view='field'")
        return _channel_graph(module, kernel_width, nonfinite)
    if kernel_width is not None:
        raise ValueError("from_escnn: kernel_width is for view='channel' (a field graph's "
                         "edges carry whole blocks; pad them with PadKernels)")
    return _field_graph(module, nonfinite, type_ids)


# --- field graph -> weights -------------------------------------------------
def field_layout_of(graph: NeuronGraph) -> dict[str, Any]:
    """The parsed ``field_layout`` of a single field graph."""
    layout = getattr(graph, "field_layout", None)
    if layout is None:
        raise ValueError("field_layout_of: not a field graph (no field_layout); build it with "
                         "from_escnn(module, view='field')")
    if isinstance(layout, (list, tuple)):
        raise ValueError("field_layout_of: this is a batch; use to_data_list()")
    return json.loads(layout)


def field_to_state_dict(graph: NeuronGraph) -> OrderedDict[str, Tensor]:
    """The state dict of ``export_escnn(module)`` from a (possibly permuted) field graph.

    Keys are ``"<layer name>.weight"`` / ``".bias"`` of the exported weight
    layers, so ``export_escnn(module).load_state_dict(...)`` rebuilds the
    network (:func:`field_to_exported` does both). At every position the
    graph must hold a field of the type the network has there: a
    permutation that exchanged fields of different types raises a
    :class:`ValueError`.
    """
    layout = field_layout_of(graph)
    layers = layout["layers"]
    fields = neuron_fields(layers)
    node_start = field_offsets([len(f) for f in fields])
    if graph.num_nodes != node_start[-1]:
        raise ValueError(f"field_to_state_dict: the graph has {graph.num_nodes} fields, the "
                         f"layout {node_start[-1]}")
    order = torch.argsort(graph.node_layer * (graph.num_nodes + 1) + graph.node_pos)
    expected = torch.tensor([layout["types"][key]["id"] for f in fields for key, _ in f])
    if not torch.equal(graph.node_field_type[order], expected):
        raise ValueError(f"field_to_state_dict: the graph's field types (layer by layer) are "
                         f"{graph.node_field_type[order].tolist()}, the network needs "
                         f"{expected.tolist()} (a permutation mixed field types)")
    state = OrderedDict()
    for l, layer in enumerate(layers, start=1):
        d_out = [size for _, size in layer["out_fields"]]
        d_in = [size for _, size in layer["in_fields"]]
        positions = 1
        for k in layer["kernel_size"]:
            positions *= k
        weight = graph.edge_attr.new_zeros(sum(d_out), sum(d_in), positions)
        out_start, in_start = field_offsets(d_out), field_offsets(d_in)
        mask = graph.edge_layer == l
        src, dst = graph.edge_index[:, mask]
        pos_src, pos_dst = graph.node_pos[src], graph.node_pos[dst]
        for block, a, b in zip(graph.edge_attr[mask], pos_dst.tolist(), pos_src.tolist()):
            size = d_out[a] * d_in[b] * positions
            if (block[size:] != 0).any():
                raise ValueError(f"field_to_state_dict: an edge of layer '{layer['name']}' has "
                                 f"nonzero entries past its {size} block entries")
            weight[out_start[a]:out_start[a + 1], in_start[b]:in_start[b + 1]] = \
                block[:size].reshape(d_out[a], d_in[b], positions)
        state[f"{layer['name']}.weight"] = weight.reshape(sum(d_out), sum(d_in),
                                                          *layer["kernel_size"])
        if layer["bias"]:
            nodes = order[node_start[l]:node_start[l + 1]]
            state[f"{layer['name']}.bias"] = torch.cat(
                [graph.x[node, :d] for node, d in zip(nodes.tolist(), d_out)])
    return state


def field_to_exported(graph: NeuronGraph, module: nn.Module) -> nn.Module:
    """``export_escnn(module)`` carrying the weights of the field graph ``graph``
    (e.g. a permuted or edited copy of ``from_escnn(module, view="field")``)."""
    exported = export_escnn(module)
    exported.load_state_dict(field_to_state_dict(graph))
    return exported


def field_to_channel_graph(graph: NeuronGraph) -> NeuronGraph:
    """The channel-view graph of the same network (equal to ``from_escnn(module)``).

    Only when the exported network is itself convertible (no
    ``GroupPooling``); otherwise use :func:`field_to_state_dict`.
    """
    layout = field_layout_of(graph)
    if layout["channel_layout"] is None:
        raise ValueError("field_to_channel_graph: the exported network has modules a channel "
                         "graph cannot express (e.g. GroupPooling); use field_to_state_dict")
    return from_state_dict(field_to_state_dict(graph), layout["channel_layout"])


register_escnn_converter(from_escnn)
