"""Shared helpers for the operator tests: small networks, random feature
batches, per-graph / per-architecture slices, dense-twin comparison and
neuron permutations as index maps of graph features.

Index maps: node ``k`` / edge ``k`` of the permuted network's graph is node
``node_map[k]`` / edge ``edge_map[k]`` of the original, so the permuted
graph carries ``x[node_map]``, ``edge_attr[edge_map]``. They come from
:mod:`nft_pyg.symmetry` (:func:`index_maps`); :func:`permute_module_by_hand`
is an independent, hand-written module permutation to check them against.
"""
from __future__ import annotations

import copy
import inspect
import pickle
from collections import defaultdict
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn
from torch_geometric.data import Batch

import nft_pyg
from nft_pyg.graph.types import NodeRole
from nft_pyg.symmetry import NeuronPermutation, permute, permute_features
from nft_pyg.symmetry.permutation import graph_layer_sizes
from nft_pyg.tensor.weight_space import WeightSpace

ALL_ROLES = (NodeRole.INPUT, NodeRole.HIDDEN, NodeRole.OUTPUT)


# --- networks ------------------------------------------------------------------
def mlp(sizes: Sequence[int], bias: bool = True) -> nn.Sequential:
    """Linear layers ``sizes[0] -> ... -> sizes[-1]`` with ReLUs between."""
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1], bias=bias))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def cnn(channels: Sequence[int], kernels: Sequence[int], dim: int = 2,
        head: int | None = None, pooled: int = 1, padding: int | Sequence[int] | None = None,
        pool: bool = True) -> nn.Sequential:
    """Convs ``channels[0] -> ... -> channels[-1]`` with the given kernel sizes
    and ReLUs between; ``padding`` per conv (one int for all; default
    ``kernel // 2``). With ``head``: a ReLU, adaptive pooling to ``pooled``
    per axis (or, with ``pool=False``, none: the input must then leave
    ``pooled ** dim`` positions), Flatten and a Linear to ``head`` outputs
    (each edge carrying ``pooled ** dim`` weights)."""
    conv = {1: nn.Conv1d, 2: nn.Conv2d}[dim]
    if padding is None:
        padding = [kernel // 2 for kernel in kernels]
    elif isinstance(padding, int):
        padding = [padding] * len(kernels)
    layers: list[nn.Module] = []
    for i, kernel in enumerate(kernels):
        layers += [conv(channels[i], channels[i + 1], kernel, padding=padding[i]), nn.ReLU()]
    if head is None:
        return nn.Sequential(*layers[:-1])
    if pool:
        layers.append({1: nn.AdaptiveAvgPool1d, 2: nn.AdaptiveAvgPool2d}[dim](pooled))
    layers += [nn.Flatten(), nn.Linear(channels[-1] * pooled ** dim, head)]
    return nn.Sequential(*layers)


def structure_batch(modules: Iterable[nn.Module]) -> Batch:
    """The raw graphs of ``modules``, batched."""
    return Batch.from_data_list([nft_pyg.from_module(m) for m in modules])


# --- features ------------------------------------------------------------------
def random_features(graph, channels: int, dtype=torch.float64,
                    generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Random ``[N, C]`` node and ``[E, C]`` edge features on every node and edge."""
    return (torch.randn(graph.num_nodes, channels, dtype=dtype, generator=generator),
            torch.randn(graph.edge_index.size(1), channels, dtype=dtype, generator=generator))


def random_folded_features(graph, channels: int, dtype=torch.float64,
                           generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Random folded features ``[N, C*S]``, ``[E, C*S]`` (``S`` = kernel width).

    As a raw CNN graph fed to an operator: channel-major, an edge's entries
    past its layer's kernel positions are zero, a node has its feature at
    position 0 of each channel only, input nodes are zero.
    """
    width = int(graph.kernel_width.reshape(-1)[0])
    layout = graph.layout_obj
    positions = torch.tensor([0] + [layer.positions for layer in layout.weight_layers()])
    edges = torch.randn(graph.num_edges, channels, width, dtype=dtype, generator=generator)
    edges = edges * (torch.arange(width) < positions[graph.edge_layer][:, None])[:, None, :]
    nodes = torch.zeros(graph.num_nodes, channels, width, dtype=dtype)
    nodes[:, :, 0] = torch.randn(graph.num_nodes, channels, dtype=dtype, generator=generator)
    nodes[graph.node_role == int(NodeRole.INPUT)] = 0
    return nodes.reshape(graph.num_nodes, -1), edges.reshape(graph.num_edges, -1)


def feature_batch(modules: Iterable[nn.Module], channels: int, dtype=torch.float64,
                  seed: int | None = 0, folded: bool = True) -> Batch:
    """A ``Batch`` of the modules' graphs (one common kernel width) whose
    ``x`` / ``edge_attr`` are random features of ``channels``.

    Args:
        folded: :func:`random_folded_features` (``C * S`` channels, zero on
            input nodes); else :func:`random_features` on every node (input
            nodes too), with ``kernel_width`` set to 1.
        seed: seed of the features' generator; ``None`` draws from torch's
            global generator.
    """
    modules = list(modules)
    width = max(nft_pyg.graph.layout_of(m).kernel_width for m in modules)
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    graphs = []
    for module in modules:
        graph = nft_pyg.from_module(module, kernel_width=width)
        if folded:
            graph.x, graph.edge_attr = random_folded_features(graph, channels, dtype, generator)
        else:
            graph.x, graph.edge_attr = random_features(graph, channels, dtype, generator)
            graph.kernel_width = torch.ones_like(graph.kernel_width)
        graphs.append(graph)
    return Batch.from_data_list(graphs)


def folded_raw_features(graph) -> tuple[Tensor, Tensor]:
    """A raw (CNN) graph as operator features: ``x`` zero padded to ``[N, S]``
    with the bias in column 0, ``edge_attr`` ``[E, S]`` as it is."""
    width = graph.edge_attr.size(1)
    x = graph.x.new_zeros(graph.num_nodes, width)
    x[:, 0] = graph.x[:, 0]
    return x, graph.edge_attr


def drop_edges(graph, keep: float = 0.7, generator: torch.Generator | None = None):
    """A copy of ``graph`` keeping each edge with probability ``keep`` (at least
    one edge per weight layer). Returns ``(pruned, kept_mask)``."""
    mask = torch.rand(graph.num_edges, generator=generator) < keep
    for layer in graph.edge_layer.unique():
        in_layer = (graph.edge_layer == layer).nonzero().view(-1)
        mask[in_layer[0]] = True
    pruned = graph.clone()
    pruned.edge_index = graph.edge_index[:, mask]
    for key in ("edge_attr", "edge_layer", "edge_kind"):
        pruned[key] = graph[key][mask]
    return pruned, mask


# --- slices of a batch ---------------------------------------------------------
def layer_sizes(graph) -> list[int]:
    """Neuron-layer sizes of one (unbatched) graph."""
    return torch.bincount(graph.node_layer).tolist()


def edge_ptr(batch: Batch) -> Tensor:
    counts = torch.bincount(batch.batch[batch.edge_index[0]], minlength=batch.num_graphs)
    return torch.cat([counts.new_zeros(1), counts.cumsum(0)])


def layer_values(batch: Batch, num_layers: int):
    """For every graph ``b`` of ``batch`` and layer ``l = 1..num_layers``,
    ``(b, l, edge_features, node_features)`` of weight layer ``l``'s edges and
    neuron layer ``l``'s nodes; both ``None`` where graph ``b`` has no layer ``l``."""
    eptr = edge_ptr(batch)
    for b in range(batch.num_graphs):
        nodes = slice(batch.ptr[b], batch.ptr[b + 1])
        edges = slice(eptr[b], eptr[b + 1])
        layers = int(batch.edge_layer[edges].max())
        for l in range(1, num_layers + 1):
            if l > layers:
                yield b, l, None, None
                continue
            yield (b, l, batch.edge_attr[edges][batch.edge_layer[edges] == l],
                   batch.x[nodes][batch.node_layer[nodes] == l])


def split_graphs(batch: Batch, x: Tensor, edge_attr: Tensor) -> list[tuple]:
    """``[(graph_b, x_b, edge_attr_b)]``: each graph of the batch (its
    structure; works on pruned graphs) with its slices of the features."""
    edge_graph = batch.batch[batch.edge_index[0]]
    return [(batch.get_example(b), x[batch.batch == b], edge_attr[edge_graph == b])
            for b in range(batch.num_graphs)]


def split_by_architecture(batch: Batch, x: Tensor, edge_attr: Tensor):
    """Yield ``(sub_batch, x_part, edge_part, node_rows, edge_rows)`` per architecture."""
    groups = defaultdict(list)
    for i, layout in enumerate(batch.layout):
        groups[layout].append(i)
    eptr = edge_ptr(batch)
    for indices in groups.values():
        nodes = torch.cat([torch.arange(batch.ptr[i], batch.ptr[i + 1]) for i in indices])
        edges = torch.cat([torch.arange(eptr[i], eptr[i + 1]) for i in indices])
        sub = Batch.from_data_list([batch.get_example(i) for i in indices])
        yield sub, x[nodes], edge_attr[edges], nodes, edges


def dense_of(graph, x: Tensor, edge_attr: Tensor) -> WeightSpace:
    return WeightSpace.from_features(graph, x, edge_attr)


def call_op(op, x: Tensor, edge_attr: Tensor, graph) -> tuple[Tensor, Tensor]:
    """``op`` on a graph / batch (or its index): PyG-style operators
    (``forward(x, edge_index, edge_attr, index)``) get the graph's ``edge_index``."""
    if len(inspect.signature(op.forward).parameters) == 4:
        return op(x, graph.edge_index, edge_attr, graph)
    return op(x, edge_attr, graph)


def assert_matches_dense(op, batch: Batch, atol: float = 1e-10, rtol: float = 0
                         ) -> tuple[Tensor, Tensor]:
    """Run ``op`` on the whole (possibly mixed) batch and compare each
    architecture's slice with ``op.forward_dense`` on that architecture."""
    pickled = pickle.dumps(batch)
    x_out, edge_out = call_op(op, batch.x, batch.edge_attr, batch)
    assert pickle.dumps(batch) == pickled, f"{type(op).__name__} wrote onto its input"
    for sub, x_in, e_in, nodes, edges in split_by_architecture(batch, batch.x, batch.edge_attr):
        dense = op.forward_dense(WeightSpace.from_features(sub, x_in, e_in))
        x_dense, e_dense = dense.graph_features()
        torch.testing.assert_close(x_out[nodes], x_dense.reshape(-1, x_dense.size(-1)),
                                   atol=atol, rtol=rtol)
        torch.testing.assert_close(edge_out[edges], e_dense.reshape(-1, e_dense.size(-1)),
                                   atol=atol, rtol=rtol)
    return x_out, edge_out


# --- neuron permutations -------------------------------------------------------
def role_permutation(graph, roles: str | Sequence[int] = (NodeRole.HIDDEN,),
                     generator: torch.Generator | None = None):
    """A random relabelling of the neurons whose role is in ``roles`` (or
    named ``"hidden"`` / ``"input"`` / ``"output"``), independently per
    layer: a :class:`NeuronPermutation` of a graph or of layer sizes ``[n_0,
    ..., n_L]``, a list of them (one per graph) for a ``Batch``."""
    if isinstance(roles, str):
        roles = (NodeRole[roles.upper()],)
    roles = {int(role) for role in roles}

    def draw(sizes: Sequence[int]) -> NeuronPermutation:
        last = len(sizes) - 1
        role = [NodeRole.INPUT] + [NodeRole.HIDDEN] * (last - 1) + [NodeRole.OUTPUT]
        return NeuronPermutation([torch.randperm(n, generator=generator)
                                  if int(role[l]) in roles else torch.arange(n)
                                  for l, n in enumerate(sizes)])

    if isinstance(graph, Batch):
        return [draw(sizes) for sizes in graph_layer_sizes(graph)]
    return draw(graph if isinstance(graph, (list, tuple)) else graph_layer_sizes(graph)[0])


def index_maps(graph, perm) -> tuple[Tensor, Tensor]:
    """``(node_map, edge_map)`` of ``perm`` (one per graph for a batch): the
    permuted graph carries ``x[node_map]``, ``edge_attr[edge_map]``."""
    return permute_features(graph, torch.arange(graph.num_nodes),
                            torch.arange(graph.edge_index.size(1)), perm)


def random_neuron_permutation(graph, roles: str | Sequence[int] = (NodeRole.HIDDEN,),
                              generator: torch.Generator | None = None
                              ) -> tuple[Tensor, Tensor]:
    """Index maps of a :func:`role_permutation` of a graph or batch."""
    return index_maps(graph, role_permutation(graph, roles, generator))


def permuted_graph(graph, roles: str | Sequence[int] = (NodeRole.HIDDEN,),
                   generator: torch.Generator | None = None):
    """A random :func:`role_permutation` applied to ``graph`` (raw or carrying
    features, single or batched, pruned or not): ``(permuted, node_map,
    edge_map, perm)``."""
    perm = role_permutation(graph, roles, generator)
    return (permute(graph, perm), *index_maps(graph, perm), perm)


def permuted_modules(modules: Iterable[nn.Module], roles: str | Sequence[int] = "hidden"):
    """Each module with a random :func:`role_permutation` applied, and each
    original graph's ``(node_map, edge_map)``."""
    out, maps = [], []
    for module in modules:
        graph = nft_pyg.from_module(module)
        perm = role_permutation(graph, roles)
        out.append(permute(module, perm))
        maps.append(index_maps(graph, perm))
    return out, maps


@torch.no_grad()
def permute_module_by_hand(module: nn.Module, perms: Sequence[Tensor]) -> nn.Module:
    """A copy of a chain of Linear / Conv layers with neuron layer ``l``
    relabelled by ``perms[l]``: rows of ``W_l``, ``b_l`` and columns of
    ``W_{l+1}`` (conv channels; the channels feeding a Linear after a Flatten
    move with their positions). Written independently of
    :mod:`nft_pyg.symmetry`, to check it."""
    permuted = copy.deepcopy(module)
    weight_layers = [m for m in permuted.modules()
                     if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))]
    for l, layer in enumerate(weight_layers, start=1):
        weight = layer.weight.reshape(layer.weight.size(0), len(perms[l - 1]), -1)
        layer.weight.copy_(weight[perms[l]][:, perms[l - 1]].reshape(layer.weight.shape))
        if layer.bias is not None:
            layer.bias.copy_(layer.bias[perms[l]])
    return permuted


