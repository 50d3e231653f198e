"""GaussianFourierFeatures, LayerEncoding, IOPositionEncoding: graph == dense, formulas,
equivariance (and its absence for IO positions), seeding, errors."""
import copy
import math

import pytest
import torch
from torch import nn
from torch_geometric.data import Batch

import nft_pyg
from nft_pyg import WeightSpace
from nft_pyg.nn.encodings import GaussianFourierFeatures, IOPositionEncoding, LayerEncoding

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


def randomise(module):
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.normal_()
    return module


# --- GaussianFourierFeatures -------------------------------------------------------
@pytest.mark.parametrize("learnable", [False, True])
def test_fourier_matches_dense(learnable):
    module = GaussianFourierFeatures(4, 3, sigma=1.0, learnable=learnable).double()
    out_x, out_e, batch = assert_matches_dense(module)
    assert module.out_channels == 24
    assert out_x.shape == (batch.num_nodes, 24) and out_e.shape == (batch.num_edges, 24)
    assert bool((out_x[batch.node_role == 0] == 0).all())  # cos(0) = 1 is zeroed


def test_fourier_formula_on_raw_graph():
    module = GaussianFourierFeatures(1, 5, generator=torch.Generator().manual_seed(3)).double()
    graph = nft_pyg.from_module(make_mlp([3, 4, 2]))
    out_x, out_e = module(graph.x, graph.edge_attr, graph)
    angles = 2 * math.pi * graph.edge_attr * module.frequencies[0]  # [E, 1] * [F]
    assert torch.allclose(out_e, torch.cat([torch.sin(angles), torch.cos(angles)], -1))
    hidden = graph.node_role != 0
    angles = 2 * math.pi * graph.x[hidden] * module.frequencies[0]
    assert torch.allclose(out_x[hidden], torch.cat([torch.sin(angles), torch.cos(angles)], -1))


def test_fourier_seeded_generator_is_deterministic():
    def make(seed):
        torch.manual_seed(seed + 100)  # the global RNG must not matter
        generator = torch.Generator().manual_seed(seed)
        return GaussianFourierFeatures(2, 8, sigma=2.0, generator=generator)
    assert torch.equal(make(7).frequencies, make(7).frequencies)
    assert not torch.equal(make(7).frequencies, make(8).frequencies)
    module = make(7)
    module.reset_parameters(torch.Generator().manual_seed(7))
    assert torch.equal(module.frequencies, make(7).frequencies)
    # B ~ N(0, sigma^2)
    big = GaussianFourierFeatures(1, 20000, sigma=2.0, generator=torch.Generator().manual_seed(0))
    assert abs(big.frequencies.std().item() - 2.0) < 0.05


def test_fourier_buffer_or_parameter():
    fixed = GaussianFourierFeatures(1, 4)
    assert not list(fixed.parameters()) and "frequencies" in fixed.state_dict()
    learnable = GaussianFourierFeatures(1, 4, learnable=True).double()
    assert [name for name, _ in learnable.named_parameters()] == ["frequencies"]
    graph = nft_pyg.from_module(make_mlp([2, 3, 1]))
    out_x, out_e = learnable(graph.x, graph.edge_attr, graph)
    (out_x.sum() + out_e.sum()).backward()
    assert learnable.frequencies.grad is not None and learnable.frequencies.grad.abs().sum() > 0


@pytest.mark.parametrize("network", ["mlp_deep", "cnn"])
def test_fourier_equivariance(network):
    assert_equivariant(GaussianFourierFeatures(4, 2, sigma=1.0).double(), ARCHITECTURES[network]())


def test_fourier_errors():
    graph = nft_pyg.from_module(make_mlp([2, 3, 1]))
    with pytest.raises(ValueError, match="GaussianFourierFeatures: built for 2 channels"):
        GaussianFourierFeatures(2, 4).double()(graph.x, graph.edge_attr, graph)
    with pytest.raises(ValueError, match="sigma must be positive"):
        GaussianFourierFeatures(1, 4, sigma=0.0)
    with pytest.raises(ValueError, match="must be positive"):
        GaussianFourierFeatures(1, 0)


