"""WeightSpaceActivation / Dropout / Linear / Sequential: graph == dense, equivariance, errors."""
import copy

import pytest
import torch
from torch import nn
from torch_geometric.data import Batch

import nft_pyg
from nft_pyg import WeightSpace
from nft_pyg.nn.norm import WeightSpaceLayerNorm
from nft_pyg.nn.pointwise import (WeightSpaceActivation, WeightSpaceDropout, WeightSpaceLinear,
                                  WeightSpaceSequential)

torch.set_num_threads(1)


# --- local helpers (shared verbatim by tests/nn/test_{encodings,norm,pointwise,
# kernel_projection}.py until a shared test-utility module exists) -------------
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
# --- end of local helpers -------------------------------------------------------


@pytest.mark.parametrize("act", ["relu", "gelu", "sigmoid", nn.Tanh(), nn.LeakyReLU(0.3)])
def test_activation_matches_dense(act):
    out_x, out_e, batch = assert_matches_dense(WeightSpaceActivation(act))
    is_input = batch.node_role == 0
    assert bool((out_x[is_input] == 0).all())  # sigmoid(0) != 0: input nodes are zeroed
    assert out_x.shape == (batch.num_nodes, 4) and out_e.shape == (batch.num_edges, 4)


def test_activation_applies_to_edges_and_nodes():
    batch, _, _ = mixed_batch(["mlp_shallow"], copies=1)
    x, edge_attr = random_features(batch, 3)
    out_x, out_e = WeightSpaceActivation("relu")(x, edge_attr, batch)
    hidden = batch.node_role != 0
    assert torch.equal(out_x[hidden], x[hidden].clamp(min=0))
    assert torch.equal(out_e, edge_attr.clamp(min=0))


def test_linear_shapes_and_dense():
    module = WeightSpaceLinear(4, 7).double()
    out_x, out_e, batch = assert_matches_dense(module)
    assert out_x.shape == (batch.num_nodes, 7) and out_e.shape == (batch.num_edges, 7)
    assert bool((out_x[batch.node_role == 0] == 0).all())


def test_linear_bias_is_used():
    module = WeightSpaceLinear(4, 3).double()
    batch, _, _ = mixed_batch(["mlp_deep"], copies=1)
    x, edge_attr = random_features(batch, 4)
    before = module(x, edge_attr, batch)
    with torch.no_grad():
        module.lin.bias.zero_()
    after = module(x, edge_attr, batch)
    assert not torch.allclose(before[0], after[0]) and not torch.allclose(before[1], after[1])
    assert WeightSpaceLinear(4, 3, bias=False).lin.bias is None


def test_linear_float32_matches_dense():
    module = WeightSpaceLinear(4, 5)
    batch, graphs, _ = mixed_batch(["cnn"])
    x, edge_attr = (t.float() for t in random_features(batch, 4))
    out_x, out_e = module(x, edge_attr, batch)
    dense_x, dense_e = module.forward_dense(
        WeightSpace.from_features(batch, x, edge_attr)).graph_features()
    assert torch.allclose(out_x, dense_x.reshape(-1, 5), atol=1e-5)
    assert torch.allclose(out_e, dense_e.reshape(-1, 5), atol=1e-5)


def test_sequential_matches_dense_and_chains():
    model = WeightSpaceSequential(WeightSpaceLinear(4, 6), WeightSpaceLayerNorm(6),
                                  WeightSpaceActivation("gelu"), WeightSpaceLinear(6, 2)).double()
    out_x, out_e, batch = assert_matches_dense(model)
    x, edge_attr = random_features(batch, 4)
    expected = (x, edge_attr)
    for module in model:
        expected = module(*expected, batch)
    result = model(x, edge_attr, batch)
    assert torch.equal(result[0], expected[0]) and torch.equal(result[1], expected[1])
    assert len(model) == 4 and isinstance(model[2], WeightSpaceActivation)
    head = model[:2]  # slicing rebuilds the class from an OrderedDict
    assert isinstance(head, WeightSpaceSequential) and len(head) == 2
    assert torch.equal(head(x, edge_attr, batch)[1], model[1](*model[0](x, edge_attr, batch),
                                                               batch)[1])