# --- the networks of the model tests (NFN, baselines) ---------------------------
MLP_WIDTHS = [3, 5, 4, 2]
CNN_CHANNELS, CNN_KERNELS, CNN_HEAD = [2, 3, 4], [3, 3], 2


def mlps(count=3, widths=MLP_WIDTHS, dtype=torch.float64, bias=True):
    return [mlp(widths, bias=bias).to(dtype) for _ in range(count)]


def cnns(count=2, dtype=torch.float64):
    return [cnn(CNN_CHANNELS, CNN_KERNELS, head=CNN_HEAD).to(dtype) for _ in range(count)]


def toy_regression(count=16, widths=MLP_WIDTHS):
    """MLPs whose first-layer weights have random offsets; target: their mean."""
    generator = torch.Generator().manual_seed(0)
    modules = []
    for _ in range(count):
        module = mlp(widths)
        with torch.no_grad():
            module[0].weight.add_(torch.rand(1, generator=generator) * 2 - 1)
        modules.append(module)
    target = torch.stack([m[0].weight.mean() for m in modules]).detach().unsqueeze(1)
    return structure_batch(modules), target


# --- a mixed batch of three fixed architectures --------------------------------
ARCHITECTURES = {
    "mlp_shallow": lambda: mlp([3, 5, 2]).double(),
    "mlp_deep": lambda: mlp([2, 4, 3, 6, 1]).double(),
    # no pooling: the Flatten leaves 4 positions per channel
    "cnn": lambda: cnn([2, 3, 4], [3, 2], head=5, pooled=2, padding=0, pool=False).double(),
}
KERNEL_WIDTH = 9  # the largest kernel among ARCHITECTURES (3x3)


