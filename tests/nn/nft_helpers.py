"""Test helpers for weight-space operators: random feature graphs and neuron permutations.

- :func:`random_mlp`, :func:`random_cnn`: small float64 networks.
- :func:`feature_batch`: a batch of neuron graphs with random features.
- :func:`folded_features`: a raw (CNN) graph's features as operators see them.
- :func:`drop_edges`: a pruned copy of a graph.
- :func:`random_hidden_permutation` / :func:`permute_graph`: relabel hidden
  neurons and give the index maps of the permuted features.
- :func:`permute_weight_space`: the same permutation on the dense twin.
- :func:`split_outputs`: per-graph slices of features on a batch.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_geometric.data import Batch

import nft_pyg
from nft_pyg import WeightSpace
from nft_pyg.graph.types import NodeRole


def random_mlp(sizes: list[int], bias: bool = True) -> nn.Sequential:
    """A float64 ReLU MLP with layer widths ``sizes`` (``len(sizes) - 1`` layers)."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        if i:
            layers.append(nn.ReLU())
        layers.append(nn.Linear(n_in, n_out, bias=bias))
    return nn.Sequential(*layers).double()


def random_cnn() -> nn.Sequential:
    """Conv 3x3 -> Conv 2x2 -> pool -> Flatten (4 positions) -> Linear, float64."""
    return nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 4, 2),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                         nn.Linear(16, 3)).double()


def feature_batch(modules: list[nn.Module], channels: int,
                  dtype: torch.dtype = torch.float64) -> tuple[Batch, Tensor, Tensor]:
    """The graphs of ``modules`` batched (any mix of architectures and kernel
    sizes), carrying random ``[N, C]`` / ``[E, C]`` features; returns
    ``(batch, batch.x, batch.edge_attr)``."""
    graphs = []
    for module in modules:
        graph = nft_pyg.from_module(module)
        graph.x = torch.randn(graph.num_nodes, channels, dtype=dtype)
        graph.edge_attr = torch.randn(graph.num_edges, channels, dtype=dtype)
        graph.kernel_width = torch.ones_like(graph.kernel_width)
        graphs.append(graph)
    batch = Batch.from_data_list(graphs)
    return batch, batch.x, batch.edge_attr


def folded_features(graph) -> tuple[Tensor, Tensor]:
    """A raw graph's ``(x, edge_attr)`` with kernel positions as channels:
    ``edge_attr`` ``[E, S]`` as is, ``x`` zero padded to ``[N, S]``."""
    width = graph.edge_attr.size(-1)
    return nn.functional.pad(graph.x, (0, width - graph.x.size(-1))), graph.edge_attr


def drop_edges(graph, keep: float = 0.7):
    """A copy of ``graph`` keeping each edge with probability ``keep`` (at least
    one edge per weight layer). Returns ``(pruned, kept_mask)``."""
    mask = torch.rand(graph.num_edges) < keep
    for layer in graph.edge_layer.unique():
        in_layer = (graph.edge_layer == layer).nonzero().view(-1)
        mask[in_layer[0]] = True
    pruned = graph.clone()
    pruned.edge_index = graph.edge_index[:, mask]
    for key in ("edge_attr", "edge_layer", "edge_kind"):
        pruned[key] = graph[key][mask]
    return pruned, mask


def _node_batch(graph) -> Tensor:
    batch = getattr(graph, "batch", None)
    return torch.zeros(graph.num_nodes, dtype=torch.long) if batch is None else batch


def random_hidden_permutation(graph) -> Tensor:
    """``node_map`` ``[N]``: a random relabelling of the hidden neurons of each
    (graph, layer); node ``n`` of the permuted graph is node ``node_map[n]``
    of ``graph``. Input and output neurons stay put. Needs nodes in canonical
    order (graph, layer, position)."""
    node_map = torch.arange(graph.num_nodes)
    batch = _node_batch(graph)
    hidden = graph.node_role == int(NodeRole.HIDDEN)
    keys = batch * (int(graph.node_layer.max()) + 1) + graph.node_layer
    for key in keys[hidden].unique():
        nodes = (hidden & (keys == key)).nonzero().view(-1)
        node_map[nodes] = nodes[torch.randperm(nodes.numel())]
    return node_map


def permute_graph(graph, node_map: Tensor):
    """Relabel the nodes of ``graph`` by ``node_map`` (see
    :func:`random_hidden_permutation`), edges re-sorted canonically (layer,
    target, source). Returns ``(permuted, edge_map)``: edge ``k`` of the
    permuted graph is edge ``edge_map[k]`` of ``graph``; features move as
    ``x[node_map]``, ``edge_attr[edge_map]``. Works on pruned graphs."""
    new_id = torch.empty_like(node_map)
    new_id[node_map] = torch.arange(node_map.numel())
    src, dst = new_id[graph.edge_index]
    edge_map = torch.argsort(dst * graph.num_nodes + src)
    permuted = graph.clone()
    permuted.edge_index = torch.stack([src, dst])[:, edge_map]
    for key in ("edge_attr", "edge_layer", "edge_kind"):
        permuted[key] = graph[key][edge_map]
    permuted.x = graph.x[node_map]
    return permuted, edge_map


def permute_weight_space(ws: WeightSpace, graph, node_map: Tensor) -> WeightSpace:
    """The dense twin of ``permute_graph`` for a single graph (``B`` copies
    permuted alike): rows of ``W_l``, ``b_l`` and columns of ``W_{l+1}``."""
    sizes = ws.neuron_layer_sizes
    starts = torch.tensor([0] + sizes).cumsum(0).tolist()
    perms = [node_map[starts[i]:starts[i + 1]] - starts[i] for i in range(len(sizes))]
    weights = [w[:, :, perms[i + 1]][:, :, :, perms[i]] for i, w in enumerate(ws.weights)]
    biases = [b[:, :, perms[i + 1]] for i, b in enumerate(ws.biases)]
    return WeightSpace(weights, biases, ws.layout)


def split_outputs(batch: Batch, x: Tensor, edge_attr: Tensor):
    """``[(graph_b, x_b, edge_attr_b)]``: each graph of the batch with its slices."""
    edge_graph = batch.batch[batch.edge_index[0]]
    return [(batch.get_example(b), x[batch.batch == b], edge_attr[edge_graph == b])
            for b in range(batch.num_graphs)]