def test_dropout():
    module = WeightSpaceDropout(0.5)
    batch, _, _ = mixed_batch(["mlp_deep", "cnn"])
    x, edge_attr = random_features(batch, 8)
    out_x, out_e = module(x, edge_attr, batch)
    hidden = batch.node_role != 0
    assert bool((out_x[~hidden] == 0).all())
    kept = out_e != 0
    assert 0.3 < kept.double().mean() < 0.7
    assert torch.allclose(out_e[kept], 2 * edge_attr[kept])
    assert torch.allclose(out_x[hidden][out_x[hidden] != 0],
                          2 * x[hidden][out_x[hidden] != 0])
    module.eval()
    out_x, out_e = module(x, edge_attr, batch)
    assert torch.equal(out_e, edge_attr) and torch.equal(out_x[hidden], x[hidden])
    assert_matches_dense(module)  # eval mode: the identity on both sides


@pytest.mark.parametrize("network", ["mlp_deep", "cnn"])
def test_equivariance(network):
    model = WeightSpaceSequential(WeightSpaceLinear(4, 5), WeightSpaceActivation("tanh"),
                                  WeightSpaceLinear(5, 3)).double()
    out_x, out_e = assert_equivariant(model, ARCHITECTURES[network]())
    assert out_x.abs().sum() > 0 and out_e.abs().sum() > 0


def test_equivariance_check_can_fail():
    """The permutation check above notices a module that is not equivariant."""
    class AddNodeIndex(nn.Module):
        def forward(self, x, edge_attr, graph):
            return x + torch.arange(x.size(0), dtype=x.dtype).unsqueeze(-1), edge_attr
    with pytest.raises(AssertionError):
        assert_equivariant(AddNodeIndex(), ARCHITECTURES["mlp_deep"]())


def test_errors():
    batch, _, _ = mixed_batch(["mlp_shallow"], copies=1)
    x, edge_attr = random_features(batch, 4)
    with pytest.raises(ValueError, match="WeightSpaceLinear: built for 3 channels"):
        WeightSpaceLinear(3, 2).double()(x, edge_attr, batch)
    with pytest.raises(ValueError, match="WeightSpaceActivation: x has 4 channels but "
                                         "edge_attr has 2"):
        WeightSpaceActivation()(x, edge_attr[:, :2], batch)
    with pytest.raises(ValueError, match="x has 3 rows"):
        WeightSpaceActivation()(x[:3], edge_attr, batch)
    with pytest.raises(ValueError, match="edge_attr must be a 2-D tensor"):
        WeightSpaceActivation()(x, edge_attr[0], batch)
    with pytest.raises(ValueError, match="unknown activation 'swishy'"):
        WeightSpaceActivation("swishy")
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\)"):
        WeightSpaceDropout(1.0)
    with pytest.raises(TypeError, match="item 1 is a int"):
        WeightSpaceSequential(WeightSpaceActivation(), 3)
    class NodesOnly(nn.Module):
        def forward(self, x, edge_attr, graph):
            return x
    with pytest.raises(TypeError, match=r"module 0 \(NodesOnly\) must return"):
        WeightSpaceSequential(NodesOnly())(x, edge_attr, batch)
    with pytest.raises(TypeError, match="has no forward_dense"):
        WeightSpaceSequential(nn.ReLU()).forward_dense(WeightSpace.from_graph(batch))
    no_roles = batch.clone()
    del no_roles.node_role
    with pytest.raises(ValueError, match="WeightSpaceActivation: the graph has no node_role"):
        WeightSpaceActivation()(x, edge_attr, no_roles)


def test_repr_and_reset():
    assert repr(WeightSpaceLinear(2, 3)) == "WeightSpaceLinear(2, 3, bias=True)"
    assert repr(WeightSpaceDropout(0.2)) == "WeightSpaceDropout(p=0.2)"
    assert repr(WeightSpaceActivation("relu")) == "WeightSpaceActivation(ReLU())"
    module = WeightSpaceSequential(WeightSpaceLinear(2, 3))
    before = module[0].lin.weight.clone()
    module.reset_parameters()
    assert not torch.equal(before, module[0].lin.weight)
