r"""Neuron permutations: the symmetry group of a network's weight space.

Permuting the hidden neurons of a layer (the rows of :math:`W_l, b_l` and
the columns of :math:`W_{l+1}`; for a conv, its output channels and the next
layer's input channels) leaves the function a network computes unchanged.
A :class:`NeuronPermutation` holds one permutation per neuron layer
``0..L``; :func:`permute` applies it to a module, a state dict, a
:class:`~nft_pyg.graph.NeuronGraph` (raw or carrying operator features, single
or batched) or a :class:`~nft_pyg.tensor.WeightSpace`, and
:func:`permute_features` applies it to operator features laid on a graph.

Convention: the new neuron at position ``p`` of layer ``l`` is the old
neuron ``perm[l][p]``. Every path gives the same network: permuting a module
and converting it with :func:`~nft_pyg.from_module` equals converting it and
permuting the graph, tensor for tensor.
"""
from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch_geometric.data import Batch, Data

from ..graph.accessors import batch_vector
from ..graph.convert import layout_of
from ..graph.layout import NORM_KINDS, WEIGHT_KINDS, Layout, state_key
from ..graph.neuron_graph import EDGE_IDS, NODE_IDS
from ..graph.types import EdgeKind
from ..tensor.weight_space import WeightSpace

_NORM_ENTRIES = ("weight", "bias", "running_mean", "running_var")


class NeuronPermutation:
    """One permutation per neuron layer ``0..L`` of a network.

    Args:
        layers (Sequence[Tensor | Sequence[int]]): ``layers[l]`` is a
            permutation of ``range(n_l)``; the new neuron at position ``p`` of
            layer ``l`` is the old neuron ``layers[l][p]``.
    """

    def __init__(self, layers: Sequence[Tensor | Sequence[int]]):
        if len(layers) < 2:
            raise ValueError(f"NeuronPermutation: needs one permutation per neuron layer "
                             f"(at least 2: inputs and outputs), got {len(layers)}")
        self.layers = [torch.as_tensor(p, dtype=torch.long).reshape(-1) for p in layers]
        for l, p in enumerate(self.layers):
            if not torch.equal(p.sort().values, torch.arange(p.numel(), device=p.device)):
                raise ValueError(f"NeuronPermutation: layer {l} is not a permutation of "
                                 f"range({p.numel()}): {p.tolist()}")

    @classmethod
    def identity(cls, sizes: Sequence[int]) -> NeuronPermutation:
        """The identity on neuron layers of sizes ``[n_0, ..., n_L]``."""
        return cls([torch.arange(int(n)) for n in sizes])

    @property
    def sizes(self) -> list[int]:
        """``[n_0, ..., n_L]``."""
        return [p.numel() for p in self.layers]

    @property
    def num_layers(self) -> int:
        """``L``, the number of weight layers."""
        return len(self.layers) - 1

    def is_identity(self) -> bool:
        return all(_is_identity(p) for p in self.layers)

    @property
    def preserves_io(self) -> bool:
        """Whether input and output neurons stay in place (the function is kept)."""
        return _is_identity(self.layers[0]) and _is_identity(self.layers[-1])

    def inverse(self) -> NeuronPermutation:
        return NeuronPermutation([_inverse(p) for p in self.layers])

    def then(self, other: NeuronPermutation) -> NeuronPermutation:
        """The permutation doing ``self`` first, then ``other``.

        ``permute(permute(obj, a), b) == permute(obj, a.then(b))``.
        """
        _check_sizes(self.sizes, other.sizes, "NeuronPermutation.then")
        return NeuronPermutation([p[q] for p, q in zip(self.layers, other.layers)])

    def to(self, device: torch.device | str) -> NeuronPermutation:
        return NeuronPermutation([p.to(device) for p in self.layers])

    def __getitem__(self, layer: int) -> Tensor:
        return self.layers[layer]

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self):
        return iter(self.layers)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NeuronPermutation) and self.sizes == other.sizes and all(
            torch.equal(p.cpu(), q.cpu()) for p, q in zip(self.layers, other.layers))

    def __repr__(self) -> str:
        return f"NeuronPermutation({[p.tolist() for p in self.layers]})"


