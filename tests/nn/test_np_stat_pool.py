"""NPStatPool: graph == dense twin, the entries are each layer's statistics,
each statistic is computed from the layer's values, invariance, NFN(pool="stats"),
errors."""
import copy

import pytest
import torch

from nft_pyg.graph.types import NodeRole
from nft_pyg.nn.models.nfn import NFN
from nft_pyg.nn.pool.np_stat_pool import NPStatPool
from nft_pyg.nn.statistics import STAT_QUANTILES
from nft_pyg.tensor.weight_space import WeightSpace

from helpers import (ALL_ROLES, cnn, cnns, edge_ptr, feature_batch, mlp, mlps, permuted_modules,
                     random_neuron_permutation, split_by_architecture, structure_batch)

torch.set_num_threads(1)
NUM_STATS = 2 + len(STAT_QUANTILES)


def _by_layout(batch):
    ids = {}
    for i, layout in enumerate(batch.layout):
        ids.setdefault(layout, []).append(i)
    return list(ids.values())


@pytest.mark.parametrize("dtype,atol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_matches_dense_on_mixed_batch(dtype, atol):
    modules = [mlp([3, 4, 2]), cnn([2, 3, 2], [3, 1], head=3, pooled=2), mlp([3, 2, 2, 5, 2]),
               mlp([3, 4, 2])]
    batch = feature_batch([m.to(dtype) for m in modules], channels=2, dtype=dtype)
    channels = batch.x.size(1)
    pool = NPStatPool(channels, 4)
    out = pool(batch.x, batch.edge_attr, batch)
    assert out.shape == (4, pool.out_channels) == (4, 2 * 4 * channels * NUM_STATS)
    for (sub, x, e, _, _), ids in zip(split_by_architecture(batch, batch.x, batch.edge_attr),
                                      _by_layout(batch)):
        dense = pool.forward_dense(WeightSpace.from_features(sub, x, e))
        torch.testing.assert_close(out[ids], dense, atol=atol, rtol=0)


def test_entries_are_layer_statistics():
    batch = feature_batch([mlp([3, 4, 2]).double(), mlp([2, 5, 3, 1]).double()], channels=2)
    quantiles = (0.1, 0.5, 0.9)
    out = NPStatPool(2, 3, quantiles)(batch.x, batch.edge_attr, batch).view(2, 2, 3, 2, 5)
    q = torch.tensor(quantiles, dtype=torch.float64)
    eptr = edge_ptr(batch)
    for b in range(2):
        nodes = slice(batch.ptr[b], batch.ptr[b + 1])
        edges = slice(eptr[b], eptr[b + 1])
        layers = int(batch.edge_layer[edges].max())
        for l in range(1, 4):
            if l > layers:
                assert torch.all(out[b, :, l - 1] == 0)
                continue
            for kind, values in ((0, batch.edge_attr[edges][batch.edge_layer[edges] == l]),
                                 (1, batch.x[nodes][batch.node_layer[nodes] == l])):
                expected = torch.cat([values.mean(0, keepdim=True),
                                      values.var(0, unbiased=False, keepdim=True),
                                      torch.quantile(values, q, dim=0)]).t()   # [C, 5]
                torch.testing.assert_close(out[b, kind, l - 1], expected)


def test_each_statistic_is_computed_from_the_layer_values():
    """The gradient of each statistic of one layer and channel is the one that
    statistic has: 1/n for the mean, 2 (h - mean) / n for the variance, one-hot
    at the smallest / largest value for the 0 / 1 quantiles, zero off the layer."""
    batch = feature_batch([mlp([3, 6, 4, 2]).double()], channels=2)
    edge_attr = batch.edge_attr.clone().requires_grad_(True)
    out = NPStatPool(2, 3)(batch.x, edge_attr, batch).view(2, 3, 2, NUM_STATS)
    layer, channel = 2, 1
    in_layer = batch.edge_layer == layer
    values = batch.edge_attr[in_layer, channel]
    n = values.numel()
    expected = {0: torch.full_like(values, 1 / n),
                1: 2 * (values - values.mean()) / n,
                2: torch.nn.functional.one_hot(values.argmin(), n).double(),
                6: torch.nn.functional.one_hot(values.argmax(), n).double()}
    for stat, want in expected.items():
        grad, = torch.autograd.grad(out[0, layer - 1, channel, stat], edge_attr,
                                    retain_graph=True)
        torch.testing.assert_close(grad[in_layer, channel], want)
        assert torch.all(grad[~in_layer] == 0) and torch.all(grad[:, 1 - channel] == 0)
    # the median moves with the middle values only
    grad, = torch.autograd.grad(out[0, layer - 1, channel, 4], edge_attr)
    assert 1 <= int((grad[in_layer, channel] != 0).sum()) <= 2


def test_statistics_tell_apart_what_the_mean_pool_cannot():
    batch = feature_batch([mlp([3, 6, 4, 2]).double()], channels=1)
    pool = NPStatPool(1, 3)
    spread = batch.edge_attr.clone()
    layer = batch.edge_layer == 2
    spread[layer] = spread[layer].mean() + 3 * (spread[layer] - spread[layer].mean())
    out, wider = (pool(batch.x, e, batch).view(2, 3, NUM_STATS) for e in (batch.edge_attr, spread))
    torch.testing.assert_close(wider[0, 1, 0], out[0, 1, 0])           # same mean
    assert torch.allclose(wider[0, 1, 1], 9 * out[0, 1, 1])             # 9x the variance
    assert not torch.allclose(wider[0, 1, 2:], out[0, 1, 2:])           # other quantiles
    torch.testing.assert_close(wider[0, [0, 2]], out[0, [0, 2]])        # other layers alike


def test_ignores_input_node_features():
    batch = feature_batch([mlp([3, 4, 2]).double()], channels=2)
    pool = NPStatPool(2, 2)
    x = batch.x.clone()
    x[batch.node_role == int(NodeRole.INPUT)] = 7.0
    torch.testing.assert_close(pool(x, batch.edge_attr, batch),
                               pool(batch.x, batch.edge_attr, batch))


def test_invariant_to_all_neuron_permutations():
    batch = feature_batch([mlp([4, 5, 3, 2]).double(), cnn([3, 4, 2], [3, 3]).double()],
                          channels=2)
    pool = NPStatPool(batch.x.size(1), 3)
    node_map, edge_map = random_neuron_permutation(batch, ALL_ROLES,
                                                   torch.Generator().manual_seed(4))
    out = pool(batch.x, batch.edge_attr, batch)
    torch.testing.assert_close(pool(batch.x[node_map], batch.edge_attr[edge_map], batch), out,
                               atol=1e-12, rtol=0)
    assert not torch.allclose(pool(batch.x, batch.edge_attr.flip(0), batch), out)


def test_nfn_with_stats_pool():
    modules = mlps()
    layout = structure_batch(modules[:1]).layout[0]
    model = NFN.for_layout(layout, "np", 6, 3, head_hidden=16, pool="stats").double().eval()
    assert isinstance(model.pool, NPStatPool) and "pool='stats'" in repr(model)
    moved, _ = permuted_modules(modules, ALL_ROLES)
    torch.testing.assert_close(model(structure_batch(moved)), model(structure_batch(modules)),
                               atol=1e-10, rtol=0)
    cnn_model = NFN.for_layout(structure_batch(cnns()[:1]).layout[0], "pt", 4, 2,
                               pool="stats").double()
    assert cnn_model(structure_batch(cnns())).shape == (2, 2)
    with pytest.raises(ValueError, match="NFN: pool must be one of"):
        NFN("np", 3, 4, 1, pool="max")
    with pytest.raises(ValueError, match="NFN: pool='stats' is for modes 'np' and 'pt'"):
        NFN("hnp", 3, 4, 1, num_inputs=3, num_outputs=2, pool="stats")


def test_errors_and_repr():
    batch = feature_batch([mlp([3, 4, 4, 2]).double()], channels=2)
    with pytest.raises(ValueError, match=r"NPStatPool: the graph has 3 weight layers .*=2"):
        NPStatPool(2, 2)(batch.x, batch.edge_attr, batch)
    with pytest.raises(ValueError, match=r"NPStatPool: expected x with 4 channels"):
        NPStatPool(4, 3)(batch.x, batch.edge_attr, batch)
    broken = copy.copy(batch)
    del broken.node_role
    with pytest.raises(ValueError, match=r"NPStatPool: the graph has no node_role"):
        NPStatPool(2, 3)(batch.x, batch.edge_attr, broken)
    with pytest.raises(ValueError, match=r"NPStatPool.forward_dense: the weight space has 3"):
        NPStatPool(2, 2).forward_dense(WeightSpace.from_features(batch, batch.x,
                                                                 batch.edge_attr))
    with pytest.raises(ValueError, match=r"NPStatPool: quantiles must lie in \[0, 1\]"):
        NPStatPool(2, 3, quantiles=(0.5, 1.5))
    with pytest.raises(ValueError, match="NPStatPool: channels and num_layers"):
        NPStatPool(0, 3)
    assert repr(NPStatPool(2, 3)) == "NPStatPool(2, num_layers=3)"
    assert repr(NPStatPool(2, 3, (0.5,))) == "NPStatPool(2, num_layers=3, quantiles=(0.5,))"
    assert NPStatPool(2, 3).out_channels == 2 * 3 * 2 * NUM_STATS
