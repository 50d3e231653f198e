"""NFTBlock (graph == dense twin, equivariance, every part used, pure forward,
errors) and LatentCrossAttention (per-graph reference, softmax per graph,
invariance)."""
import math
import pickle

import pytest
import torch
from helpers import (
    assert_matches_dense,
    cnn,
    feature_batch,
    mlp,
    random_neuron_permutation,
)
from torch_geometric.data import Batch
from torch_geometric.utils import scatter

from nft_pyg import WeightSpace
from nft_pyg.graph.types import NodeRole
from nft_pyg.nn.nft_block import LatentCrossAttention, NFTBlock
from nft_pyg.nn.structure import WeightGraphIndex

torch.set_num_threads(1)


def make_block(channels=8, heads=2, dtype=torch.float64, **kwargs):
    return NFTBlock(channels, heads=heads, **kwargs).to(dtype).eval()


def run(block, batch, x=None, edge_attr=None):
    x = batch.x if x is None else x
    edge_attr = batch.edge_attr if edge_attr is None else edge_attr
    return block(x, batch.edge_index, edge_attr, WeightGraphIndex.from_data(batch))


def randomize_norms(block):
    """Non-trivial affine parameters, so the norms' terms are exercised too."""
    with torch.no_grad():
        for norm in (block.attn_norm, block.ff_norm):
            norm.weight.normal_()
            norm.bias.normal_()


@pytest.mark.parametrize("sizes", [[3, 2], [2, 5, 3], [3, 4, 5, 2], [2, 3, 4, 3, 2]])
@pytest.mark.parametrize("batch_size", [1, 3])
def test_graph_matches_dense_mlp(sizes, batch_size):
    batch = feature_batch([mlp(sizes) for _ in range(batch_size)], channels=8,
                          seed=batch_size)
    block = make_block(8, heads=2, ff_channels=12)
    randomize_norms(block)
    x_out, edge_out = assert_matches_dense(block, batch)
    assert x_out[batch.node_role == int(NodeRole.INPUT)].abs().max() == 0
    assert not torch.allclose(edge_out, batch.edge_attr)


def test_graph_matches_dense_mixed_batch_with_cnns():
    """MLPs of two depths and CNNs of two kernel sizes in one batch (kernel
    positions folded into channels: 2 channels x 9 positions)."""
    modules = [mlp([2, 5, 3]), cnn([2, 3, 4], [3, 1]), mlp([2, 4, 3, 6, 2]),
               cnn([2, 4, 3], [3, 3], head=2, pooled=1), mlp([2, 5, 3])]
    batch = feature_batch(modules, channels=2)
    block = make_block(18, heads=3)
    randomize_norms(block)
    assert_matches_dense(block, batch)


def test_float32_matches_dense():
    batch = feature_batch([mlp([3, 6, 5, 2]) for _ in range(2)], channels=8,
                          dtype=torch.float32)
    assert_matches_dense(make_block(8, heads=4, dtype=torch.float32), batch, atol=1e-5)


@pytest.mark.parametrize("roles", [(NodeRole.HIDDEN,),
                                   (NodeRole.INPUT, NodeRole.HIDDEN, NodeRole.OUTPUT)])
def test_equivariance(roles):
    """NFT attention shares its maps over all neurons, so the block commutes
    with any relabelling of any layer (IO encodings are what break that)."""
    batch = feature_batch([mlp([3, 5, 4, 2]), cnn([2, 3, 4], [3, 3])], channels=2)
    block = make_block(18, heads=3)
    randomize_norms(block)
    x_out, edge_out = run(block, batch)
    node_map, edge_map = random_neuron_permutation(batch, roles)
    assert not torch.equal(node_map, torch.arange(node_map.numel()))
    x_perm, edge_perm = run(block, batch, batch.x[node_map], batch.edge_attr[edge_map])
    torch.testing.assert_close(x_perm, x_out[node_map], atol=1e-12, rtol=0)
    torch.testing.assert_close(edge_perm, edge_out[edge_map], atol=1e-12, rtol=0)