def _is_identity(p: Tensor) -> bool:
    return torch.equal(p, torch.arange(p.numel(), device=p.device))


def _inverse(p: Tensor) -> Tensor:
    inverse = torch.empty_like(p)
    inverse[p] = torch.arange(p.numel(), device=p.device)
    return inverse


def _check_sizes(expected: Sequence[int], got: Sequence[int], where: str) -> None:
    if list(expected) != list(got):
        raise ValueError(f"{where}: the permutation has neuron layer sizes {list(got)} but "
                         f"the network has {list(expected)}")


# --- random permutations -------------------------------------------------
def random_permutation(obj: Any, generator: torch.Generator | None = None,
                       permute_io: bool = False):
    """A uniformly random function-preserving neuron permutation of a network.

    The layers of a residual stream (joined by residual connections) and the
    two sides of a depthwise conv get one permutation together; a stream
    that holds the input or output layer, and both sides of a conv with
    ``1 < groups < channels``, stay fixed. (A list of layer sizes carries no
    such structure: every hidden layer is permuted independently.)

    Args:
        obj: a single :class:`~nft_pyg.graph.NeuronGraph`, an ``nn.Module``, a
            :class:`~nft_pyg.graph.Layout`, a :class:`~nft_pyg.tensor.WeightSpace`
            or a list of neuron layer sizes. A ``Batch`` of graphs gives a
            list with one independent permutation per graph.
        generator (torch.Generator, optional): source of randomness.
        permute_io (bool): also permute the input and output neurons. Such a
            permutation does NOT preserve the network's function; it is the
            symmetry group of NP (all neurons permutable) operators.
    """
    if isinstance(obj, Batch):
        layouts = obj.layout if isinstance(getattr(obj, "layout", None), list) else None
        return [_random(sizes, generator, permute_io,
                        _residuals_of(layouts[b]) if layouts else [])
                for b, sizes in enumerate(graph_layer_sizes(obj))]
    return _random(_sizes_of(obj, "random_permutation"), generator, permute_io,
                   _residuals_of(obj))


def _residuals_of(obj: Any) -> list[tuple[int, int]]:
    """Pairs of neuron layers that a function-preserving permutation must permute
    alike: residual connections (source, target) and the two sides of a
    depthwise conv; a conv with 1 < groups < channels pins both sides
    (``(l, -1)``: layer ``l`` is not permuted)."""
    if isinstance(obj, str):
        layout = Layout.coerce(obj)
    elif isinstance(obj, Layout):
        layout = obj
    elif isinstance(obj, nn.Module):
        layout = layout_of(obj)
    elif isinstance(obj, Data) and isinstance(getattr(obj, "layout", None), str):
        layout = Layout.coerce(obj.layout)
    else:
        return []
    pairs = list(layout.residuals())
    for layer in layout.weight_layers():
        if layer.groups == 1:
            continue
        if layer.groups == layer.in_neurons == layer.out_neurons:
            pairs.append((layer.index - 1, layer.index))
        else:
            pairs += [(layer.index - 1, -1), (layer.index, -1)]
    return pairs