def mixed_batch(names, copies=2):
    """A batch interleaving ``copies`` random networks of each architecture,
    and for each architecture the positions of its graphs in the batch."""
    graphs, ids = [], {name: [] for name in names}
    for _ in range(copies):
        for name in names:
            ids[name].append(len(graphs))
            graphs.append(nft_pyg.from_module(ARCHITECTURES[name](), kernel_width=KERNEL_WIDTH))
    return Batch.from_data_list(graphs), graphs, ids


def slice_of(batch, graph_ids):
    """Node and edge masks selecting the graphs ``graph_ids`` of ``batch``."""
    chosen = torch.tensor(graph_ids)
    node_mask = torch.isin(batch.batch, chosen)
    return node_mask, node_mask[batch.edge_index[0]]


def assert_mixed_batch_matches_dense(module, names=tuple(ARCHITECTURES), channels=4,
                                     atol=1e-10):
    """Run ``module`` on a :func:`mixed_batch` with :func:`random_features`;
    each architecture's slice equals the dense twin (``allclose`` tolerance:
    ``atol`` and the default ``rtol=1e-5``). Returns ``(x_out, edge_out, batch)``."""
    batch, _, _ = mixed_batch(names)
    batch.x, batch.edge_attr = random_features(batch, channels)
    return (*assert_matches_dense(module, batch, atol=atol, rtol=1e-5), batch)


