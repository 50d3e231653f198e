"""module -> graph -> module / state dict round trips are exact."""
import random

import pytest
import torch
from architectures import (
    KINDS,
    ChainCNN,
    ChainMLP,
    assert_graphs_equal,
    leaf_types,
    nest,
    random_architecture,
    random_architectures,
    random_cnn,
    random_mlp,
    randomize,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import nft_pyg
from nft_pyg.graph import Activation, EdgeKind, NodeRole, from_state_dict, layout_of
from nft_pyg.graph.validate import validate

DTYPES = [torch.float32, torch.float64]


def assert_exact_round_trip(module: nn.Module, example: torch.Tensor) -> nft_pyg.NeuronGraph:
    """Graph of ``module`` is valid; state dict and function come back bitwise."""
    graph = nft_pyg.from_module(module)
    validate(graph)
    original = module.state_dict()
    state = nft_pyg.to_state_dict(graph)
    assert list(state) == list(original)
    for key, value in original.items():
        assert state[key].dtype == value.dtype, key
        assert torch.equal(state[key], value), key
    rebuilt = nft_pyg.to_module(graph).eval()
    with torch.no_grad():
        assert torch.equal(rebuilt(example), module(example))
    assert_graphs_equal(from_state_dict(state, graph.layout), graph)
    return graph


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_each_kind(kind, dtype):
    rng = random.Random(f"{kind}-{dtype}")
    for _ in range(6):
        module, example = random_architecture(rng, kinds=(kind,), dtype=dtype)
        graph = assert_exact_round_trip(module, example)
        assert graph.x.dtype == dtype and graph.edge_attr.dtype == dtype
        assert graph.node_norm.dtype == dtype


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_round_trip_random_architectures(seed):
    module, example = random_architecture(random.Random(seed), dtype=torch.float64)
    assert_exact_round_trip(module, example)


def test_generator_covers_every_supported_module_kind():
    used = set()
    for module, _ in random_architectures(seed=1, count=150):
        used |= leaf_types(module)
    expected = {nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ReLU, nn.LeakyReLU, nn.GELU,
                nn.SiLU, nn.Tanh, nn.Sigmoid, nn.ELU, nn.Identity, nft_pyg.Sine, nn.Flatten,
                nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
                nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.MaxPool1d, nn.MaxPool2d,
                nn.MaxPool3d, nn.Dropout, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d,
                nn.LayerNorm}
    assert expected <= used, expected - used


@pytest.mark.parametrize("dtype", DTYPES)
def test_from_state_dict_of_to_state_dict_is_identity(dtype):
    for module, _ in random_architectures(seed=2, count=25, dtype=dtype):
        graph = nft_pyg.from_module(module)
        assert_graphs_equal(from_state_dict(nft_pyg.to_state_dict(graph), graph.layout), graph)
        # the Layout object and its JSON string are interchangeable
        assert_graphs_equal(from_state_dict(nft_pyg.to_state_dict(graph), graph.layout_obj),
                            graph)


def test_every_activation_is_encoded_in_node_act():
    activations = [nn.Identity(), nn.ReLU(), nn.LeakyReLU(0.3), nn.GELU(), nn.SiLU(),
                   nn.Tanh(), nn.Sigmoid(), nn.ELU(0.7), nft_pyg.Sine(3.0)]
    layers = []
    for act in activations:
        layers += [nn.Linear(2, 2), act]
    module = randomize(nn.Sequential(*layers, nn.Linear(2, 1)), 0).eval()
    graph = assert_exact_round_trip(module, torch.randn(3, 2))
    per_layer = [int(graph.node_act[graph.node_layer == layer][0])
                 for layer in range(1, len(activations) + 1)]
    assert per_layer == [int(code) for code in Activation]
    assert (graph.node_act[graph.node_layer == 0] == Activation.IDENTITY).all()
    rebuilt = nft_pyg.to_module(graph)
    assert rebuilt[5].negative_slope == 0.3 and rebuilt[15].alpha == 0.7
    assert rebuilt[17].w0 == 3.0


def test_mlp_graph_layout_matches_the_weights():
    module = randomize(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)), 0)
    graph = nft_pyg.from_module(module)
    assert graph.num_nodes == 3 + 4 + 2 and graph.edge_index.size(1) == 12 + 8
    assert graph.node_role.tolist() == [NodeRole.INPUT] * 3 + [NodeRole.HIDDEN] * 4 + \
        [NodeRole.OUTPUT] * 2
    # edge (i -> j) of layer 1 carries W[j, i]: row-major order of the weight
    first = graph.edge_layer == 1
    src, dst = graph.edge_index[:, first]
    assert torch.equal(graph.edge_attr[first, 0], module[0].weight[dst - 3, src])
    assert torch.equal(graph.x[3:7, 0], module[0].bias)
    assert (graph.x[:3] == 0).all()


def test_conv_edges_carry_whole_kernels_and_flatten_edges_carry_positions():
    module = randomize(nn.Sequential(nn.Conv2d(2, 3, (2, 3)), nn.ReLU(),
                                     nn.AdaptiveAvgPool2d((2, 2)), nn.Flatten(),
                                     nn.Linear(12, 5)), 0)
    graph = nft_pyg.from_module(module)
    assert int(graph.kernel_width) == 6
    conv = graph.edge_layer == 1
    assert (graph.edge_kind[conv] == EdgeKind.CONV).all()
    assert torch.equal(graph.edge_attr[conv], module[0].weight.reshape(6, 6))
    flat = graph.edge_layer == 2
    assert (graph.edge_kind[flat] == EdgeKind.FLATTEN).all()
    # neurons of the flatten layer are the 3 channels, each edge holds 4 positions
    assert (graph.node_layer == 1).sum() == 3
    weight = module[4].weight.reshape(5, 3, 4)
    assert torch.equal(graph.edge_attr[flat, :4], weight.reshape(15, 4))
    assert (graph.edge_attr[flat, 4:] == 0).all()