def _random(sizes: Sequence[int], generator, permute_io: bool,
            residuals: Sequence[tuple[int, int]] = ()) -> NeuronPermutation:
    """Independent permutations per layer, except that the layers joined by
    residual connections (a residual stream) share one, and a stream that
    contains the input or output layer stays fixed (unless ``permute_io``)."""
    last = len(sizes) - 1
    stream = list(range(len(sizes)))  # union-find: layer -> representative
    pinned = set()

    def root(layer: int) -> int:
        while stream[layer] != layer:
            layer = stream[layer]
        return layer

    for source, target in residuals:
        if target == -1:
            pinned.add(source)
        else:
            stream[root(target)] = root(source)
    fixed = {root(layer) for layer in pinned} | (
        {root(layer) for layer in (0, last)} if not permute_io else set())
    chosen: dict[int, Tensor] = {}
    layers = []
    for layer, n in enumerate(sizes):
        r = root(layer)
        if r not in chosen:
            chosen[r] = torch.arange(n) if r in fixed else torch.randperm(n, generator=generator)
        layers.append(chosen[r])
    return NeuronPermutation(layers)


def _sizes_of(obj: Any, where: str) -> list[int]:
    if isinstance(obj, Layout):
        return obj.neuron_layer_sizes
    if isinstance(obj, WeightSpace):
        return obj.neuron_layer_sizes
    if isinstance(obj, nn.Module):
        return layout_of(obj).neuron_layer_sizes
    if isinstance(obj, Data):
        return graph_layer_sizes(obj)[0]
    if isinstance(obj, (list, tuple)) and all(isinstance(n, int) for n in obj):
        return list(obj)
    raise TypeError(f"{where}: expected a NeuronGraph, an nn.Module, a Layout, a WeightSpace "
                    f"or a list of layer sizes, got {type(obj).__name__}")


def graph_layer_sizes(graph: Data) -> list[list[int]]:
    """``[n_0, ..., n_L]`` of each graph of a graph or batch, from ``node_layer``."""
    if getattr(graph, "node_layer", None) is None:
        raise ValueError("the graph has no node_layer; build it with nft_pyg.from_module")
    batch = batch_vector(graph)
    num_graphs = int(batch.max()) + 1 if batch.numel() else 0
    depth = int(graph.node_layer.max()) + 1
    counts = torch.bincount(batch * depth + graph.node_layer, minlength=num_graphs * depth)
    sizes = []
    for row in counts.view(num_graphs, depth).tolist():
        while row and row[-1] == 0:
            row.pop()
        sizes.append(row)
    return sizes


# --- index maps on graphs -------------------------------------------------
@dataclass
class _GraphMaps:
    """Where each old node / edge goes in the permuted graph's canonical order."""

    node_dest: Tensor  # [N] new index of each old node
    edge_dest: Tensor  # [E] new index of each old edge
    new_pos: Tensor  # [N] new node_pos of each old node


def _per_graph(perm, num_graphs: int, where: str) -> list[NeuronPermutation]:
    if isinstance(perm, NeuronPermutation):
        return [perm] * num_graphs
    perms = list(perm)
    if not all(isinstance(p, NeuronPermutation) for p in perms):
        raise TypeError(f"{where}: expected a NeuronPermutation or a list of them")
    if len(perms) != num_graphs:
        raise ValueError(f"{where}: got {len(perms)} permutations for a batch of "
                         f"{num_graphs} graphs (give one per graph)")
    return perms


