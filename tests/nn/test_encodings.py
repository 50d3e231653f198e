"""GaussianFourierFeatures, LayerEncoding, IOPositionEncoding: graph == dense, formulas,
equivariance (and its absence for IO positions), seeding, errors."""
import math

import pytest
import torch
from helpers import (
    ARCHITECTURES,
    assert_equivariant,
    assert_mixed_batch_matches_dense,
    mixed_batch,
    mlp,
    permuted_pair,
    random_features,
)

import nft_pyg
from nft_pyg import WeightSpace
from nft_pyg.graph.types import NodeRole
from nft_pyg.nn.encodings import GaussianFourierFeatures, IOPositionEncoding, LayerEncoding
from nft_pyg.nn.structure import WeightGraphIndex

torch.set_num_threads(1)


def randomise(module):
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.normal_()
    return module


# --- GaussianFourierFeatures -------------------------------------------------------
@pytest.mark.parametrize("learnable", [False, True])
def test_fourier_matches_dense(learnable):
    module = GaussianFourierFeatures(4, 3, sigma=1.0, learnable=learnable).double()
    out_x, out_e, batch = assert_mixed_batch_matches_dense(module)
    assert module.out_channels == 24
    assert out_x.shape == (batch.num_nodes, 24) and out_e.shape == (batch.num_edges, 24)
    assert bool((out_x[batch.node_role == 0] == 0).all())  # cos(0) = 1 is zeroed


def test_fourier_formula_on_raw_graph():
    module = GaussianFourierFeatures(1, 5, generator=torch.Generator().manual_seed(3)).double()
    graph = nft_pyg.from_module(mlp([3, 4, 2]).double())
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
    graph = nft_pyg.from_module(mlp([2, 3, 1]).double())
    out_x, out_e = learnable(graph.x, graph.edge_attr, graph)
    (out_x.sum() + out_e.sum()).backward()
    assert learnable.frequencies.grad is not None and learnable.frequencies.grad.abs().sum() > 0


@pytest.mark.parametrize("network", ["mlp_deep", "cnn"])
def test_fourier_equivariance(network):
    assert_equivariant(GaussianFourierFeatures(4, 2, sigma=1.0).double(), ARCHITECTURES[network]())


def test_fourier_errors():
    graph = nft_pyg.from_module(mlp([2, 3, 1]).double())
    with pytest.raises(ValueError, match="GaussianFourierFeatures: expected x with 2 channels"):
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
    out_x, out_e, batch = assert_mixed_batch_matches_dense(module)
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
    with pytest.raises(ValueError, match="LayerEncoding: expected x with 5 channels"):
        LayerEncoding(5, 4).double()(x, edge_attr, batch)
    assert repr(LayerEncoding(4, 3)) == "LayerEncoding(4, num_layers=3, kind='sinusoidal')"


# --- IOPositionEncoding --------------------------------------------------------------
def make_io(channels=4):
    # ARCHITECTURES have at most 3 inputs and 5 outputs
    return randomise(IOPositionEncoding(channels, num_inputs=3, num_outputs=5).double())


def test_io_matches_dense():
    out_x, out_e, batch = assert_mixed_batch_matches_dense(make_io())
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
    graph = nft_pyg.from_module(mlp([3, 2]).double())
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
    graph, graph_p, node_map, edge_map = permuted_pair(mlp([3, 4, 5]).double(), seed=1, **kwargs)
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
    with pytest.raises(ValueError, match="IOPositionEncoding: expected x with 3 channels"):
        IOPositionEncoding(3, 3, 2).double()(x, edge_attr, batch)
    no_pos = batch.clone()
    del no_pos.node_pos
    with pytest.raises(ValueError, match="IOPositionEncoding: the graph has no node_pos"):
        IOPositionEncoding(4, 3, 2).double()(x, edge_attr, no_pos)


def test_encodings_check_the_index_like_the_graph():
    """Given the WeightGraphIndex, the layer and IO encodings check depth and IO
    sizes from its ints and its part "io_counts" (the same errors as with the graph)."""
    batch, _, _ = mixed_batch(["mlp_deep", "mlp_shallow"], copies=1)
    x, edge_attr = random_features(batch, 4)
    index = WeightGraphIndex.from_data(batch)
    with pytest.raises(ValueError, match="LayerEncoding: built for 3 weight layers, the graph "
                                         "has 4"):
        LayerEncoding(4, 3).double()(x, edge_attr, index)
    with pytest.raises(ValueError, match="IOPositionEncoding: built for 2 input neurons, the "
                                         "graph has a network with 3"):
        IOPositionEncoding(4, 2, 5).double()(x, edge_attr, index)
    with pytest.raises(ValueError, match="built for 1 output neurons"):
        IOPositionEncoding(4, 3, 1).double()(x, edge_attr, index)
    counts = tuple(int(batch.node_pos[batch.node_role == role].max()) + 1
                   for role in (int(NodeRole.INPUT), int(NodeRole.OUTPUT)))
    assert index.parts["io_counts"] == counts
    for module in (LayerEncoding(4, 4, kind="learned"), IOPositionEncoding(4, *counts)):
        module = module.double()
        for got, want in zip(module(x, edge_attr, index), module(x, edge_attr, batch)):
            assert torch.equal(got, want)
