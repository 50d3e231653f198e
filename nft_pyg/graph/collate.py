"""Fast collation of :class:`NeuronGraph` s into a ``torch_geometric`` ``Batch``.

:func:`collate_graphs` returns what ``Batch.from_data_list`` returns (the
same attributes, ``batch``, ``ptr``, slices and increments, so
``to_data_list()``, ``get_example`` and slicing work alike) but does each
attribute in one ``torch.cat`` and shifts ``edge_index`` with one vectorised
add, where PyG makes a tensor per graph for every attribute and every
increment. Anything it does not handle exactly like PyG (other graph
classes, Python scalars or nested attributes, GPU tensors, ``ptr``
attributes, custom ``*batch*`` increments) is collated by PyG itself.

:class:`GraphCollater` and :class:`GraphLoader` put it behind PyG's
``DataLoader`` interface.

Why a fast path beside PyG's collate: ``benchmarks/bench_conversion.py``
measures collation alone at 1.3-2.2x the speed of ``Batch.from_data_list``
(CPU time, SIRENs and the CNN zoo, over our runs), on every training batch; the tests check
that both give the same ``Batch``. It reads PyG's attribute store directly
(``_store``, ``_slice_dict``, ``_inc_dict``), the attributes
``Batch.from_data_list`` itself fills.
"""
from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.utils.data
from torch import Tensor
from torch_geometric.data import Batch
from torch_geometric.data.data import BaseData
from torch_geometric.loader import DataLoader
from torch_geometric.loader.dataloader import Collater
from torch_geometric.utils import cumsum

from .neuron_graph import EDGE_IDS, NODE_IDS, NeuronGraph
from .padding import pad_kernels

__all__ = ["collate_graphs", "GraphCollater", "GraphLoader"]

#: attributes that NeuronGraph.__inc__ never shifts
_UNSHIFTED = frozenset(NODE_IDS + EDGE_IDS + ("kernel_width",))


def collate_graphs(graphs: Sequence[BaseData], follow_batch: Iterable[str] | None = None,
                   exclude_keys: Iterable[str] | None = None) -> Batch:
    """``Batch.from_data_list(graphs, follow_batch, exclude_keys)``, faster for
    :class:`NeuronGraph` s.

    Graphs may differ in layout, size and kernel width: graphs with a
    narrower ``kernel_width`` than the widest of the list are zero-padded to
    it first (as :class:`~nft_pyg.transforms.PadKernels` does, on copies; the
    inputs are not changed, and ``to_module`` of a padded graph rebuilds the
    same network). Other tensors must agree in every dimension but the
    concatenated one, as with PyG; pruned graphs
    (fewer edges, ``edge_mask``) and extra tensor attributes are fine.

    Args:
        graphs (Sequence[NeuronGraph]): the graphs (any ``Data`` is accepted;
            other classes are handed to PyG).
        follow_batch, exclude_keys: as in ``Batch.from_data_list`` (when given,
            PyG collates).
    """
    graphs = _padded(graphs if isinstance(graphs, list) else list(graphs))
    if not follow_batch and not exclude_keys and graphs:
        try:
            batch = _collated(graphs)
        except RuntimeError:  # e.g. mismatched shapes: PyG raises its own error below
            batch = None
        if batch is not None:
            return batch
    return Batch.from_data_list(graphs, follow_batch=follow_batch, exclude_keys=exclude_keys)


def _padded(graphs: list[BaseData]) -> list[BaseData]:
    """The graphs, those with a narrower kernel than the widest padded to it."""
    widths = [_kernel_width(graph) for graph in graphs]
    known = [width for width in widths if width is not None]
    if not known or min(known) == max(known):
        return graphs
    widest = max(known)
    return [pad_kernels(copy.copy(graph), widest) if width is not None and width < widest
            else graph for graph, width in zip(graphs, widths)]


def _kernel_width(graph: BaseData) -> int | None:
    if not isinstance(graph, NeuronGraph):
        return None
    width = graph.get("kernel_width") if hasattr(graph, "get") else None
    if not isinstance(width, Tensor) or width.numel() != 1 or graph.get("edge_attr") is None:
        return None
    return int(width)


