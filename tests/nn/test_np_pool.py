"""NPPool: graph == dense twin, layout of the output, invariance, errors."""
import copy

import pytest
import torch

from nft_pyg.graph.types import NodeRole
from nft_pyg.nn.pool.np_pool import NPPool
from nft_pyg.tensor.weight_space import WeightSpace

from helpers import (cnn, edge_ptr, feature_batch, mlp, random_neuron_permutation,
                     split_by_architecture)

torch.set_num_threads(1)
ALL_ROLES = (NodeRole.INPUT, NodeRole.HIDDEN, NodeRole.OUTPUT)


@pytest.mark.parametrize("dtype,atol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_matches_dense_on_mixed_batch(dtype, atol):
    modules = [mlp([3, 4, 2]), cnn([2, 3, 2], [3, 1], head=3, pooled=2), mlp([3, 2, 2, 5, 2]),
               mlp([3, 4, 2])]
    batch = feature_batch([m.to(dtype) for m in modules], channels=2, dtype=dtype)
    channels = batch.x.size(1)
    pool = NPPool(channels, 4)
    out = pool(batch.x, batch.edge_attr, batch)
    assert out.shape == (4, 2 * 4 * channels)
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
    eptr = edge_ptr(batch)
    for b in range(2):
        nodes = slice(batch.ptr[b], batch.ptr[b + 1])
        edges = slice(eptr[b], eptr[b + 1])
        layers = int(batch.edge_layer[edges].max())
        for l in range(1, 4):
            edge_mask = batch.edge_layer[edges] == l
            node_mask = batch.node_layer[nodes] == l
            if l > layers:
                assert torch.all(out[b, :, l - 1] == 0)
                continue
            torch.testing.assert_close(out[b, 0, l - 1], batch.edge_attr[edges][edge_mask].mean(0))
            torch.testing.assert_close(out[b, 1, l - 1], batch.x[nodes][node_mask].mean(0))


def test_ignores_input_node_features():
    batch = feature_batch([mlp([3, 4, 2]).double()], channels=2)
    pool = NPPool(2, 2)
    x = batch.x.clone()
    x[batch.node_role == int(NodeRole.INPUT)] = 7.0
    torch.testing.assert_close(pool(x, batch.edge_attr, batch),
                               pool(batch.x, batch.edge_attr, batch))


def test_invariant_to_all_neuron_permutations():
    batch = feature_batch([mlp([4, 5, 3, 2]).double(), cnn([3, 4, 2], [3, 3]).double()],
                          channels=2)
    pool = NPPool(batch.x.size(1), 3)
    node_map, edge_map = random_neuron_permutation(batch, ALL_ROLES,
                                                   torch.Generator().manual_seed(4))
    out = pool(batch.x, batch.edge_attr, batch)
    torch.testing.assert_close(pool(batch.x[node_map], batch.edge_attr[edge_map], batch), out,
                               atol=1e-12, rtol=0)
    # but not to moving features between layers
    assert not torch.allclose(pool(batch.x, batch.edge_attr.flip(0), batch), out)


def test_errors_and_repr():
    batch = feature_batch([mlp([3, 4, 4, 2]).double()], channels=2)
    with pytest.raises(ValueError, match=r"NPPool: the graph has 3 weight layers .*=2"):
        NPPool(2, 2)(batch.x, batch.edge_attr, batch)
    with pytest.raises(ValueError, match=r"NPPool: expected x with 4 channels"):
        NPPool(4, 3)(batch.x, batch.edge_attr, batch)
    broken = copy.copy(batch)
    del broken.node_role
    with pytest.raises(ValueError, match=r"NPPool: the graph has no node_role"):
        NPPool(2, 3)(batch.x, batch.edge_attr, broken)
    with pytest.raises(ValueError, match=r"NPPool.forward_dense: the weight space has 3"):
        NPPool(2, 2).forward_dense(WeightSpace.from_features(batch, batch.x, batch.edge_attr))
    assert repr(NPPool(2, 3)) == "NPPool(2, num_layers=3)"
    assert NPPool(2, 3).out_channels == 12