def test_flatten_without_spatial_positions_left_gives_linear_edges():
    module = randomize(nn.Sequential(nn.Conv1d(2, 3, 3), nn.AdaptiveMaxPool1d(1),
                                     nn.Flatten(), nn.Linear(3, 2)), 0)
    graph = nft_pyg.from_module(module)
    assert (graph.edge_kind[graph.edge_layer == 2] == EdgeKind.LINEAR).all()
    assert_exact_round_trip(module.eval(), torch.randn(2, 2, 6))


@pytest.mark.parametrize("dim", [1, 2, 3])
def test_norm_parameters_are_per_neuron(dim):
    module, example = random_cnn(random.Random(dim), dim=dim, depth=1, head="none")
    conv = module[0]
    module = randomize(nn.Sequential(conv, [nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d][
        dim - 1](conv.out_channels)), dim).eval()
    graph = assert_exact_round_trip(module, example)
    norm = module[1]
    expected = torch.stack([norm.weight, norm.bias, norm.running_mean, norm.running_var], 1)
    assert torch.equal(graph.node_norm[graph.node_layer == 1], expected)
    assert (graph.node_norm[graph.node_layer == 0] == torch.tensor([1.0, 0, 0, 1])).all()
    assert graph.layout_obj.steps[1]["num_batches_tracked"] == int(norm.num_batches_tracked)


@pytest.mark.parametrize("norm", [
    nn.LayerNorm(4), nn.LayerNorm(4, bias=False), nn.LayerNorm(4, elementwise_affine=False),
    nn.BatchNorm1d(4, affine=False), nn.BatchNorm1d(4, track_running_stats=False),
    nn.BatchNorm1d(4, momentum=None)])
def test_norm_variants_round_trip(norm):
    module = randomize(nn.Sequential(nn.Linear(3, 4), norm, nn.ReLU(), nn.Linear(4, 2)), 5)
    assert_exact_round_trip(module.eval(), torch.randn(2, 3))


def test_bias_free_layers_round_trip_and_have_zero_node_features():
    module = randomize(nn.Sequential(nn.Conv2d(2, 3, 3, bias=False), nn.Flatten(),
                                     nn.Linear(3 * 4, 2, bias=False)), 0).eval()
    graph = assert_exact_round_trip(module, torch.randn(2, 2, 4, 4))
    assert (graph.x == 0).all()
    assert set(nft_pyg.to_state_dict(graph)) == {"0.weight", "2.weight"}


def test_nested_sequentials_keep_their_names():
    module, example = random_mlp(random.Random(3), depth=3, norms=True)
    nested = nest(module, random.Random(4))
    nested = nn.Sequential(nn.Sequential(nested), nn.Identity())
    graph = assert_exact_round_trip(nested.eval(), example)
    names = [step["name"] for step in graph.layout_obj.steps]
    assert all(name.startswith("0.0.") for name in names[:-1]) and names[-1] == "1"


def test_fx_traced_custom_modules():
    mlp = randomize(ChainMLP([3, 4, 5, 2]), 0).eval()
    graph = assert_exact_round_trip(mlp, torch.randn(2, 3))
    assert [step["name"] for step in graph.layout_obj.steps if step["kind"] == "linear"] == \
        ["inp", "hidden", "out"]
    assert graph.node_act.unique_consecutive().tolist() == [Activation.IDENTITY,
                                                            Activation.RELU, Activation.TANH,
                                                            Activation.IDENTITY]
    cnn = randomize(ChainCNN(2, 3, 4, pooled=2), 1).eval()
    graph = assert_exact_round_trip(cnn, torch.randn(2, 2, 7, 7))
    kinds = [step["kind"] for step in graph.layout_obj.steps]
    assert kinds == ["conv", "act", "conv", "act", "pool", "flatten", "linear"]
    assert (graph.edge_kind[graph.edge_layer == 3] == EdgeKind.FLATTEN).all()


def test_custom_module_inside_a_sequential():
    inner = randomize(ChainMLP([2, 3, 3, 2]), 0)
    module = nn.Sequential(nn.Linear(4, 2), nn.ReLU(), inner).eval()
    graph = assert_exact_round_trip(module, torch.randn(2, 4))
    assert [s["name"] for s in graph.layout_obj.steps if s["kind"] == "linear"] == \
        ["0", "2.inp", "2.hidden", "2.out"]


def test_to_module_is_a_flat_sequential_in_training_mode():
    module, _ = random_cnn(random.Random(7), dim=2)
    rebuilt = nft_pyg.to_module(nft_pyg.from_module(module))
    assert isinstance(rebuilt, nn.Sequential) and rebuilt.training
    assert all(not list(child.children()) for child in rebuilt)
    assert [type(c) for c in rebuilt] == [type(c) for c in module]


def test_layout_of_matches_graph_layout():
    for module, _ in random_architectures(seed=9, count=10):
        assert layout_of(module).to_json() == nft_pyg.from_module(module).layout