def _collated(graphs: list[BaseData]) -> Batch | None:
    """The fast path; ``None`` when PyG should collate."""
    first = graphs[0]
    if type(first) is not NeuronGraph:
        return None
    keys = first._store._mapping.keys()
    mappings = []
    for graph in graphs:
        if type(graph) is not NeuronGraph:
            return None
        mapping = graph._store._mapping
        if mapping.keys() != keys:  # PyG would fail, or drop extra keys
            return None
        mappings.append(mapping)
    if "ptr" in keys:
        return None
    stores = [graph._store for graph in graphs]
    attributes: dict[str, Any] = {}
    slice_dict: dict[str, Any] = {}
    inc_dict: dict[str, Any] = {}
    num_nodes = [mapping["num_nodes"] for mapping in mappings] if "num_nodes" in keys else None
    for key in keys:
        if key == "num_nodes":
            attributes[key] = None  # keeps its place in the key order
            continue
        values = [mapping[key] for mapping in mappings]
        elem = values[0]
        if isinstance(elem, str):  # PyG keeps such values as a list
            attributes[key], slice_dict[key], inc_dict[key] = (
                values, torch.arange(len(values) + 1), None)
            continue
        if type(elem) is not Tensor or elem.layout != torch.strided or elem.is_nested \
                or elem.device.type != "cpu":
            return None
        for value in values:
            if type(value) is not Tensor:
                return None
        collated = _cat(key, values, graphs, stores, num_nodes)
        if collated is None:
            return None
        attributes[key], slice_dict[key], inc_dict[key] = collated

    batch = Batch(_base_cls=NeuronGraph)
    batch.stores_as(first)
    out = batch._store
    for key, value in attributes.items():
        if key == "num_nodes":
            out._num_nodes = num_nodes
            out.num_nodes = sum(num_nodes)
        else:
            out[key] = value
    if stores[0].can_infer_num_nodes:
        repeats = [count or 0 for count in num_nodes] if num_nodes is not None \
            else [store.num_nodes or 0 for store in stores]
        counts = torch.tensor(repeats, dtype=torch.long)
        out.batch = torch.arange(len(graphs)).repeat_interleave(counts)
        out.ptr = cumsum(counts)
    batch._num_graphs = len(graphs)
    batch._slice_dict = slice_dict
    batch._inc_dict = inc_dict
    return batch


def _cat(key: str, values: list[Tensor], graphs: list[NeuronGraph], stores: list,
         num_nodes: list | None) -> tuple[Tensor, Tensor, Tensor] | None:
    """PyG's ``_collate`` of one tensor attribute: value, slices, increments."""
    elem = values[0]
    cat_dim = graphs[0].__cat_dim__(key, elem, stores[0])
    if cat_dim is None or elem.dim() == 0:
        values = [value.unsqueeze(0) for value in values]
        cat_dim = 0
    dim = cat_dim
    sizes = torch.tensor([value.shape[dim] for value in values])
    slices = cumsum(sizes)
    count = len(values)
    shift = None
    if key in _UNSHIFTED or ("batch" not in key and "index" not in key and key != "face"):
        incs = torch.zeros(count, dtype=torch.long)
    else:
        if "batch" not in key and num_nodes is not None:  # Data.__inc__: the node count
            if any(type(n) is not int for n in num_nodes):
                return None
            repeats = num_nodes
        else:
            repeats = [graph.__inc__(key, value, store)
                       for graph, value, store in zip(graphs, values, stores)]
            if any(type(repeat) is not int for repeat in repeats):
                return None
        incs = cumsum(torch.tensor(repeats)[:-1])
        if int(incs[-1]) != 0:
            shift = incs
    if shift is not None and elem.dtype != torch.long:  # keep PyG's per-graph type promotion
        values = [value + inc for value, inc in zip(values, shift)]
        shift = None
    value = _cat_values(values, dim)
    if shift is not None:
        view = [1] * value.dim()
        view[dim] = -1
        value += shift.repeat_interleave(sizes).view(view)
    return value, slices, incs


def _cat_values(values: list[Tensor], dim: int) -> Tensor:
    """``torch.cat``; in a DataLoader worker into shared memory, as PyG does (the
    batch then crosses to the main process without another copy)."""
    if torch.utils.data.get_worker_info() is None:
        return torch.cat(values, dim=dim)
    elem = values[0]
    numel = sum(value.numel() for value in values)
    storage = elem.untyped_storage()._new_shared(numel * elem.element_size(), device=elem.device)
    shape = list(elem.size())
    shape[dim] = sum(value.size(dim) for value in values)
    return torch.cat(values, dim=dim, out=elem.new(storage).resize_(*shape))


class GraphCollater(Collater):
    """PyG's ``Collater`` (the ``collate_fn`` of its ``DataLoader``) with
    :func:`collate_graphs` for lists of graphs.

    Args:
        dataset: the dataset (kept for PyG compatibility).
        follow_batch, exclude_keys: as in ``Batch.from_data_list``.
    """

    def __call__(self, batch: list[Any]) -> Any:
        if batch and isinstance(batch[0], BaseData):
            return collate_graphs(batch, self.follow_batch, self.exclude_keys)
        return super().__call__(batch)  # tuples / dicts of graphs come back here


class GraphLoader(DataLoader):
    """``torch_geometric.loader.DataLoader`` collating with :func:`collate_graphs`.

    Same arguments and batches as PyG's ``DataLoader``; a drop-in
    replacement for datasets of :class:`NeuronGraph` s. Graphs of different
    kernel widths (an MLP and a CNN) batch: each batch is padded to its
    widest kernel (see :func:`collate_graphs`).
    """

    def __init__(self, dataset, batch_size: int = 1, shuffle: bool = False,
                 follow_batch: list[str] | None = None,
                 exclude_keys: list[str] | None = None, **kwargs):
        kwargs.pop("collate_fn", None)
        self.follow_batch = follow_batch
        self.exclude_keys = exclude_keys
        torch.utils.data.DataLoader.__init__(
            self, dataset, batch_size, shuffle,
            collate_fn=GraphCollater(dataset, follow_batch, exclude_keys), **kwargs)
