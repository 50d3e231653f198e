"""escnn networks as neuron graphs: channel view, field view, field permutations."""
from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torch_geometric.data import Batch

import nft_pyg
from nft_pyg.graph.escnn import (
    EscnnUnsupportedError,
    export_escnn,
    field_layout_of,
    field_to_channel_graph,
    field_to_exported,
    field_to_state_dict,
    from_escnn,
    is_escnn_module,
)
from nft_pyg.graph.types import Activation
from nft_pyg.nn.conv.hnp_conv import HNPConv
from nft_pyg.nn.conv.nft_attention import NFTAttention
from nft_pyg.nn.conv.np_conv import NPConv
from nft_pyg.nn.conv.pointwise_conv import PointwiseConv
from nft_pyg.symmetry import check_equivariance, permute
from nft_pyg.symmetry.equivariance import call_module
from nft_pyg.symmetry.fields import field_to_channel_permutation, random_field_permutation

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # escnn warns that py3nj is missing
    escnn = pytest.importorskip("escnn")
    from escnn import group, gspaces
    from escnn import nn as enn

torch.set_num_threads(1)


def _randomise(module):
    torch.manual_seed(0)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_()  # escnn initialises biases to zero; random ones test the bias path
    return module


@pytest.fixture(scope="module")
def gspace():
    return gspaces.rot2dOnR2(4)


@pytest.fixture(scope="module")
def mixed_net(gspace):
    """trivial -> [2 regular, 1 trivial] -> ReLU -> spatial max pool -> 2 trivial."""
    g = gspace
    inputs = enn.FieldType(g, [g.trivial_repr])
    hidden = enn.FieldType(g, [g.regular_repr, g.trivial_repr, g.regular_repr])
    outputs = enn.FieldType(g, 2 * [g.trivial_repr])
    torch.manual_seed(0)
    return _randomise(enn.SequentialModule(
        enn.R2Conv(inputs, hidden, 3, padding=1), enn.ReLU(hidden),
        enn.PointwiseMaxPool2D(hidden, 2), enn.R2Conv(hidden, outputs, 3)))


@pytest.fixture(scope="module")
def pooled_net(gspace):
    """trivial -> 2 regular -> ReLU -> 2 regular -> ReLU -> GroupPooling -> 2 trivial."""
    g = gspace
    inputs = enn.FieldType(g, [g.trivial_repr])
    regular = enn.FieldType(g, 2 * [g.regular_repr])
    pooled = enn.FieldType(g, 2 * [g.trivial_repr])
    torch.manual_seed(1)
    return _randomise(enn.SequentialModule(
        enn.R2Conv(inputs, regular, 3, padding=1), enn.ReLU(regular),
        enn.R2Conv(regular, regular, 3, padding=1), enn.ReLU(regular),
        enn.GroupPooling(regular), enn.R2Conv(pooled, pooled, 3)))


@pytest.fixture(scope="module")
def image():
    return torch.randn(2, 1, 9, 9, generator=torch.Generator().manual_seed(2))


def escnn_output(module, x):
    module.eval()
    return module(enn.GeometricTensor(x, module.in_type)).tensor


# --- channel view --------------------------------------------------------------
def test_channel_view_computes_the_network(mixed_net, image):
    assert is_escnn_module(mixed_net) and not is_escnn_module(nn.Linear(1, 1))
    mixed_net.train()
    graph = from_escnn(mixed_net)
    assert mixed_net.training  # export() ran on a copy
    assert graph.num_nodes == 1 + 9 + 2 and graph.kernel_width.item() == 9
    rebuilt = nft_pyg.to_module(graph).eval()
    torch.testing.assert_close(rebuilt(image), escnn_output(mixed_net, image),
                               atol=1e-5, rtol=1e-5)
    mixed_net.train()


def test_from_module_dispatches_to_escnn(mixed_net, pooled_net):
    channel = nft_pyg.from_module(mixed_net)
    assert torch.equal(channel.edge_attr, from_escnn(mixed_net).edge_attr)
    assert channel.layout == from_escnn(mixed_net).layout
    field = nft_pyg.from_module(pooled_net, view="field")
    assert field.field_layout == from_escnn(pooled_net, view="field").field_layout
    assert torch.equal(field.edge_attr, from_escnn(pooled_net, view="field").edge_attr)
    with pytest.raises(ValueError, match="escnn networks only"):
        nft_pyg.from_module(nn.Linear(2, 2), view="field")


def test_conversion_expands_the_filter_of_a_training_module(gspace):
    """R2Conv.filter stays empty in training mode until expanded; we export a copy."""
    g = gspace
    conv = _randomise(enn.R2Conv(enn.FieldType(g, [g.trivial_repr]),
                                 enn.FieldType(g, [g.regular_repr]), 3))
    conv.train()
    graph = from_escnn(enn.SequentialModule(conv))
    assert conv.training
    assert bool((graph.edge_attr != 0).any())
    conv.eval()  # now escnn expands the filter
    torch.testing.assert_close(graph.edge_attr.reshape(4, 9), conv.filter.reshape(4, 9))


