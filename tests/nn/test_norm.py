"""WeightSpaceLayerNorm: graph == dense, per-entry normalisation, equivariance, errors."""

import pytest
import torch
from helpers import (
    ARCHITECTURES,
    assert_equivariant,
    assert_mixed_batch_matches_dense,
    mixed_batch,
    random_features,
)

from nft_pyg import WeightSpace
from nft_pyg.nn.norm import WeightSpaceLayerNorm

torch.set_num_threads(1)


def randomise_affine(norm):
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    return norm


@pytest.mark.parametrize("affine", [True, False])
def test_matches_dense(affine):
    norm = WeightSpaceLayerNorm(4, affine=affine).double()
    if affine:
        randomise_affine(norm)
    out_x, out_e, batch = assert_mixed_batch_matches_dense(norm)
    assert bool((out_x[batch.node_role == 0] == 0).all())
    assert out_x.shape == (batch.num_nodes, 4) and out_e.shape == (batch.num_edges, 4)


def test_normalises_each_entry_over_channels():
    norm = WeightSpaceLayerNorm(6, eps=1e-12, affine=False).double()
    batch, _, _ = mixed_batch(["mlp_deep", "cnn"])
    x, edge_attr = random_features(batch, 6)
    out_x, out_e = norm(x, edge_attr, batch)
    hidden = batch.node_role != 0
    for features in (out_e, out_x[hidden]):
        assert torch.allclose(features.mean(-1), torch.zeros(len(features), dtype=torch.float64),
                              atol=1e-12)
        assert torch.allclose(features.var(-1, unbiased=False),
                              torch.ones(len(features), dtype=torch.float64), atol=1e-8)
    # scaling one edge's features does not change any other entry
    scaled = edge_attr.clone()
    scaled[0] *= 10
    out_x2, out_e2 = norm(x, scaled, batch)
    assert torch.allclose(out_e2[1:], out_e[1:], atol=0) and torch.equal(out_x2, out_x)


def test_affine_is_used():
    norm = randomise_affine(WeightSpaceLayerNorm(4).double())
    batch, _, _ = mixed_batch(["mlp_shallow"], copies=1)
    x, edge_attr = random_features(batch, 4)
    out_x, out_e = norm(x, edge_attr, batch)
    plain_x, plain_e = WeightSpaceLayerNorm(4, affine=False).double()(x, edge_attr, batch)
    hidden = batch.node_role != 0
    assert torch.allclose(out_e, plain_e * norm.weight + norm.bias)
    assert torch.allclose(out_x[hidden], plain_x[hidden] * norm.weight + norm.bias)
    norm.reset_parameters()
    assert torch.equal(norm.weight, torch.ones(4, dtype=torch.float64))


@pytest.mark.parametrize("network", ["mlp_shallow", "mlp_deep", "cnn"])
def test_equivariance(network):
    assert_equivariant(randomise_affine(WeightSpaceLayerNorm(4).double()),
                       ARCHITECTURES[network]())


def test_errors_and_repr():
    norm = WeightSpaceLayerNorm(4).double()
    batch, _, _ = mixed_batch(["mlp_shallow"], copies=1)
    x, edge_attr = random_features(batch, 3)
    with pytest.raises(ValueError, match="WeightSpaceLayerNorm: expected x with 4 channels"):
        norm(x, edge_attr, batch)
    with pytest.raises(ValueError, match="WeightSpaceLayerNorm: built for 4 channels"):
        norm.forward_dense(WeightSpace.from_features(batch, x, edge_attr))
    with pytest.raises(ValueError, match="channels must be positive"):
        WeightSpaceLayerNorm(0)
    assert repr(norm) == "WeightSpaceLayerNorm(4, eps=1e-05, affine=True)"
    assert WeightSpaceLayerNorm(4, affine=False).weight is None