def permuted_pair(module, seed=0, permute_inputs=False, permute_hidden=True,
                  permute_outputs=False):
    """Graphs of ``module`` and of a neuron-permuted copy (permuted by hand),
    and the index maps (checked against the raw features)."""
    roles = [role for role, chosen in zip(ALL_ROLES, (permute_inputs, permute_hidden,
                                                      permute_outputs)) if chosen]
    graph = nft_pyg.from_module(module)
    perm = role_permutation(graph, roles, torch.Generator().manual_seed(seed))
    graph_p = nft_pyg.from_module(permute_module_by_hand(module, perm.layers))
    node_map, edge_map = index_maps(graph, perm)
    assert torch.equal(graph_p.x, graph.x[node_map])
    assert torch.equal(graph_p.edge_attr, graph.edge_attr[edge_map])
    return graph, graph_p, node_map, edge_map


def assert_equivariant(module, network, channels=4, seed=0):
    """``module`` commutes with a random hidden-neuron permutation of ``network``."""
    graph, graph_p, node_map, edge_map = permuted_pair(network, seed)
    x, edge_attr = random_features(graph, channels)
    out_x, out_e = call_op(module, x, edge_attr, graph)
    perm_x, perm_e = call_op(module, x[node_map], edge_attr[edge_map], graph_p)
    assert torch.allclose(perm_x, out_x[node_map], atol=1e-12)
    assert torch.allclose(perm_e, out_e[edge_map], atol=1e-12)
    return out_x, out_e
