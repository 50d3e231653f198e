"""NPStatPool: the entries are each layer's statistics, each statistic is
computed from the layer's values, NFN(pool="stats"), its quantile argument.
What it shares with NPPool (graph == dense twin, invariance, errors) is tested
for both in test_np_pool.py."""
import pytest
import torch
from helpers import (
    ALL_ROLES,
    cnns,
    feature_batch,
    layer_values,
    mlp,
    mlps,
    permuted_modules,
    structure_batch,
)

from nft_pyg.nn.models.nfn import NFN
from nft_pyg.nn.pool.np_stat_pool import NPStatPool
from nft_pyg.nn.statistics import STAT_QUANTILES, layer_statistics

torch.set_num_threads(1)
NUM_STATS = 2 + len(STAT_QUANTILES)


def test_entries_are_layer_statistics():
    batch = feature_batch([mlp([3, 4, 2]).double(), mlp([2, 5, 3, 1]).double()], channels=2)
    quantiles = (0.1, 0.5, 0.9)
    out = NPStatPool(2, 3, quantiles)(batch.x, batch.edge_attr, batch).view(2, 2, 3, 2, 5)
    q = torch.tensor(quantiles, dtype=torch.float64)
    for b, l, edge_values, node_values in layer_values(batch, 3):
        if edge_values is None:
            assert torch.all(out[b, :, l - 1] == 0)
            continue
        for kind, values in ((0, edge_values), (1, node_values)):
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


def test_quantile_argument_and_repr():
    with pytest.raises(ValueError, match=r"NPStatPool: quantiles must lie in \[0, 1\]"):
        NPStatPool(2, 3, quantiles=(0.5, 1.5))
    assert repr(NPStatPool(2, 3)) == "NPStatPool(2, num_layers=3)"
    assert repr(NPStatPool(2, 3, (0.5,))) == "NPStatPool(2, num_layers=3, quantiles=(0.5,))"
    assert NPStatPool(2, 3).out_channels == 2 * 3 * 2 * NUM_STATS
    assert NPStatPool(2, 3, (0.5,)).out_channels == 2 * 3 * 2 * 3


def test_nfn_append_stats_reads_the_raw_layer_statistics():
    """``append_stats`` feeds StatNN's statistics of the raw weights to the
    head beside the pooled features: invariant like the rest, and the head
    sees them (a network with the same NF features but other weight
    statistics would be told apart only through them)."""
    modules = mlps()
    batch = structure_batch(modules)
    model = NFN.for_layout(batch.layout[0], "np", 6, 3, head_hidden=16,
                           append_stats=True).double().eval()
    assert "append_stats=True" in repr(model)
    first = model.head[0]
    stats = layer_statistics(batch, 3).flatten(1).size(1)
    assert first.in_features == model.pool.out_channels + stats
    moved, _ = permuted_modules(modules, ALL_ROLES)
    torch.testing.assert_close(model(structure_batch(moved)), model(batch), atol=1e-10, rtol=0)
    # the appended columns are used: zeroing their head weights changes the output
    out = model(batch)
    with torch.no_grad():
        first.weight[:, model.pool.out_channels:] = 0
    assert not torch.allclose(model(batch), out)