def test_zero_branches_give_identity():
    """With the attention output map and the last feed-forward map zeroed, the
    block is the identity: both branches are residual."""
    batch = feature_batch([mlp([3, 5, 2])], channels=8)
    block = make_block(8)
    with torch.no_grad():
        for linear in (block.attn.out, block.ff[2].lin):
            linear.weight.zero_()
            linear.bias.zero_()
    x_out, edge_out = run(block, batch)
    torch.testing.assert_close(x_out, batch.x, atol=0, rtol=0)
    torch.testing.assert_close(edge_out, batch.edge_attr, atol=0, rtol=0)


@pytest.mark.parametrize("part", ["attn_norm", "attn", "ff_norm", "ff"])
def test_every_part_is_used(part):
    batch = feature_batch([mlp([3, 5, 4, 2]) for _ in range(2)], channels=8)
    block = make_block(8)
    x_ref, edge_ref = run(block, batch)
    with torch.no_grad():
        for param in getattr(block, part).parameters():
            param.add_(torch.randn_like(param))
    x_out, edge_out = run(block, batch)
    assert not torch.allclose(edge_out, edge_ref, atol=1e-6)
    assert not torch.allclose(x_out, x_ref, atol=1e-6)


def test_forward_writes_nothing_onto_the_batch():
    batch = feature_batch([mlp([3, 5, 4, 2]) for _ in range(2)], channels=8)
    before = pickle.dumps(batch)
    block = make_block(8)
    block(batch.x, batch.edge_index, batch.edge_attr, batch)
    run(block, batch)
    assert pickle.dumps(batch) == before


def test_dropout_only_in_training():
    batch = feature_batch([mlp([3, 5, 2])], channels=8)
    block = make_block(8, dropout=0.5)
    eval_out = run(block, batch)[1]
    assert torch.equal(eval_out, run(block, batch)[1])
    block.train()
    assert not torch.allclose(run(block, batch)[1], eval_out)


def test_errors():
    batch = feature_batch([mlp([3, 5, 4, 2])], channels=8)
    with pytest.raises(ValueError, match="NFTBlock.*channels"):
        run(make_block(4, heads=2), batch)
    with pytest.raises(ValueError, match="NFTAttention.*num_layers=2"):
        run(make_block(8, num_layers=2), batch)
    with pytest.raises(TypeError, match=r"NFTBlock.*edge_index \[2, E\]"):
        make_block(8)(batch.x, batch.edge_attr, batch)
    with pytest.raises(ValueError, match="NFTAttention.*heads"):
        NFTBlock(8, heads=3)
    with pytest.raises(ValueError, match="NFTBlock.*channels"):
        make_block(8).forward_dense(
            WeightSpace.from_features(batch, batch.x[:, :4], batch.edge_attr[:, :4]))


# --- LatentCrossAttention ------------------------------------------------------
def reference_latents(pool, graph):
    """Per graph, with plain softmax over its token list (a loop, no scatter)."""
    results = []
    for b in range(graph.num_graphs):
        single = graph.get_example(b)
        tokens = torch.cat([single.edge_attr,
                            single.x[single.node_role != int(NodeRole.INPUT)]])
        tokens = pool.token_norm(tokens)
        heads, dim = pool.heads, pool.head_channels
        q = pool.query(pool.queries).view(-1, heads, dim).transpose(0, 1)     # [H, M, d]
        k = pool.key(tokens).view(-1, heads, dim).transpose(0, 1)             # [H, T, d]
        v = pool.value(tokens).view(-1, heads, dim).transpose(0, 1)
        alpha = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(dim), dim=-1)  # [H, M, T]
        out = (alpha @ v).transpose(0, 1).reshape(pool.num_latents, -1)
        latents = pool.queries + pool.out(out)
        results.append(latents + pool.ff(latents))
    return torch.stack(results)


