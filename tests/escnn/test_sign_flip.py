"""Sign flips of neurons before odd activations: function preserved; which operators commute."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import nft_pyg
from nft_pyg.graph.modules import Sine
from nft_pyg.nn.conv.hnp_conv import HNPConv
from nft_pyg.nn.conv.nft_attention import NFTAttention
from nft_pyg.nn.conv.np_conv import NPConv
from nft_pyg.nn.conv.pointwise_conv import PointwiseConv
from nft_pyg.nn.encodings import IOPositionEncoding, LayerEncoding
from nft_pyg.nn.norm import WeightSpaceLayerNorm
from nft_pyg.nn.pointwise import WeightSpaceActivation, WeightSpaceLinear, WeightSpaceSequential
from nft_pyg.nn.pool.hnp_pool import HNPPool
from nft_pyg.nn.pool.np_pool import NPPool
from nft_pyg.symmetry.sign_flip import (
    SignFlip,
    check_sign_flip_equivariance,
    flip_features,
    flippable_layers,
    random_sign_flip,
    sign_flip,
)

torch.set_num_threads(1)
C = 4


def odd_mlp():
    return nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 4), Sine(2.0),
                         nn.Linear(4, 2)).double()


def odd_cnn():
    return nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.Tanh(), nn.AvgPool2d(2),
                         nn.Conv2d(3, 4, 3), nn.Tanh(), nn.Flatten(),
                         nn.Linear(16, 2)).double()


@pytest.mark.parametrize("make, shape", [(odd_mlp, (6, 3)), (odd_cnn, (2, 2, 8, 8))],
                         ids=["mlp", "cnn"])
def test_random_sign_flip_keeps_the_function(make, shape):
    torch.manual_seed(0)
    module = make()
    x = torch.randn(*shape, dtype=torch.float64)
    flipped, flip = random_sign_flip(module, torch.Generator().manual_seed(1), return_flip=True)
    assert not flip.is_identity()
    assert flippable_layers(module) == [1, 2]
    changed = [not torch.equal(a, b) for a, b in zip(module.state_dict().values(),
                                                     flipped.state_dict().values())]
    assert any(changed)
    torch.testing.assert_close(flipped(x), module(x), atol=1e-12, rtol=0)
    # the graph path gives the same flipped network
    graph = sign_flip(nft_pyg.from_module(module), flip)
    expected = nft_pyg.from_module(flipped)
    torch.testing.assert_close(graph.edge_attr, expected.edge_attr, atol=0, rtol=0)
    torch.testing.assert_close(graph.x, expected.x, atol=0, rtol=0)
    same_draw = random_sign_flip(nft_pyg.from_module(module), torch.Generator().manual_seed(1))
    torch.testing.assert_close(same_draw.edge_attr, expected.edge_attr, atol=0, rtol=0)
    torch.testing.assert_close(nft_pyg.to_module(same_draw)(x), module(x), atol=1e-12, rtol=0)


def test_flipping_a_relu_layer_changes_the_function():
    torch.manual_seed(2)
    module = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).double()
    assert flippable_layers(module) == []
    assert random_sign_flip_is_identity(module)
    flip = SignFlip([torch.ones(3), torch.tensor([-1, 1, 1, 1]), torch.ones(2)])
    x = torch.randn(5, 3, dtype=torch.float64)
    assert not torch.allclose(sign_flip(module, flip)(x), module(x))


def random_sign_flip_is_identity(module) -> bool:
    _, flip = random_sign_flip(module, torch.Generator().manual_seed(0), return_flip=True)
    return flip.is_identity()


def test_norms_and_max_pooling_are_not_flippable():
    assert flippable_layers(nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.LayerNorm(3),
                                          nn.Linear(3, 1))) == []
    assert flippable_layers(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.MaxPool2d(2),
                                          nn.Flatten(), nn.Linear(2, 1))) == []
    assert flippable_layers(nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))) == [1]
    with pytest.raises(ValueError, match="\\+1 / -1"):
        SignFlip([[1, 0], [1]])


def test_flip_features_on_a_batch():
    torch.manual_seed(3)
    graphs = [nft_pyg.from_module(odd_mlp()) for _ in range(2)]
    from torch_geometric.data import Batch
    batch = Batch.from_data_list(graphs)
    flips = [random_sign_flip(odd_mlp(), torch.Generator().manual_seed(s), True)[1]
             for s in (4, 5)]
    x, e = flip_features(batch, batch.x, batch.edge_attr, flips)
    for b, (graph, flip) in enumerate(zip(graphs, flips)):
        one = sign_flip(graph, flip)
        part = batch.get_example(b)
        nodes = batch.batch == b
        torch.testing.assert_close(x[nodes], one.x)
        torch.testing.assert_close(e[batch.batch[batch.edge_index[0]] == b], one.edge_attr)
        assert part.num_nodes == graph.num_nodes


def test_escnn_group_describes_the_flips():
    escnn = pytest.importorskip("escnn")  # noqa: F841
    from nft_pyg.symmetry.sign_flip import sign_flip_group, signs_from_group_elements
    group = sign_flip_group()
    assert group.order() == 2
    signs = signs_from_group_elements([group.identity, *[g for g in group.elements
                                                         if g != group.identity]])
    assert signs.tolist() == [1, -1]


# --- which operators commute with sign flips --------------------------------------
def _randomised(op):
    with torch.no_grad():
        for p in op.parameters():
            p.normal_()  # zero-initialised biases would hide a non-equivariance
    return op.double().eval()


#: (operator, is it sign-flip equivariant / invariant?) -- the table of docs/escnn.md
SIGN_FLIP_TABLE = {
    "PointwiseConv(bias=False)": (lambda: PointwiseConv(C, C, 3, bias=False), True),
    "PointwiseConv": (lambda: PointwiseConv(C, C, 3), False),
    "WeightSpaceLinear(bias=False)": (lambda: WeightSpaceLinear(C, C, bias=False), True),
    "WeightSpaceActivation(tanh)": (lambda: WeightSpaceActivation("tanh"), True),
    "WeightSpaceActivation(relu)": (lambda: WeightSpaceActivation("relu"), False),
    "WeightSpaceLayerNorm(affine=False)": (lambda: WeightSpaceLayerNorm(C, affine=False), True),
    "WeightSpaceLayerNorm": (lambda: WeightSpaceLayerNorm(C), False),
    "NPConv(bias=False)": (lambda: NPConv(C, C, 3, bias=False), False),
    "HNPConv(bias=False)": (lambda: HNPConv(C, C, 3, 3, 2, bias=False), False),
    "NFTAttention(bias=False)": (lambda: NFTAttention(C, heads=2, num_layers=3, bias=False),
                                 False),
    "NFTAttention(global only, bias=False)": (
        lambda: NFTAttention(C, heads=2, num_layers=3, bias=False, cross_term=False), False),
    "LayerEncoding": (lambda: LayerEncoding(C, 3), False),
    "IOPositionEncoding": (lambda: IOPositionEncoding(C, 3, 2), False),
    "NPPool": (lambda: NPPool(C, 3), False),
    "HNPPool": (lambda: HNPPool(C, 3, 3, 2), False),
}


@pytest.fixture(scope="module")
def features():
    torch.manual_seed(6)
    graph = nft_pyg.from_module(odd_mlp())
    x = torch.randn(graph.num_nodes, C, dtype=torch.float64).masked_fill(
        (graph.node_layer == 0).unsqueeze(-1), 0.0)
    return graph, x, torch.randn(graph.num_edges, C, dtype=torch.float64)


@pytest.mark.parametrize("name", list(SIGN_FLIP_TABLE))
def test_sign_flip_table(features, name):
    graph, x, edge_attr = features
    make, expected = SIGN_FLIP_TABLE[name]
    torch.manual_seed(7)
    report = check_sign_flip_equivariance(_randomised(make()), graph, x, edge_attr,
                                          generator=torch.Generator().manual_seed(8),
                                          trials=3, atol=1e-9)
    assert report.passed == expected, (name, report)
    if not expected:
        assert report.max_error > 1e-3  # clearly broken, not round-off


def test_a_sign_flip_equivariant_stack(features):
    """Bias-free pointwise maps and odd activations compose to an equivariant network."""
    graph, x, edge_attr = features
    torch.manual_seed(9)
    first = _randomised(PointwiseConv(C, C, 3, bias=False))
    act = WeightSpaceActivation("tanh")
    second = _randomised(PointwiseConv(C, 2, 3, bias=False))

    stack = WeightSpaceSequential(first, act, second)

    assert check_sign_flip_equivariance(stack, graph, x, edge_attr, atol=1e-9,
                                        generator=torch.Generator().manual_seed(10))
