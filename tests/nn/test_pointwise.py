"""WeightSpaceActivation / Dropout / Linear / Sequential: graph == dense, equivariance, errors."""

import pytest
import torch
from helpers import (
    ARCHITECTURES,
    assert_equivariant,
    assert_mixed_batch_matches_dense,
    mixed_batch,
    random_features,
)
from torch import nn

from nft_pyg import WeightSpace
from nft_pyg.nn.norm import WeightSpaceLayerNorm
from nft_pyg.nn.pointwise import (
    WeightSpaceActivation,
    WeightSpaceDropout,
    WeightSpaceLinear,
    WeightSpaceSequential,
)

torch.set_num_threads(1)


@pytest.mark.parametrize("act", ["relu", "gelu", "sigmoid", nn.Tanh(), nn.LeakyReLU(0.3)])
def test_activation_matches_dense(act):
    out_x, out_e, batch = assert_mixed_batch_matches_dense(WeightSpaceActivation(act))
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
    out_x, out_e, batch = assert_mixed_batch_matches_dense(module)
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
    out_x, out_e, batch = assert_mixed_batch_matches_dense(model)
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
    assert_mixed_batch_matches_dense(module)  # eval mode: the identity on both sides


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
    with pytest.raises(ValueError, match="WeightSpaceLinear: expected x with 3 channels"):
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