def test_latent_pool_matches_per_graph_reference():
    batch = feature_batch([mlp([3, 5, 4, 2]), mlp([2, 6, 3]), mlp([3, 5, 4, 2])], channels=8)
    pool = LatentCrossAttention(8, num_latents=5, heads=2).double()
    latents, (token_graph, alpha) = pool(batch.x, batch.edge_attr, batch,
                                         return_attention_weights=True)
    assert latents.shape == (3, 5, 8)
    torch.testing.assert_close(latents, reference_latents(pool, batch), atol=1e-10, rtol=0)
    sums = scatter(alpha, token_graph, 0, reduce="sum")                       # [B, M, H]
    torch.testing.assert_close(sums, torch.ones_like(sums), atol=1e-12, rtol=0)


def test_latent_pool_is_invariant_and_ignores_input_nodes():
    batch = feature_batch([mlp([3, 5, 4, 2]), cnn([2, 3, 4], [3, 3])], channels=2)
    pool = LatentCrossAttention(18, num_latents=3, heads=3).double()
    latents = pool(batch.x, batch.edge_attr, batch)
    node_map, edge_map = random_neuron_permutation(
        batch, (NodeRole.INPUT, NodeRole.HIDDEN, NodeRole.OUTPUT))
    permuted = pool(batch.x[node_map], batch.edge_attr[edge_map], batch)
    torch.testing.assert_close(permuted, latents, atol=1e-12, rtol=0)
    x = batch.x.clone()
    x[batch.node_role == int(NodeRole.INPUT)] = 5.0
    torch.testing.assert_close(pool(x, batch.edge_attr, batch), latents, atol=0, rtol=0)
    x = batch.x.clone()
    outputs = batch.node_role == int(NodeRole.OUTPUT)
    x[outputs] += torch.randn_like(x[outputs])                               # biases count
    assert not torch.allclose(pool(x, batch.edge_attr, batch), latents)


def test_latent_pool_errors():
    with pytest.raises(ValueError, match="LatentCrossAttention"):
        LatentCrossAttention(8, num_latents=2, heads=3)
    batch = feature_batch([mlp([3, 5, 2])], channels=4)
    with pytest.raises(ValueError, match="LatentCrossAttention.*channels"):
        LatentCrossAttention(8, 2).double()(batch.x, batch.edge_attr, batch)


def test_latent_pool_single_graph_without_batch_vector():
    graph = feature_batch([mlp([3, 5, 2])], channels=4).get_example(0)
    pool = LatentCrossAttention(4, 2).double()
    batched = Batch.from_data_list([graph])
    torch.testing.assert_close(pool(graph.x, graph.edge_attr, graph),
                               pool(batched.x, batched.edge_attr, batched), atol=0, rtol=0)


def test_block_and_latent_pool_trace_without_graph_breaks(device):
    """Once the index (and its parts) exist, neither forward breaks the graph."""
    batch = feature_batch([mlp([3, 5, 4, 2]) for _ in range(2)], channels=8,
                          dtype=torch.float32).to(device)
    index = WeightGraphIndex.from_data(batch)
    block = NFTBlock(8, heads=2).to(device).eval()
    pool = LatentCrossAttention(8, num_latents=3, heads=2).to(device).eval()
    calls = {block: (batch.x, batch.edge_index, batch.edge_attr, index),
             pool: (batch.x, batch.edge_attr, index)}
    for module, args in calls.items():
        eager = module(*args)   # builds the index parts
        torch._dynamo.reset()
        explanation = torch._dynamo.explain(module)(*args)
        assert explanation.graph_break_count == 0, explanation.break_reasons
        compiled = torch.compile(module)(*args)
        for a, b in zip(*((out,) if isinstance(out, torch.Tensor) else out
                          for out in (compiled, eager))):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
