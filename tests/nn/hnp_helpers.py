"""Test helpers for the HNP operators: networks, random feature batches,
neuron permutations as index maps of graph features."""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_geometric.data import Batch

import nft_pyg
from nft_pyg.tensor.weight_space import WeightSpace


def mlp(widths: list[int], bias: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = []
    for n_in, n_out in zip(widths, widths[1:]):
        layers += [nn.Linear(n_in, n_out, bias=bias), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def cnn(channels: list[int], kernels: list[int], head: int | None = None) -> nn.Sequential:
    """Conv2d chain; with ``head``, then a global pool, a Flatten and a Linear."""
    layers: list[nn.Module] = []
    for c_in, c_out, k in zip(channels, channels[1:], kernels):
        layers += [nn.Conv2d(c_in, c_out, k, padding=k // 2), nn.ReLU()]
    layers = layers[:-1]
    if head is not None:
        layers += [nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels[-1], head)]
    return nn.Sequential(*layers)


def structure_batch(modules: list[nn.Module]) -> Batch:
    return Batch.from_data_list([nft_pyg.from_module(m) for m in modules])


def random_features(graph, channels: int, dtype=torch.float64) -> tuple[Tensor, Tensor]:
    """Random node and edge features ``[N, C]``, ``[E, C]`` on a graph's structure."""
    return (torch.randn(graph.num_nodes, channels, dtype=dtype),
            torch.randn(graph.edge_index.size(1), channels, dtype=dtype))


def folded_raw_features(graph) -> tuple[Tensor, Tensor]:
    """A raw (CNN) graph as operator features: ``x`` zero padded to ``[N, S]``
    with the bias in column 0, ``edge_attr`` ``[E, S]`` as it is."""
    width = graph.edge_attr.size(1)
    x = graph.x.new_zeros(graph.num_nodes, width)
    x[:, 0] = graph.x[:, 0]
    return x, graph.edge_attr


def split_features(batch: Batch, x: Tensor, edge_attr: Tensor) -> list[tuple]:
    """Per graph of ``batch``: ``(graph, x_i, edge_attr_i)``."""
    carrier = batch.clone()
    carrier.x, carrier.edge_attr = x, edge_attr
    return [(g, g.x, g.edge_attr) for g in carrier.to_data_list()]


def dense_of(graph, x: Tensor, edge_attr: Tensor) -> WeightSpace:
    return WeightSpace.from_features(graph, x, edge_attr)


def layer_sizes(graph) -> list[int]:
    """Neuron-layer sizes of one (unbatched) graph."""
    return torch.bincount(graph.node_layer).tolist()


def neuron_permutations(sizes: list[int], which: str = "hidden") -> list[Tensor]:
    """One permutation per neuron layer: random on the ``hidden`` layers (or
    only on the ``input`` / ``output`` layer), identity elsewhere. Entry
    ``k`` of layer ``h`` is the old position of the neuron now at ``k``."""
    last = len(sizes) - 1
    perms = []
    for h, n in enumerate(sizes):
        permuted = {"hidden": 0 < h < last, "input": h == 0, "output": h == last}[which]
        perms.append(torch.randperm(n) if permuted else torch.arange(n))
    return perms


def permutation_index_maps(graph, perms: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Index maps of one graph: the permuted graph's node ``k`` / edge ``k``
    is the original node ``node_map[k]`` / edge ``edge_map[k]``.

    Nodes are sorted by (layer, position) and edges by (layer, target,
    source), so an index is found from its key with a sorted search.
    """
    layer, pos = graph.node_layer, graph.node_pos
    scale = max(int(pos.max()) + 1, 1)
    node_key = layer * scale + pos
    old_pos = torch.cat(perms)[_layer_offsets(perms)[layer] + pos]
    node_map = torch.searchsorted(node_key, layer * scale + old_pos)

    src, dst = graph.edge_index
    edge_layer = graph.edge_layer
    edge_key = (edge_layer * scale + pos[dst]) * scale + pos[src]
    old_edge_key = (edge_layer * scale + old_pos[dst]) * scale + old_pos[src]
    edge_map = torch.searchsorted(edge_key, old_edge_key)
    assert torch.equal(node_key[node_map], layer * scale + old_pos)
    assert torch.equal(edge_key[edge_map], old_edge_key)
    return node_map, edge_map


def _layer_offsets(perms: list[Tensor]) -> Tensor:
    sizes = torch.tensor([p.numel() for p in perms])
    return torch.cat([torch.zeros(1, dtype=torch.long), sizes.cumsum(0)[:-1]])


def batch_permutation(batch: Batch, which: str = "hidden") -> tuple[Tensor, Tensor]:
    """Random neuron permutations of every graph of ``batch`` as batch-level
    index maps ``(node_map, edge_map)`` (see :func:`permutation_index_maps`)."""
    node_maps, edge_maps = [], []
    node_offset = edge_offset = 0
    for graph in batch.to_data_list():
        perms = neuron_permutations(layer_sizes(graph), which)
        node_map, edge_map = permutation_index_maps(graph, perms)
        node_maps.append(node_map + node_offset)
        edge_maps.append(edge_map + edge_offset)
        node_offset += graph.num_nodes
        edge_offset += graph.edge_index.size(1)
    return torch.cat(node_maps), torch.cat(edge_maps)


def permute_module(module: nn.Sequential, perms: list[Tensor]) -> nn.Sequential:
    """Permute the neurons (channels) of a chain of Linear / Conv layers:
    rows of ``W_l`` and ``b_l`` by ``perms[l]``, columns by ``perms[l-1]``."""
    import copy
    permuted = copy.deepcopy(module)
    layers = [m for m in permuted.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    with torch.no_grad():
        for l, layer in enumerate(layers, start=1):
            layer.weight.copy_(layer.weight[perms[l]][:, perms[l - 1]])
            if layer.bias is not None:
                layer.bias.copy_(layer.bias[perms[l]])
    return permuted
