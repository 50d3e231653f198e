"""NPPool and NPStatPool: graph == dense twin, invariance, errors (both pools); the
layout of NPPool's output. NPStatPool's own tests are in test_np_stat_pool.py."""
import copy

import pytest
import torch
from helpers import (
    cnn,
    feature_batch,
    layer_values,
    mlp,
    random_neuron_permutation,
    split_by_architecture,
)

from nft_pyg.graph.types import NodeRole
from nft_pyg.nn.pool.np_pool import NPPool
from nft_pyg.nn.pool.np_stat_pool import NPStatPool
from nft_pyg.tensor.weight_space import WeightSpace

torch.set_num_threads(1)
ALL_ROLES = (NodeRole.INPUT, NodeRole.HIDDEN, NodeRole.OUTPUT)


POOLS = [NPPool, NPStatPool]


@pytest.mark.parametrize("pool_cls", POOLS)
@pytest.mark.parametrize("dtype,atol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_matches_dense_on_mixed_batch(pool_cls, dtype, atol):
    modules = [mlp([3, 4, 2]), cnn([2, 3, 2], [3, 1], head=3, pooled=2), mlp([3, 2, 2, 5, 2]),
               mlp([3, 4, 2])]
    batch = feature_batch([m.to(dtype) for m in modules], channels=2, dtype=dtype)
    channels = batch.x.size(1)
    pool = pool_cls(channels, 4)
    out = pool(batch.x, batch.edge_attr, batch)
    stats = 1 if pool_cls is NPPool else pool.num_statistics
    assert out.shape == (4, pool.out_channels) == (4, 2 * 4 * channels * stats)
    graph_ids = {layout: [] for layout in batch.layout}
    for i, layout in enumerate(batch.layout):
        graph_ids[layout].append(i)
    for (sub, x, e, _, _), ids in zip(split_by_architecture(batch, batch.x, batch.edge_attr),
                                      graph_ids.values()):
        dense = pool.forward_dense(WeightSpace.from_features(sub, x, e))
        torch.testing.assert_close(out[ids], dense, atol=atol, rtol=0)


def test_entries_are_layer_means():
    batch = feature_batch([mlp([3, 4, 2]).double(), mlp([2, 5, 3, 1]).double()], channels=2)
    out = NPPool(2, 3)(batch.x, batch.edge_attr, batch).view(2, 2, 3, 2)  # [B, kind, L, C]
    for b, l, edge_values, node_values in layer_values(batch, 3):
        if edge_values is None:
            assert torch.all(out[b, :, l - 1] == 0)
            continue
        torch.testing.assert_close(out[b, 0, l - 1], edge_values.mean(0))
        torch.testing.assert_close(out[b, 1, l - 1], node_values.mean(0))


@pytest.mark.parametrize("pool_cls", POOLS)
def test_ignores_input_node_features(pool_cls):
    batch = feature_batch([mlp([3, 4, 2]).double()], channels=2)
    pool = pool_cls(2, 2)
    x = batch.x.clone()
    x[batch.node_role == int(NodeRole.INPUT)] = 7.0
    torch.testing.assert_close(pool(x, batch.edge_attr, batch),
                               pool(batch.x, batch.edge_attr, batch))


@pytest.mark.parametrize("pool_cls", POOLS)
def test_invariant_to_all_neuron_permutations(pool_cls):
    batch = feature_batch([mlp([4, 5, 3, 2]).double(), cnn([3, 4, 2], [3, 3]).double()],
                          channels=2)
    pool = pool_cls(batch.x.size(1), 3)
    node_map, edge_map = random_neuron_permutation(batch, ALL_ROLES,
                                                   torch.Generator().manual_seed(4))
    out = pool(batch.x, batch.edge_attr, batch)
    torch.testing.assert_close(pool(batch.x[node_map], batch.edge_attr[edge_map], batch), out,
                               atol=1e-12, rtol=0)
    # but not to moving features between layers
    assert not torch.allclose(pool(batch.x, batch.edge_attr.flip(0), batch), out)


@pytest.mark.parametrize("pool_cls", POOLS)
def test_errors_name_the_pool(pool_cls):
    name = pool_cls.__name__
    batch = feature_batch([mlp([3, 4, 4, 2]).double()], channels=2)
    with pytest.raises(ValueError, match=fr"{name}: the graph has 3 weight layers .*=2"):
        pool_cls(2, 2)(batch.x, batch.edge_attr, batch)
    with pytest.raises(ValueError, match=fr"{name}: expected x with 4 channels"):
        pool_cls(4, 3)(batch.x, batch.edge_attr, batch)
    broken = copy.copy(batch)
    del broken.node_role
    with pytest.raises(ValueError, match=fr"{name}: the graph has no node_role"):
        pool_cls(2, 3)(batch.x, batch.edge_attr, broken)
    with pytest.raises(ValueError, match=fr"{name}.forward_dense: the weight space has 3"):
        pool_cls(2, 2).forward_dense(WeightSpace.from_features(batch, batch.x,
                                                               batch.edge_attr))
    with pytest.raises(ValueError, match=fr"{name}: channels and num_layers"):
        pool_cls(0, 3)


def test_repr():
    assert repr(NPPool(2, 3)) == "NPPool(2, num_layers=3)"
    assert NPPool(2, 3).out_channels == 12