def _graph_maps(graph: Data, perm, where: str) -> _GraphMaps:
    """Index arithmetic from ``node_layer`` / ``node_pos`` (no loops over nodes/edges).

    With ``B`` graphs and neuron layers padded to ``D``, a node of graph
    ``b`` and layer ``l`` belongs to group ``b * D + l``; groups are laid out
    batch-major, so the canonical index of a node is the start of its group
    plus its position, and that of an edge the start of its (graph, weight
    layer) block plus ``dst_pos * n_in + src_pos``.
    """
    for key in ("edge_index", "node_layer", "node_pos"):
        if getattr(graph, key, None) is None:
            raise ValueError(f"{where}: the graph has no {key}; build it with "
                             "nft_pyg.from_module or keep the structure attributes")
    node_layer, node_pos = graph.node_layer, graph.node_pos
    device = node_pos.device
    batch = batch_vector(graph)
    num_graphs = int(batch.max()) + 1 if batch.numel() else 0
    perms = _per_graph(perm, num_graphs, where)
    depth = max(max(len(p) for p in perms), int(node_layer.max()) + 1)
    sizes = torch.zeros(num_graphs, depth, dtype=torch.long)
    for b, p in enumerate(perms):
        sizes[b, : len(p)] = torch.tensor(p.sizes)
    sizes = sizes.to(device)
    flat_sizes = sizes.reshape(-1)
    group = batch * depth + node_layer
    counts = torch.bincount(group, minlength=num_graphs * depth)
    if not torch.equal(counts, flat_sizes):
        bad = int((counts != flat_sizes).nonzero()[0, 0]) // depth
        graph_sizes = counts.view(num_graphs, depth)[bad].tolist()
        while len(graph_sizes) > 1 and graph_sizes[-1] == 0:
            graph_sizes.pop()
        which = f" (graph {bad} of the batch)" if num_graphs > 1 else ""
        raise ValueError(f"{where}: the permutation has neuron layer sizes {perms[bad].sizes} "
                         f"but the graph{which} has {graph_sizes}")
    if bool((node_pos < 0).any()) or bool((node_pos >= flat_sizes[group]).any()):
        raise ValueError(f"{where}: node_pos holds a position outside its layer")
    node_start = flat_sizes.cumsum(0) - flat_sizes
    inverse = torch.cat([_inverse(q.to(device)) for p in perms for q in p.layers]
                        + [torch.zeros(0, dtype=torch.long, device=device)])
    # index of each node in the canonical graph before / after permuting; the
    # inverses are concatenated in group order, so the old index also indexes them
    node_base = node_start[group]
    old_index = node_base + node_pos
    new_pos = inverse[old_index]
    new_index = node_base + new_pos
    canonical = torch.equal(old_index, torch.arange(old_index.numel(), device=device))
    node_dest = new_index if canonical else _rank(new_index)

    in_sizes = torch.cat([torch.zeros(num_graphs, 1, dtype=torch.long, device=device),
                          sizes[:, :-1]], dim=1).reshape(-1)
    block = flat_sizes * in_sizes  # edges of the weight layer ending at each group
    edge_base = (block.cumsum(0) - block)[group]
    node_in = in_sizes[group]
    # edge index in the full canonical graph: start of the target's row + source position
    src, dst = graph.edge_index
    old_edge = (edge_base + node_pos * node_in)[dst] + node_pos[src]
    new_edge = (edge_base + new_pos * node_in)[dst] + new_pos[src]
    full = src.numel() == int(block.sum()) and torch.equal(
        old_edge, torch.arange(src.numel(), device=device))
    edge_kind = getattr(graph, "edge_kind", None)
    residual = edge_kind == int(EdgeKind.RESIDUAL) if edge_kind is not None else None
    if residual is not None and bool(residual.any()):
        # residual edges follow their graph's weight edges, sorted by (target, source)
        graph_of_edge = batch[dst]
        starts = (block.cumsum(0) - block).view(num_graphs, depth)[:, 0]
        widest = int(block.view(num_graphs, depth).sum(1).max())
        nodes = node_dest.numel()
        within = torch.where(residual, widest + node_dest[dst] * nodes + node_dest[src],
                             new_edge - starts[graph_of_edge])
        edge_dest = _rank(graph_of_edge * (widest + nodes * nodes + 1) + within)
    else:
        edge_dest = new_edge if full else _rank(new_edge)  # pruned or reordered edges: sort
    return _GraphMaps(node_dest, edge_dest, new_pos)


def _rank(keys: Tensor) -> Tensor:
    """Position of each (unique) key in sorted order."""
    rank = torch.empty_like(keys)
    rank[torch.argsort(keys)] = torch.arange(keys.numel(), device=keys.device)
    return rank


def _scatter_rows(value: Tensor, dest: Tensor) -> Tensor:
    out = torch.empty_like(value)
    out[dest] = value
    return out


