"""Test helpers for the pointwise weight-space modules (encodings, norms,
pointwise maps, kernel projections): small MLP/CNN batches, dense-twin
comparisons and hidden-neuron permutations with their index maps."""
import copy

import torch
from torch import nn
from torch_geometric.data import Batch

import nft_pyg
from nft_pyg import WeightSpace


def make_mlp(sizes, bias=True):
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers += [nn.Linear(n_in, n_out, bias=bias)] + ([nn.ReLU()] if i < len(sizes) - 2 else [])
    return nn.Sequential(*layers).double()


def make_cnn(channels=(2, 3, 4), kernels=(3, 2), positions=4, outputs=5):
    layers = []
    for c_in, c_out, k in zip(channels[:-1], channels[1:], kernels):
        layers += [nn.Conv2d(c_in, c_out, k), nn.ReLU()]
    layers += [nn.Flatten(), nn.Linear(channels[-1] * positions, outputs)]
    return nn.Sequential(*layers).double()


ARCHITECTURES = {
    "mlp_shallow": lambda: make_mlp([3, 5, 2]),
    "mlp_deep": lambda: make_mlp([2, 4, 3, 6, 1]),
    "cnn": lambda: make_cnn(),
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


def random_features(graph, channels):
    return (torch.randn(graph.num_nodes, channels, dtype=torch.float64),
            torch.randn(graph.num_edges, channels, dtype=torch.float64))


def assert_matches_dense(module, names=tuple(ARCHITECTURES), channels=4, atol=1e-10):
    """Run ``module`` on a mixed batch; each architecture's slice equals the dense twin."""
    batch, graphs, ids = mixed_batch(names)
    x, edge_attr = random_features(batch, channels)
    out_x, out_e = module(x, edge_attr, batch)
    for name in names:
        node_mask, edge_mask = slice_of(batch, ids[name])
        sub = Batch.from_data_list([graphs[i] for i in ids[name]])
        ws = WeightSpace.from_features(sub, x[node_mask], edge_attr[edge_mask])
        dense_x, dense_e = module.forward_dense(ws).graph_features()
        assert torch.allclose(out_x[node_mask], dense_x.reshape(-1, out_x.size(-1)), atol=atol)
        assert torch.allclose(out_e[edge_mask], dense_e.reshape(-1, out_e.size(-1)), atol=atol)
    return out_x, out_e, batch


def permute_neurons(module, generator, permute_inputs=False, permute_hidden=True,
                    permute_outputs=False):
    """A copy of ``module`` with its neurons permuted, and the permutation of
    each neuron layer (identity where not permuted). Conv channels and the
    channels feeding a Linear after a Flatten move as neurons."""
    permuted = copy.deepcopy(module)
    weight_layers = [m for m in permuted.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    sizes = [weight_layers[0].weight.size(1)] + [m.weight.size(0) for m in weight_layers]
    chosen = [permute_inputs] + [permute_hidden] * (len(sizes) - 2) + [permute_outputs]
    perms = [torch.randperm(n, generator=generator) if permute else torch.arange(n)
             for n, permute in zip(sizes, chosen)]
    with torch.no_grad():
        for layer, m in enumerate(weight_layers, start=1):
            weight = m.weight.reshape(m.weight.size(0), sizes[layer - 1], -1)
            weight = weight[perms[layer]][:, perms[layer - 1]]
            m.weight.copy_(weight.reshape(m.weight.shape))
            if m.bias is not None:
                m.bias.copy_(m.bias[perms[layer]])
    return permuted, perms


def index_maps(graph, perms):
    """``node_map``, ``edge_map``: node / edge ``i`` of the permuted network's
    graph is node / edge ``node_map[i]`` / ``edge_map[i]`` of the original's."""
    offsets = [0]
    for perm in perms:
        offsets.append(offsets[-1] + perm.numel())
    node_map = torch.cat([offset + perm for offset, perm in zip(offsets, perms)])
    src, dst = graph.edge_index
    key_to_edge = torch.full((graph.num_nodes * graph.num_nodes,), -1, dtype=torch.long)
    key_to_edge[src * graph.num_nodes + dst] = torch.arange(graph.num_edges)
    edge_map = key_to_edge[node_map[src] * graph.num_nodes + node_map[dst]]
    assert bool((edge_map >= 0).all())
    return node_map, edge_map


def permuted_pair(module, seed=0, **kwargs):
    """Graphs of ``module`` and of a neuron-permuted copy, and the index maps
    (checked against the raw features)."""
    generator = torch.Generator().manual_seed(seed)
    permuted, perms = permute_neurons(module, generator, **kwargs)
    graph, graph_p = nft_pyg.from_module(module), nft_pyg.from_module(permuted)
    node_map, edge_map = index_maps(graph, perms)
    assert torch.equal(graph_p.x, graph.x[node_map])
    assert torch.equal(graph_p.edge_attr, graph.edge_attr[edge_map])
    return graph, graph_p, node_map, edge_map


def assert_equivariant(module, network, channels=4, seed=0):
    """``module`` commutes with a random hidden-neuron permutation of ``network``."""
    graph, graph_p, node_map, edge_map = permuted_pair(network, seed)
    x, edge_attr = random_features(graph, channels)
    out_x, out_e = module(x, edge_attr, graph)
    perm_x, perm_e = module(x[node_map], edge_attr[edge_map], graph_p)
    assert torch.allclose(perm_x, out_x[node_map], atol=1e-12)
    assert torch.allclose(perm_e, out_e[edge_map], atol=1e-12)
    return out_x, out_e