# --- LayerEncoding ------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["sinusoidal", "learned"])
def test_layer_encoding_matches_dense(kind):
    module = LayerEncoding(4, num_layers=5, kind=kind).double()
    if kind == "learned":
        randomise(module)
    out_x, out_e, batch = assert_matches_dense(module)
    assert bool((out_x[batch.node_role == 0] == 0).all())


@pytest.mark.parametrize("kind", ["sinusoidal", "learned"])
def test_layer_encoding_adds_its_layer_rows(kind):
    module = LayerEncoding(6, num_layers=4, kind=kind).double()
    batch, _, _ = mixed_batch(["mlp_deep", "cnn"])
    x, edge_attr = random_features(batch, 6)
    out_x, out_e = module(x, edge_attr, batch)
    assert torch.allclose(out_e - edge_attr, module.weight_table[batch.edge_layer - 1])
    hidden = batch.node_layer > 0
    assert torch.allclose(out_x[hidden] - x[hidden],
                          module.bias_table[batch.node_layer[hidden] - 1])
    # every layer and the weight / bias kinds get distinct encodings
    tables = torch.cat([module.weight_table, module.bias_table])
    assert torch.cdist(tables, tables).add(torch.eye(8)).min() > 1e-3


def test_layer_encoding_tables_are_used():
    module = randomise(LayerEncoding(3, num_layers=4, kind="learned").double())
    batch, _, _ = mixed_batch(["mlp_deep"], copies=1)
    x, edge_attr = random_features(batch, 3)
    out_x, out_e = module(x, edge_attr, batch)
    with torch.no_grad():
        module.weight_table.zero_()
    no_w = module(x, edge_attr, batch)
    assert torch.equal(no_w[0], out_x) and not torch.allclose(no_w[1], out_e)
    with torch.no_grad():
        module.bias_table.zero_()
    no_b = module(x, edge_attr, batch)
    assert torch.equal(no_b[1], edge_attr) and not torch.allclose(no_b[0], out_x)
    assert not list(LayerEncoding(3, 4).parameters())  # sinusoidal: fixed buffers


@pytest.mark.parametrize("network", ["mlp_deep", "cnn"])
def test_layer_encoding_equivariance(network):
    assert_equivariant(randomise(LayerEncoding(4, 4, kind="learned").double()),
                       ARCHITECTURES[network]())


def test_layer_encoding_errors():
    batch, _, _ = mixed_batch(["mlp_deep"], copies=1)
    x, edge_attr = random_features(batch, 4)
    with pytest.raises(ValueError, match="LayerEncoding: built for 3 weight layers, the graph "
                                         "has 4"):
        LayerEncoding(4, 3).double()(x, edge_attr, batch)
    with pytest.raises(ValueError, match="LayerEncoding: built for 3 weight layers"):
        LayerEncoding(4, 3).double().forward_dense(WeightSpace.from_features(batch, x, edge_attr))
    with pytest.raises(ValueError, match="kind must be one of"):
        LayerEncoding(4, 3, kind="rotary")
    with pytest.raises(ValueError, match="LayerEncoding: built for 5 channels"):
        LayerEncoding(5, 4).double()(x, edge_attr, batch)
    assert repr(LayerEncoding(4, 3)) == "LayerEncoding(4, num_layers=3, kind='sinusoidal')"


# --- IOPositionEncoding --------------------------------------------------------------
def make_io(channels=4):
    # ARCHITECTURES have at most 3 inputs and 5 outputs
    return randomise(IOPositionEncoding(channels, num_inputs=3, num_outputs=5).double())


def test_io_matches_dense():
    out_x, out_e, batch = assert_matches_dense(make_io())
    assert bool((out_x[batch.node_role == 0] == 0).all())