def test_module_in_eval_mode_after_a_forward_pass(mixed_net, image):
    """escnn caches autograd-tracked filters in eval mode; conversion copies around them."""
    expected = escnn_output(mixed_net, image)
    assert mixed_net._modules["0"].filter.grad_fn is not None
    channel, field = from_escnn(mixed_net), from_escnn(mixed_net, view="field")
    assert not mixed_net.training  # the user's mode is kept
    torch.testing.assert_close(nft_pyg.to_module(channel).eval()(image), expected,
                               atol=1e-5, rtol=1e-5)
    assert field.num_nodes == 6
    mixed_net.train()


def test_channel_view_rejects_group_pooling(pooled_net):
    with pytest.raises(EscnnUnsupportedError, match="view='field'"):
        from_escnn(pooled_net)


# --- field view -----------------------------------------------------------------
def test_field_graph_structure(mixed_net):
    graph = from_escnn(mixed_net, view="field")
    exported = export_escnn(mixed_net)
    assert graph.num_nodes == 1 + 3 + 2 and graph.num_edges == 3 + 6
    # largest field: regular (4 channels); largest block: regular x trivial x 3x3
    assert graph.x.shape == (6, 4) and graph.edge_attr.shape == (9, 4 * 1 * 9)
    assert graph.kernel_width.item() == 36
    types = field_layout_of(graph)["types"]
    regular, trivial = types["C4:regular"]["id"], types["C4:irrep_0"]["id"]
    assert graph.node_field_type.tolist() == [trivial, regular, trivial, regular,
                                              trivial, trivial]
    assert graph.node_act.tolist() == [0] + [int(Activation.RELU)] * 3 + [0, 0]
    # hidden field 2 (channels 5..8) -> output field 1 (channel 1) of layer 2
    w2, b1 = exported[3].weight, exported[0].bias
    edge = ((graph.edge_index[0] == 1 + 2) & (graph.edge_index[1] == 4 + 1)).nonzero().item()
    torch.testing.assert_close(graph.edge_attr[edge, :36], w2[1:2, 5:9].reshape(-1))
    assert bool((graph.edge_attr[edge, 36:] == 0).all())
    torch.testing.assert_close(graph.x[1 + 2], b1[5:9])
    torch.testing.assert_close(graph.x[2, :1], b1[4:5])  # the trivial hidden field


@pytest.mark.parametrize("name", ["mixed_net", "pooled_net"])
def test_field_graph_round_trips_to_the_exported_network(request, name):
    module = request.getfixturevalue(name)
    graph = from_escnn(module, view="field")
    state = field_to_state_dict(graph)
    expected = export_escnn(module).state_dict()
    assert list(state) == [key for key in expected if key.endswith(("weight", "bias"))]
    for key, value in state.items():
        assert torch.equal(value, expected[key]), key


def test_field_to_channel_graph(mixed_net, pooled_net):
    field = from_escnn(mixed_net, view="field")
    channel = from_escnn(mixed_net)
    back = field_to_channel_graph(field)
    for key in ("x", "edge_attr", "edge_index", "node_layer", "node_act", "edge_layer"):
        assert torch.equal(back[key], channel[key]), key
    with pytest.raises(ValueError, match="GroupPooling"):
        field_to_channel_graph(from_escnn(pooled_net, view="field"))


@pytest.mark.parametrize("name", ["mixed_net", "pooled_net"])
def test_permuting_hidden_fields_of_one_type_keeps_the_function(request, name, image):
    module = request.getfixturevalue(name)
    graph = from_escnn(module, view="field")
    reference = export_escnn(module)(image)
    generator = torch.Generator().manual_seed(3)
    moved = 0
    for _ in range(4):
        perm = random_field_permutation(graph, generator)
        moved += not perm.is_identity()
        permuted_graph = permute(graph, perm)
        rebuilt = field_to_exported(permuted_graph, module)
        torch.testing.assert_close(rebuilt(image), reference, atol=1e-5, rtol=1e-5)
        if name == "pooled_net":  # invariant output fields: still rotation equivariant
            rotated = rebuilt(torch.rot90(image, 1, (2, 3)))
            torch.testing.assert_close(rotated, torch.rot90(reference, 1, (2, 3)),
                                       atol=1e-5, rtol=1e-5)
        # types travel with their fields
        hidden = (graph.node_role == 1)
        assert torch.equal(permuted_graph.node_field_type, graph.node_field_type)
        assert hidden.any()
    assert moved


def test_field_permutation_equals_a_channel_permutation(mixed_net, image):
    field = from_escnn(mixed_net, view="field")
    channel = from_escnn(mixed_net)
    perm = random_field_permutation(field, torch.Generator().manual_seed(4))
    channel_perm = field_to_channel_permutation(field, perm)
    assert channel_perm.sizes == [1, 9, 2]
    expected = permute(channel, channel_perm)
    got = field_to_channel_graph(permute(field, perm))
    torch.testing.assert_close(got.edge_attr, expected.edge_attr, atol=0, rtol=0)
    torch.testing.assert_close(got.x, expected.x, atol=0, rtol=0)


