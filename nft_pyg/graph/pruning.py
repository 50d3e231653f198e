"""Pruned networks as neuron graphs: a pruned weight is a missing edge.

A pruned graph is a raw :class:`NeuronGraph` with fewer edges, in canonical
order, plus one attribute:

- ``edge_mask`` ``[E, S]`` (bool): which kernel entries of each kept edge
  survive pruning. An edge whose whole kernel is pruned is dropped; an edge
  of a conv or flatten layer that keeps some entries stays, with its pruned
  entries set to zero in ``edge_attr`` and ``False`` here. Padding columns
  (past the layer's own kernel size) are ``False``. For an MLP (``S = 1``)
  every kept edge has ``edge_mask = [True]``.

``edge_mask`` is what makes the round trip exact: a kept weight that happens
to be zero stays distinguishable from a pruned one. Per-layer masks follow
``torch.nn.utils.prune``: one bool tensor of the weight's shape per weight
layer (its ``weight_mask``), keyed by the weight's state-dict name.

- :func:`prune` drops / zeroes masked entries of a raw graph;
- :func:`from_pruned_module` converts a module and its masks (given, or the
  ``weight_mask`` buffers of ``torch.nn.utils.prune``) into a pruned graph;
- :func:`to_pruned_state_dict` / :func:`to_pruned_module` give back the
  weights (zeros where pruned) and the masks;
- :func:`masks_to_entry_mask` / :func:`entry_mask_to_masks` convert between
  per-layer masks and an ``[E, S]`` mask over the edges of the dense graph.

See ``docs/tickets.md``.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import prune as torch_prune
from torch_geometric.data import Batch

from .convert import (
    edge_layer_offsets,
    from_state_dict,
    layer_offsets,
    layout_of,
    to_module,
    to_state_dict,
)
from .layout import Layout, state_key
from .neuron_graph import NeuronGraph

#: name of the per-entry survival mask of a pruned graph
EDGE_MASK = "edge_mask"

__all__ = ["EDGE_MASK", "prune", "positions_mask", "entry_mask_of", "from_pruned_module",
           "to_pruned_state_dict", "to_pruned_module", "apply_masks", "masks_to_entry_mask",
           "entry_mask_to_masks", "sparsity"]


def positions_mask(graph) -> Tensor:
    """``[E, S]`` bool: the real (unpadded) kernel entries of each edge."""
    layout = graph.layout_obj
    width = int(graph.kernel_width.reshape(-1)[0])
    sizes = torch.tensor([0] + [layer.positions for layer in layout.weight_layers()],
                         device=graph.edge_layer.device)
    return torch.arange(width, device=sizes.device) < sizes[graph.edge_layer].unsqueeze(1)


def entry_mask_of(graph) -> Tensor:
    """``[E, S]`` bool: the surviving entries of each edge of a raw graph
    (``edge_mask`` of a pruned graph; every real entry of an unpruned one)."""
    mask = getattr(graph, EDGE_MASK, None)
    return positions_mask(graph) if mask is None else mask


def _check_raw_single(graph, where: str) -> Layout:
    if isinstance(graph, Batch) or isinstance(getattr(graph, "layout", None), (list, tuple)):
        raise ValueError(f"{where}: got a batch; use it on each graph of batch.to_data_list()")
    if not isinstance(graph, NeuronGraph):
        raise TypeError(f"{where}: expected a NeuronGraph, got {type(graph).__name__}")
    width = int(graph.kernel_width.reshape(-1)[0])
    if graph.x.dim() != 2 or graph.x.size(1) != 1 or graph.edge_attr.size(-1) != width:
        raise ValueError(f"{where}: expects a raw graph with x [N, 1] and edge_attr "
                         f"[E, {width}], got x {tuple(graph.x.shape)} and edge_attr "
                         f"{tuple(graph.edge_attr.shape)}")
    return graph.layout_obj


def _as_bool(mask: Tensor, where: str, what: str) -> Tensor:
    if not isinstance(mask, Tensor):
        raise TypeError(f"{where}: {what} should be a tensor, got {type(mask).__name__}")
    if mask.dtype == torch.bool:
        return mask
    if not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError(f"{where}: {what} should be boolean or hold only 0 and 1")
    return mask != 0


def prune(graph: NeuronGraph, mask: Tensor) -> NeuronGraph:
    """Prune a raw graph: drop fully masked edges, zero masked kernel entries.

    Args:
        graph (NeuronGraph): a raw graph, dense or already pruned (masks then
            combine: an entry survives if it survived before and ``mask``
            keeps it).
        mask (Tensor): ``[E]`` (keep / drop whole edges) or ``[E, S]`` (per
            kernel entry) over the graph's current edges, bool or 0 / 1.

    Returns:
        A new graph with the kept edges in canonical order, their
        ``edge_attr`` zero at pruned entries, ``edge_mask`` ``[E', S]`` and
        every other edge attribute (any ``[E, ...]`` tensor) restricted to
        the kept edges. Nodes are never removed.
    """
    where = "prune"
    _check_raw_single(graph, where)
    num_edges, width = graph.edge_attr.shape
    mask = _as_bool(mask, where, "mask").to(graph.edge_attr.device)
    if mask.dim() == 1:
        mask = mask.unsqueeze(1).expand(-1, width)
    if tuple(mask.shape) != (num_edges, width):
        raise ValueError(f"{where}: mask has shape {tuple(mask.shape)}, expected [{num_edges}] "
                         f"or [{num_edges}, {width}] (edges of the graph, kernel width)")
    survives = entry_mask_of(graph) & mask
    keep = survives.any(1)
    out = graph.clone()
    out.__dict__.pop("_nft_structure", None)  # cached group ids of the old structure
    for key in graph.keys():
        value = graph[key]
        if key == "edge_index":
            out.edge_index = value[:, keep]
        elif key == "edge_attr":
            out.edge_attr = torch.where(survives, value, value.new_zeros(()))[keep]
        elif key != EDGE_MASK and isinstance(value, Tensor) and value.dim() > 0 \
                and graph.is_edge_attr(key):
            out[key] = value[keep]
    out[EDGE_MASK] = survives[keep]
    return out


# --- per-layer masks <-> [E, S] masks over the dense graph ---------------------------
def masks_to_entry_mask(masks: Mapping[str, Tensor], layout: Layout | str | list,
                        kernel_width: int | None = None) -> Tensor:
    """Per-layer weight masks -> ``[E, S]`` bool over the edges of the dense graph.

    A weight layer missing from ``masks`` is kept whole.
    """
    layout = Layout.coerce(layout)
    width = layout.kernel_width if kernel_width is None else int(kernel_width)
    layers = layout.weight_layers()
    known = {state_key(layer.name, "weight") for layer in layers}
    unknown = sorted(set(masks) - known)
    if unknown:
        raise KeyError(f"masks: {unknown} name no weight of the layout (expected some of "
                       f"{sorted(known)})")
    blocks = []
    for layer in layers:
        key = state_key(layer.name, "weight")
        mask = masks.get(key)
        if mask is None:
            mask = torch.ones(layer.weight_shape, dtype=torch.bool)
        mask = _as_bool(mask, "masks", f"'{key}'")
        if tuple(mask.shape) != tuple(layer.weight_shape):
            raise ValueError(f"masks: '{key}' has shape {tuple(mask.shape)}, the weight has "
                             f"{tuple(layer.weight_shape)}")
        rows = mask.reshape(-1, layer.positions).cpu()
        blocks.append(F.pad(rows, (0, width - layer.positions), value=False))
    return torch.cat(blocks)


def entry_mask_to_masks(entry_mask: Tensor, layout: Layout | str | list
                        ) -> OrderedDict[str, Tensor]:
    """``[E, S]`` (or ``[E]``) mask over the dense graph's edges -> per-layer masks."""
    layout = Layout.coerce(layout)
    offsets = edge_layer_offsets(layout)
    if entry_mask.size(0) != offsets[-1]:
        raise ValueError(f"entry_mask_to_masks: {entry_mask.size(0)} rows, the dense graph "
                         f"has {offsets[-1]} edges")
    entry_mask = _as_bool(entry_mask, "entry_mask_to_masks", "entry_mask")
    if entry_mask.dim() == 1:
        entry_mask = entry_mask.unsqueeze(1)
    masks = OrderedDict()
    for layer in layout.weight_layers():
        rows = entry_mask[offsets[layer.index - 1]:offsets[layer.index]]
        if rows.size(1) == 1 and layer.positions > 1:
            rows = rows.expand(-1, layer.positions)
        masks[state_key(layer.name, "weight")] = rows[:, :layer.positions].reshape(
            layer.weight_shape).clone()
    return masks


# --- modules <-> pruned graphs --------------------------------------------------------
def _leaf(module: nn.Module, name: str) -> nn.Module:
    return module.get_submodule(name) if name else module


def from_pruned_module(module: nn.Module, masks: Mapping[str, Tensor] | None = None, *,
                       kernel_width: int | None = None) -> NeuronGraph:
    """A pruned network as a pruned neuron graph (see the module docstring).

    Args:
        module (nn.Module): any network :func:`~nft_pyg.from_module` accepts,
            possibly pruned with ``torch.nn.utils.prune`` (its ``weight_orig``
            / ``weight_mask`` are read: the effective weight is their product).
        masks (Mapping[str, Tensor], optional): per-layer weight masks
            (bool or 0 / 1, the weight's shape), keyed by the weight's
            state-dict name (``"<layer>.weight"``). Layers not named keep
            their ``weight_mask`` buffer if pruned with ``torch.nn.utils.prune``,
            else every weight. Masked weights become zero / missing edges
            whatever their stored value.
        kernel_width (int, optional): see :func:`~nft_pyg.from_module`.
    """
    layout = layout_of(module)
    masks = dict(masks or {})
    state = dict(module.state_dict())
    for layer in layout.weight_layers():
        key = state_key(layer.name, "weight")
        leaf = _leaf(module, layer.name)
        state[key] = leaf.weight.detach()
        buffer = getattr(leaf, "weight_mask", None)
        if key not in masks and isinstance(buffer, Tensor):
            masks[key] = buffer
    graph = from_state_dict(state, layout, kernel_width=kernel_width)
    return prune(graph, masks_to_entry_mask(masks, layout, int(graph.kernel_width[0])))


def to_pruned_state_dict(graph: NeuronGraph) -> tuple[OrderedDict[str, Tensor],
                                                      OrderedDict[str, Tensor]]:
    """``(state_dict, masks)`` of a (pruned) raw graph, with the original names.

    Pruned weights are zero in the state dict and ``False`` in the masks.
    """
    layout = _check_raw_single(graph, "to_pruned_state_dict")
    state = to_state_dict(graph)
    survives = entry_mask_of(graph)
    offsets = layer_offsets(layout)
    masks = OrderedDict()
    for layer in layout.weight_layers():
        rows = graph.edge_layer == layer.index
        src = graph.edge_index[0, rows] - offsets[layer.index - 1]
        dst = graph.edge_index[1, rows] - offsets[layer.index]
        mask = torch.zeros(layer.out_neurons, layer.in_neurons, layer.positions,
                           dtype=torch.bool, device=survives.device)
        mask[dst, src] = survives[rows, :layer.positions]
        masks[state_key(layer.name, "weight")] = mask.reshape(layer.weight_shape)
    return state, masks


def to_pruned_module(graph: NeuronGraph) -> tuple[nn.Sequential, OrderedDict[str, Tensor]]:
    """``(module, masks)``: the flat ``nn.Sequential`` of :func:`~nft_pyg.to_module`
    (zeros where pruned) and its weight masks, keyed by the rebuilt module's
    names (``"<step index>.weight"``), ready for :func:`apply_masks`."""
    layout = _check_raw_single(graph, "to_pruned_module")
    _, masks = to_pruned_state_dict(graph)
    module = to_module(graph)
    index_of = {step["name"]: index for index, step in enumerate(layout.steps)}
    renamed = OrderedDict()
    for layer in layout.weight_layers():
        renamed[f"{index_of[layer.name]}.weight"] = masks[state_key(layer.name, "weight")]
    return module, renamed


def apply_masks(module: nn.Module, masks: Mapping[str, Tensor]) -> nn.Module:
    """Attach masks with ``torch.nn.utils.prune.custom_from_mask`` (in place):
    the module then keeps pruned weights at zero while training."""
    for key, mask in masks.items():
        name, _, parameter = key.rpartition(".")
        if parameter != "weight":
            raise KeyError(f"apply_masks: '{key}' is not a weight name ('<module>.weight')")
        torch_prune.custom_from_mask(_leaf(module, name), "weight",
                                     _as_bool(mask, "apply_masks", f"'{key}'"))
    return module


def sparsity(graph: NeuronGraph) -> float:
    """Fraction of the weights (kernel entries) of the dense network that are pruned."""
    layout = graph.layout_obj
    total = sum(layer.out_neurons * layer.in_neurons * layer.positions
                for layer in layout.weight_layers())
    return 1.0 - int(entry_mask_of(graph).sum()) / total