def permute_features(graph: Data, x: Tensor | None, edge_attr: Tensor | None,
                     perm) -> tuple[Tensor | None, Tensor | None]:
    """Features laid on ``graph``, moved to the permuted graph's canonical order.

    ``permute_features(graph, x, e, perm)`` equals ``(g.x, g.edge_attr)`` of
    ``g = permute(graph_carrying(x, e), perm)``: the features an
    equivariant operator must output on the permuted graph.

    Args:
        graph (NeuronGraph | Batch): the structure the features live on.
        x (Tensor, optional): ``[N, *]`` node features (``None`` to skip).
        edge_attr (Tensor, optional): ``[E, *]`` edge features (``None`` to skip).
        perm (NeuronPermutation | list[NeuronPermutation]): one permutation,
            or one per graph of a batch.
    """
    maps = _graph_maps(graph, perm, "permute_features")
    if x is not None:
        if x.size(0) != maps.node_dest.numel():
            raise ValueError(f"permute_features: x has {x.size(0)} rows, the graph "
                             f"{maps.node_dest.numel()} nodes")
        x = _scatter_rows(x, maps.node_dest.to(x.device))
    if edge_attr is not None:
        if edge_attr.size(0) != maps.edge_dest.numel():
            raise ValueError(f"permute_features: edge_attr has {edge_attr.size(0)} rows, the "
                             f"graph {maps.edge_dest.numel()} edges")
        edge_attr = _scatter_rows(edge_attr, maps.edge_dest.to(edge_attr.device))
    return x, edge_attr


# --- permute -------------------------------------------------------------
def permute(obj: Any, perm):
    """Apply a neuron permutation.

    Args:
        obj: one of

            - an ``nn.Module`` (any module :func:`~nft_pyg.from_module`
              accepts): returns a permuted deep copy, which computes the same
              function when ``perm`` keeps input and output neurons in place;
            - a ``(state_dict, layout)`` pair: returns the permuted state dict
              (entries the layout does not know are kept as they are);
            - a :class:`~nft_pyg.graph.NeuronGraph` or ``Batch``, raw or with
              operator features of any width: returns the permuted graph in
              canonical order (equal to ``from_module(permute(module, perm))``
              for a raw graph);
            - a :class:`~nft_pyg.tensor.WeightSpace`, with or without kernel
              dimensions.
        perm (NeuronPermutation | list[NeuronPermutation]): the permutation;
            a list gives one permutation per graph of a batch / per network
            of a WeightSpace.
    """
    if isinstance(obj, nn.Module):
        return _permute_module(obj, perm)
    if isinstance(obj, Data):
        return _permute_graph(obj, perm)
    if isinstance(obj, WeightSpace):
        return _permute_weight_space(obj, perm)
    if isinstance(obj, tuple) and len(obj) == 2 and isinstance(obj[0], Mapping):
        return permute_state_dict(obj[0], obj[1], perm)
    raise TypeError(f"permute: expected an nn.Module, a NeuronGraph, a WeightSpace or a "
                    f"(state_dict, layout) pair, got {type(obj).__name__}")


def _single_perm(perm, where: str) -> NeuronPermutation:
    if not isinstance(perm, NeuronPermutation):
        raise TypeError(f"{where}: expected a NeuronPermutation, got {type(perm).__name__}")
    return perm