def test_mixing_field_types_is_refused(mixed_net):
    graph = from_escnn(mixed_net, view="field")
    from nft_pyg.symmetry import NeuronPermutation
    swap = NeuronPermutation([[0], [1, 0, 2], [0, 1]])  # a trivial and a regular field
    with pytest.raises(ValueError, match="mixed field types"):
        field_to_state_dict(permute(graph, swap))
    ok = NeuronPermutation([[0], [2, 1, 0], [0, 1]])  # the two regular fields
    field_to_state_dict(permute(graph, ok))


@pytest.mark.parametrize("kind", ["np", "hnp", "nft", "pointwise"])
def test_operators_are_equivariant_to_field_permutations(pooled_net, kind):
    graph = from_escnn(pooled_net, view="field")
    C = 4
    torch.manual_seed(5)
    node_in, edge_in = nn.Linear(graph.x.size(1), C), nn.Linear(graph.edge_attr.size(1), C)
    op = {"np": lambda: NPConv(C, C, 3), "hnp": lambda: HNPConv(C, C, 3, 1, 2),
          "nft": lambda: NFTAttention(C, heads=2, num_layers=3),
          "pointwise": lambda: PointwiseConv(C, C, 3)}[kind]().eval()

    def model(x, edge_attr, graph):
        return call_module(op, node_in(x), edge_in(edge_attr), graph)

    generator = torch.Generator().manual_seed(6)
    perms = [random_field_permutation(graph, generator) for _ in range(3)]
    assert any(not p.is_identity() for p in perms)
    for perm in perms:
        report = check_equivariance(model, graph, perm=perm, atol=1e-5)
        assert report.passed, (kind, report)


def test_field_graphs_batch_with_unshifted_types(mixed_net, pooled_net):
    from nft_pyg.transforms.pad_kernels import PadKernels
    a = from_escnn(mixed_net, view="field")
    b = from_escnn(pooled_net, view="field", type_ids={"C4:irrep_0": 0, "C4:regular": 1})
    assert b.node_field_type.max() == 1
    width = max(a.kernel_width.item(), b.kernel_width.item())
    a, b = PadKernels(width)(a), PadKernels(width)(b)
    batch = Batch.from_data_list([a, a])
    assert torch.equal(batch.node_field_type, torch.cat([a.node_field_type] * 2))
    assert batch.edge_index.max() == batch.num_nodes - 1
    assert batch.field_layout == [a.field_layout, a.field_layout]
    assert torch.equal(batch.get_example(1).node_field_type, a.node_field_type)


def test_escnn_linear_network():
    g = gspaces.no_base_space(group.cyclic_group(3))
    inputs = enn.FieldType(g, 3 * [g.trivial_repr])
    hidden = enn.FieldType(g, 2 * [g.regular_repr])
    outputs = enn.FieldType(g, [g.trivial_repr])
    net = _randomise(enn.SequentialModule(enn.Linear(inputs, hidden), enn.ELU(hidden),
                                          enn.Linear(hidden, outputs)))
    x = torch.randn(4, 3)
    channel = from_escnn(net)
    assert channel.num_nodes == 3 + 6 + 1
    torch.testing.assert_close(nft_pyg.to_module(channel)(x), escnn_output(net, x),
                               atol=1e-5, rtol=1e-5)
    field = from_escnn(net, view="field")
    assert field.num_nodes == 3 + 2 + 1 and field.edge_attr.shape == (8, 3)
    assert field.node_act[3:5].tolist() == [int(Activation.ELU)] * 2
    for key, value in field_to_state_dict(field).items():
        assert torch.equal(value, export_escnn(net).state_dict()[key])


def test_errors(mixed_net, gspace):
    with pytest.raises(TypeError, match="escnn module"):
        from_escnn(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="view must be"):
        from_escnn(mixed_net, view="neuron")
    with pytest.raises(ValueError, match="no id"):
        from_escnn(mixed_net, view="field", type_ids={"C4:regular": 0})
    with pytest.raises(ValueError, match="kernel_width"):
        from_escnn(mixed_net, view="field", kernel_width=200)
    with pytest.raises(ValueError, match="not a field graph"):
        field_to_state_dict(from_escnn(mixed_net))
    g = gspace
    regular = enn.FieldType(g, [g.regular_repr])
    tanh = enn.SequentialModule(enn.R2Conv(enn.FieldType(g, [g.trivial_repr]), regular, 3),
                                enn.PointwiseNonLinearity(regular, "p_tanh"),
                                enn.R2Conv(regular, regular, 3))
    with pytest.raises(EscnnUnsupportedError, match="cannot export"):
        from_escnn(tanh)
    field = from_escnn(tanh, view="field")  # the field view needs no export of the activation
    assert field.node_act[1].item() == int(Activation.TANH)
    norm = enn.SequentialModule(enn.R2Conv(enn.FieldType(g, [g.trivial_repr]), regular, 3),
                                enn.InnerBatchNorm(regular), enn.R2Conv(regular, regular, 3))
    with pytest.raises(EscnnUnsupportedError, match="norm"):
        from_escnn(norm, view="field")
