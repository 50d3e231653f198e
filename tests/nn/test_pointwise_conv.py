"""PointwiseConv: graph == dense twin, equivariance, every term used, errors."""
import copy

import pytest
import torch
from helpers import assert_matches_dense, cnn, feature_batch, mlp, random_neuron_permutation

from nft_pyg.graph.types import NodeRole
from nft_pyg.nn.conv.pointwise_conv import PointwiseConv, layer_linear
from nft_pyg.tensor.weight_space import WeightSpace

torch.set_num_threads(1)


def make_conv(in_channels, out_channels, num_layers, dtype=torch.float64, bias=True):
    conv = PointwiseConv(in_channels, out_channels, num_layers, bias=bias).to(dtype)
    if bias:
        with torch.no_grad():
            conv.edge_bias.normal_()
            conv.node_bias.normal_()
    return conv


@pytest.mark.parametrize("modules", [
    [mlp([3, 2])],
    [mlp([4, 5, 3, 2])] * 3,
    [cnn([2, 3, 2], [3, 1], head=3, pooled=2)] * 2,
    [mlp([3, 4, 2]), cnn([1, 3, 2], [5, 3], dim=1), mlp([2, 2, 2, 2, 2])],
], ids=["mlp1", "mlp3x3", "cnn-flatten", "mixed"])
@pytest.mark.parametrize("bias", [True, False])
def test_matches_dense(modules, bias):
    batch = feature_batch([m.double() for m in modules], channels=2)
    conv = make_conv(batch.x.size(1), 3, 4, bias=bias)
    x_out, _ = assert_matches_dense(conv, batch)
    assert torch.all(x_out[batch.node_role == int(NodeRole.INPUT)] == 0)


def test_matches_dense_float32():
    batch = feature_batch([mlp([4, 6, 2]), cnn([2, 3], [3])], channels=2, dtype=torch.float32)
    assert_matches_dense(make_conv(batch.x.size(1), 4, 2, dtype=torch.float32), batch,
                         atol=1e-5)


def test_is_a_map_of_each_entry_alone():
    """Changing one weight changes only that edge's output."""
    batch = feature_batch([mlp([3, 4, 2]).double()], channels=2)
    conv = make_conv(2, 2, 2)
    x_out, edge_out = conv(batch.x, batch.edge_index, batch.edge_attr, batch)
    edge_attr = batch.edge_attr.clone()
    edge_attr[5] += 1.0
    x_new, edge_new = conv(batch.x, batch.edge_index, edge_attr, batch)
    changed = (edge_new - edge_out).abs().sum(-1) > 0
    assert changed.nonzero().view(-1).tolist() == [5]
    assert torch.equal(x_new, x_out)


def test_equivariant_to_all_neuron_permutations():
    batch = feature_batch([mlp([4, 5, 3, 2]).double(), cnn([3, 4, 2], [3, 3]).double()],
                          channels=2)
    conv = make_conv(batch.x.size(1), 3, 3)
    node_map, edge_map = random_neuron_permutation(
        batch, (NodeRole.INPUT, NodeRole.HIDDEN, NodeRole.OUTPUT),
        torch.Generator().manual_seed(2))
    x_out, edge_out = conv(batch.x, batch.edge_index, batch.edge_attr, batch)
    x_perm, edge_perm = conv(batch.x[node_map], batch.edge_index, batch.edge_attr[edge_map], batch)
    torch.testing.assert_close(x_perm, x_out[node_map], atol=1e-12, rtol=0)
    torch.testing.assert_close(edge_perm, edge_out[edge_map], atol=1e-12, rtol=0)


@pytest.mark.parametrize("name", ["edge_weight", "node_weight", "edge_bias", "node_bias"])
def test_each_term_is_used(name):
    batch = feature_batch([mlp([3, 4, 2]).double()], channels=2)
    conv = make_conv(2, 2, 2)
    before = torch.cat(conv(batch.x, batch.edge_index, batch.edge_attr, batch))
    with torch.no_grad():
        getattr(conv, name)[1].zero_()  # layer 2 only: the layers are typed
    after = torch.cat(conv(batch.x, batch.edge_index, batch.edge_attr, batch))
    assert (after - before).abs().max() > 1e-3


def test_layer_linear_types_rows():
    features = torch.randn(6, 3, dtype=torch.float64)
    weight = torch.randn(3, 3, 2, dtype=torch.float64)
    layer = torch.tensor([2, 0, 1, 2, 2, 0])
    expected = torch.stack([features[r] @ weight[layer[r]] for r in range(6)])
    torch.testing.assert_close(layer_linear(features, weight, layer), expected)


def test_parameter_count():
    assert sum(p.numel() for p in PointwiseConv(3, 5, 4).parameters()) == 4 * (2 * 3 * 5 + 2 * 5)
    assert sum(p.numel() for p in PointwiseConv(3, 5, 4, bias=False).parameters()) == \
        4 * 2 * 3 * 5


def test_errors_and_repr():
    batch = feature_batch([mlp([3, 4, 4, 2]).double()], channels=2)
    x, e = batch.x, batch.edge_attr
    with pytest.raises(ValueError, match=r"PointwiseConv: the graph has 3 weight layers"):
        make_conv(2, 2, 2)(x, batch.edge_index, e, batch)
    with pytest.raises(ValueError, match=r"PointwiseConv: expected x with 3 channels"):
        make_conv(3, 2, 3)(x, batch.edge_index, e, batch)
    broken = copy.copy(batch)
    del broken.edge_layer
    with pytest.raises(ValueError, match=r"PointwiseConv: the graph has no edge_layer"):
        make_conv(2, 2, 3)(x, broken.edge_index, e, broken)
    with pytest.raises(ValueError, match=r"PointwiseConv.forward_dense: the weight space has 3"):
        make_conv(2, 2, 2).forward_dense(WeightSpace.from_features(batch, x, e))
    assert repr(PointwiseConv(2, 3, 4)) == "PointwiseConv(2, 3, num_layers=4, bias=True)"
