"""Small shared helpers for the operator tests: feature batches of random
networks, dense-twin comparison, and neuron permutations of features.

A network's hidden neurons are relabelled by permuting the rows of
``W_l, b_l`` and the columns of ``W_{l+1}``. Since nodes and edges of a
neuron graph are in canonical order (layer, position; layer, target,
source), the permuted network's graph carries the original features
reindexed: ``x[node_map]``, ``edge_attr[edge_map]``.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Sequence

import torch
from torch import Tensor, nn
from torch_geometric.data import Batch

import nft_pyg
from nft_pyg.graph.types import NodeRole
from nft_pyg.tensor.weight_space import WeightSpace


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
        head: int | None = None, pooled: int = 1) -> nn.Sequential:
    """Convs ``channels[0] -> ... -> channels[-1]`` with the given kernel sizes;
    with ``head``, then adaptive pooling to ``pooled`` per axis, Flatten and
    a Linear to ``head`` outputs (each edge carrying ``pooled ** dim`` weights)."""
    conv = {1: nn.Conv1d, 2: nn.Conv2d}[dim]
    layers: list[nn.Module] = []
    for i, kernel in enumerate(kernels):
        layers += [conv(channels[i], channels[i + 1], kernel, padding=kernel // 2), nn.ReLU()]
    if head is None:
        return nn.Sequential(*layers[:-1])
    pool = {1: nn.AdaptiveAvgPool1d, 2: nn.AdaptiveAvgPool2d}[dim]
    layers += [pool(pooled), nn.Flatten(), nn.Linear(channels[-1] * pooled ** dim, head)]
    return nn.Sequential(*layers)


# --- features ------------------------------------------------------------------
def random_features(graph, channels: int, dtype=torch.float64,
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
                  seed: int = 0) -> Batch:
    """A ``Batch`` of the modules' graphs (one common kernel width) whose
    ``x`` / ``edge_attr`` are :func:`random_features` of ``channels``."""
    modules = list(modules)
    width = max(nft_pyg.graph.layout_of(m).kernel_width for m in modules)
    generator = torch.Generator().manual_seed(seed)
    graphs = []
    for module in modules:
        graph = nft_pyg.from_module(module, kernel_width=width)
        graph.x, graph.edge_attr = random_features(graph, channels, dtype, generator)
        graphs.append(graph)
    return Batch.from_data_list(graphs)


def edge_ptr(batch: Batch) -> Tensor:
    counts = torch.bincount(batch.batch[batch.edge_index[0]], minlength=batch.num_graphs)
    return torch.cat([counts.new_zeros(1), counts.cumsum(0)])


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


def assert_matches_dense(op, batch: Batch, atol: float = 1e-10) -> tuple[Tensor, Tensor]:
    """Run ``op`` on the whole (possibly mixed) batch and compare each
    architecture's slice with ``op.forward_dense`` on that architecture."""
    x_out, edge_out = op(batch.x, batch.edge_attr, batch)
    for sub, x_in, e_in, nodes, edges in split_by_architecture(batch, batch.x, batch.edge_attr):
        dense = op.forward_dense(WeightSpace.from_features(sub, x_in, e_in))
        x_dense, e_dense = dense.graph_features()
        torch.testing.assert_close(x_out[nodes], x_dense.reshape(-1, x_dense.size(-1)),
                                   atol=atol, rtol=0)
        torch.testing.assert_close(edge_out[edges], e_dense.reshape(-1, e_dense.size(-1)),
                                   atol=atol, rtol=0)
    return x_out, edge_out


# --- permutations --------------------------------------------------------------
def random_neuron_permutation(graph, roles: Sequence[int] = (NodeRole.HIDDEN,),
                              generator: torch.Generator | None = None
                              ) -> tuple[Tensor, Tensor]:
    """``(node_map, edge_map)`` of a random relabelling of the neurons whose
    ``node_role`` is in ``roles``, independently per graph and layer.

    The relabelled graph has node features ``x[node_map]`` and edge
    features ``edge_attr[edge_map]`` (a graph or a batch; dense layers).
    """
    batch = getattr(graph, "batch", None)
    if batch is None:
        batch = torch.zeros(graph.num_nodes, dtype=torch.long)
    node_map = torch.arange(graph.num_nodes)
    permuted = torch.isin(graph.node_role, torch.tensor([int(r) for r in roles]))
    group = batch * (int(graph.node_layer.max()) + 1) + graph.node_layer
    for g in torch.unique(group[permuted]):
        nodes = (group == g).nonzero().view(-1)
        nodes = nodes[graph.node_pos[nodes].argsort()]
        node_map[nodes] = nodes[torch.randperm(nodes.numel(), generator=generator)]
    num_nodes = graph.num_nodes
    src, dst = graph.edge_index
    keys = src * num_nodes + dst
    wanted = node_map[src] * num_nodes + node_map[dst]
    order = keys.argsort()
    edge_map = order[torch.searchsorted(keys[order], wanted)]
    assert torch.equal(keys[edge_map], wanted), "the graph is not closed under the permutation"
    return node_map, edge_map


def layer_permutations(graph, node_map: Tensor) -> list[Tensor]:
    """Per neuron layer of one graph, ``perm[k][p]`` = old position of the
    neuron now at position ``p`` (to permute a module the same way)."""
    return [graph.node_pos[node_map[graph.node_layer == k]]
            for k in range(int(graph.node_layer.max()) + 1)]


@torch.no_grad()
def permute_mlp(module: nn.Sequential, perms: Sequence[Tensor]) -> nn.Sequential:
    """A copy of an MLP with neuron layer ``k`` relabelled by ``perms[k]``."""
    import copy
    module = copy.deepcopy(module)
    linears = [m for m in module if isinstance(m, nn.Linear)]
    for l, linear in enumerate(linears, start=1):
        linear.weight.copy_(linear.weight[perms[l]][:, perms[l - 1]])
        if linear.bias is not None:
            linear.bias.copy_(linear.bias[perms[l]])
    return module