def test_io_adds_only_to_io_edges_and_output_nodes():
    module = make_io(3)
    batch, _, _ = mixed_batch(["mlp_deep", "mlp_shallow"])
    x, edge_attr = random_features(batch, 3)
    out_x, out_e = module(x, edge_attr, batch)
    src, dst = batch.edge_index
    from_input, to_output = batch.node_role[src] == 0, batch.node_role[dst] == 2
    middle = ~from_input & ~to_output
    assert middle.any() and torch.equal(out_e[middle], edge_attr[middle])
    hidden = batch.node_role == 1
    assert torch.equal(out_x[hidden], x[hidden])
    expected = edge_attr.clone()
    expected[from_input] += module.input_embedding[batch.node_pos[src[from_input]]]
    expected[to_output] += module.output_embedding[batch.node_pos[dst[to_output]]]
    assert torch.allclose(out_e, expected)
    output = batch.node_role == 2
    expected_x = x[output] + module.output_embedding[batch.node_pos[output]]
    assert torch.allclose(out_x[output], expected_x)


def test_io_one_layer_network_gets_both_embeddings():
    module = make_io(2)
    graph = nft_pyg.from_module(make_mlp([3, 2]))
    x, edge_attr = random_features(graph, 2)
    _, out_e = module(x, edge_attr, graph)
    src, dst = graph.edge_index
    expected = edge_attr + module.input_embedding[graph.node_pos[src]] \
        + module.output_embedding[graph.node_pos[dst]]
    assert torch.allclose(out_e, expected)


@pytest.mark.parametrize("network", ["mlp_shallow", "mlp_deep", "cnn"])
def test_io_equivariant_to_hidden_permutations(network):
    assert_equivariant(make_io(), ARCHITECTURES[network]())


@pytest.mark.parametrize("which", ["inputs", "outputs"])
def test_io_not_invariant_to_io_permutations(which):
    kwargs = {"permute_hidden": False, f"permute_{which}": True}
    graph, graph_p, node_map, edge_map = permuted_pair(make_mlp([3, 4, 5]), seed=1, **kwargs)
    module = make_io()
    x, edge_attr = random_features(graph, 4)
    out_x, out_e = module(x, edge_attr, graph)
    perm_x, perm_e = module(x[node_map], edge_attr[edge_map], graph_p)
    assert not torch.allclose(perm_e, out_e[edge_map])
    if which == "outputs":
        assert not torch.allclose(perm_x, out_x[node_map])
    # with the embeddings zeroed the map is the identity, so it commutes again: the
    # difference above comes from the encoding
    with torch.no_grad():
        module.input_embedding.zero_()
        module.output_embedding.zero_()
    out_x, out_e = module(x, edge_attr, graph)
    perm_x, perm_e = module(x[node_map], edge_attr[edge_map], graph_p)
    assert torch.equal(perm_e, out_e[edge_map]) and torch.equal(perm_x, out_x[node_map])


def test_io_errors():
    batch, _, _ = mixed_batch(["mlp_shallow"], copies=1)  # 3 inputs, 2 outputs
    x, edge_attr = random_features(batch, 4)
    with pytest.raises(ValueError, match="IOPositionEncoding: built for 2 input neurons, the "
                                         "graph has a network with 3"):
        IOPositionEncoding(4, 2, 5).double()(x, edge_attr, batch)
    with pytest.raises(ValueError, match="built for 1 output neurons"):
        IOPositionEncoding(4, 3, 1).double()(x, edge_attr, batch)
    with pytest.raises(ValueError, match="built for 2 inputs"):
        IOPositionEncoding(4, 2, 5).double().forward_dense(
            WeightSpace.from_features(batch, x, edge_attr))
    with pytest.raises(ValueError, match="IOPositionEncoding: built for 3 channels"):
        IOPositionEncoding(3, 3, 2).double()(x, edge_attr, batch)
    no_pos = batch.clone()
    del no_pos.node_pos
    with pytest.raises(ValueError, match="IOPositionEncoding: the graph has no node_pos"):
        IOPositionEncoding(4, 3, 2).double()(x, edge_attr, no_pos)