def permute_state_dict(state_dict: Mapping[str, Tensor], layout: Layout | str | list,
                       perm: NeuronPermutation) -> OrderedDict[str, Tensor]:
    """The state dict of the permuted network (names as in ``state_dict``)."""
    where = "permute(state_dict, layout)"
    perm = _single_perm(perm, where)
    layout = Layout.coerce(layout)
    _check_sizes(layout.neuron_layer_sizes, perm.sizes, where)
    state = OrderedDict(state_dict)
    layers = {layer.name: layer for layer in layout.weight_layers()}
    for neuron_layer, step in layout.steps_by_neuron_layer():
        rows = perm[neuron_layer]
        if step["kind"] in WEIGHT_KINDS:
            layer = layers[step["name"]]
            cols = perm[layer.index - 1]
            key = state_key(layer.name, "weight")
            weight = _entry(state, key, where)
            # a Flatten-then-Linear weight holds `positions` consecutive columns per channel
            kernels = weight.reshape(layer.out_neurons, layer.in_neurons, layer.positions)
            kernels = kernels[rows.to(weight.device)][:, cols.to(weight.device)]
            state[key] = kernels.reshape(weight.shape).clone()
            if layer.bias:
                bias = _entry(state, state_key(layer.name, "bias"), where)
                state[state_key(layer.name, "bias")] = bias[rows.to(bias.device)].clone()
        elif step["kind"] in NORM_KINDS:
            for suffix in _NORM_ENTRIES:
                key = state_key(step["name"], suffix)
                if key in state and state[key] is not None:
                    state[key] = state[key][rows.to(state[key].device)].clone()
    return state


def _entry(state: Mapping[str, Tensor], key: str, where: str) -> Tensor:
    if key not in state:
        raise KeyError(f"{where}: the state dict has no entry '{key}'")
    return state[key]


def _permute_module(module: nn.Module, perm) -> nn.Module:
    perm = _single_perm(perm, "permute(module)")
    layout = layout_of(module)
    state = permute_state_dict(module.state_dict(), layout, perm)
    permuted = copy.deepcopy(module)
    permuted.load_state_dict(state)
    return permuted


def _permute_graph(graph: Data, perm) -> Data:
    maps = _graph_maps(graph, perm, "permute(graph)")
    out = graph.clone()
    out.__dict__.pop("_nft_structure", None)  # cached group ids of the old graph
    node_keys = {"x", "node_norm", *NODE_IDS}
    edge_keys = {"edge_attr", *EDGE_IDS}
    for key in graph.keys():
        value = graph[key]
        if key in ("edge_index", "batch", "ptr") or not isinstance(value, Tensor):
            continue
        if key == "node_pos":
            out.node_pos = _scatter_rows(maps.new_pos, maps.node_dest)
        elif key in node_keys or (key not in edge_keys and graph.is_node_attr(key)):
            out[key] = _scatter_rows(value, maps.node_dest.to(value.device))
        elif key in edge_keys or graph.is_edge_attr(key):
            out[key] = _scatter_rows(value, maps.edge_dest.to(value.device))
    out.edge_index = _scatter_rows(maps.node_dest[graph.edge_index].t(), maps.edge_dest).t() \
        .contiguous()
    return out


def _permute_weight_space(ws: WeightSpace, perm) -> WeightSpace:
    if not isinstance(perm, NeuronPermutation):
        perms = _per_graph(perm, ws.batch_size, "permute(WeightSpace)")
        parts = [_permute_weight_space(_sample(ws, b), p) for b, p in enumerate(perms)]
        return WeightSpace([torch.cat(ws_l) for ws_l in zip(*(p.weights for p in parts))],
                           [torch.cat(bs_l) for bs_l in zip(*(p.biases for p in parts))],
                           ws.layout)
    _check_sizes(ws.neuron_layer_sizes, perm.sizes, "permute(WeightSpace)")
    weights, biases = [], []
    for i, (w, b) in enumerate(zip(ws.weights, ws.biases), start=1):
        rows, cols = perm[i].to(w.device), perm[i - 1].to(w.device)
        weights.append(w.index_select(2, rows).index_select(3, cols))
        biases.append(b.index_select(2, rows))
    return WeightSpace(weights, biases, ws.layout)


def _sample(ws: WeightSpace, b: int) -> WeightSpace:
    return WeightSpace([w[b:b + 1] for w in ws.weights], [x[b:b + 1] for x in ws.biases],
                       ws.layout)
