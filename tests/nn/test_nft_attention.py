import pytest
import torch
from helpers import (
    cnn,
    drop_edges,
    feature_batch,
    folded_raw_features,
    mlp,
    permute_module_by_hand,
    permuted_graph,
    role_permutation,
    split_graphs,
)
from torch_geometric.data import Batch
from torch_geometric.utils import scatter, softmax

import nft_pyg
from nft_pyg import WeightSpace
from nft_pyg.nn.conv import nft_attention as nft_attention_module
from nft_pyg.nn.conv._nft_blocks import UniformLayout
from nft_pyg.nn.conv._nft_paths import SegmentSoftmax, padded_count
from nft_pyg.nn.conv.nft_attention import CrossPaths, NFTAttention
from nft_pyg.symmetry import permute
from nft_pyg.tensor.nft_dense import nft_attention_dense

torch.set_num_threads(1)

MLP_SIZES = {1: [3, 2], 2: [2, 5, 3], 3: [3, 4, 5, 2], 4: [2, 3, 4, 3, 2]}


def cnn64():
    """Conv 3x3 -> Conv 2x2 -> pool -> Flatten (4 positions) -> Linear, float64."""
    return cnn([2, 3, 4], [3, 2], head=3, pooled=2, padding=[1, 0]).double()


def features(modules, channels, dtype=torch.float64):
    """``(batch, x, edge_attr)``: the modules' graphs with random ``[N, C]`` /
    ``[E, C]`` features (input nodes too) from torch's global generator."""
    batch = feature_batch(modules, channels, dtype, seed=None, folded=False)
    return batch, batch.x, batch.edge_attr


def make_attention(channels=8, heads=1, dtype=torch.float64, **kwargs):
    return NFTAttention(channels, heads=heads, **kwargs).to(dtype).eval()


def assert_matches_dense(attn, graph, x, edge_attr, atol=1e-10):
    """Graph path on ``graph`` (one architecture) equals the dense twin."""
    x_out, edge_out = attn(x, edge_attr, graph)
    assert x_out.shape == x.shape and edge_out.shape == edge_attr.shape
    assert x_out[graph.node_layer == 0].abs().max() == 0
    expected = attn.forward_dense(WeightSpace.from_features(graph, x, edge_attr))
    got = WeightSpace.from_features(graph, x_out, edge_out)
    for a, b in zip(got.weights + got.biases, expected.weights + expected.biases):
        torch.testing.assert_close(a, b, atol=atol, rtol=0)


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
@pytest.mark.parametrize("heads", [1, 4])
@pytest.mark.parametrize("batch_size", [1, 3])
@pytest.mark.parametrize("dense_blocks", [True, False])
def test_graph_matches_dense_mlp(depth, heads, batch_size, dense_blocks):
    modules = [mlp(MLP_SIZES[depth]).double() for _ in range(batch_size)]
    graph, x, edge_attr = features(modules, channels=8)
    attn = make_attention(8, heads, dense_blocks=dense_blocks)
    assert_matches_dense(attn, graph, x, edge_attr)


def test_graph_matches_dense_cnn_folded_kernels():
    graph = Batch.from_data_list([nft_pyg.from_module(cnn64()) for _ in range(2)])
    x, edge_attr = folded_raw_features(graph)  # 9 kernel positions as channels
    dense_input = WeightSpace.from_graph(graph).fold_kernels(9)
    assert dense_input.allclose(WeightSpace.from_features(graph, x, edge_attr), atol=0)
    assert_matches_dense(make_attention(9, heads=3), graph, x, edge_attr)


def test_float32_matches_dense():
    modules = [mlp([3, 6, 5, 2]).double() for _ in range(2)]
    graph, x, edge_attr = features(modules, channels=8, dtype=torch.float32)
    assert_matches_dense(make_attention(8, 2, dtype=torch.float32), graph, x, edge_attr,
                         atol=1e-5)


@pytest.mark.parametrize("dense_blocks", [True, False])
def test_mixed_architecture_batch(dense_blocks):
    modules = [mlp([2, 5, 3]).double(), mlp([3, 4, 5, 2]).double(), cnn64(),
               mlp([2, 3, 3]).double()]
    graph, x, edge_attr = features(modules, channels=8)
    attn = make_attention(8, heads=2, dense_blocks=dense_blocks)
    x_out, edge_out = attn(x, edge_attr, graph)
    for (single, x_b, edge_b), (_, x_out_b, edge_out_b) in zip(
            split_graphs(graph, x, edge_attr), split_graphs(graph, x_out, edge_out)):
        expected = attn.forward_dense(WeightSpace.from_features(single, x_b, edge_b))
        got = WeightSpace.from_features(single, x_out_b, edge_out_b)
        assert got.allclose(expected, atol=1e-10, rtol=0)


def test_attention_weights_sum_to_one_and_match_dense():
    modules = [mlp([2, 4, 3, 2]).double() for _ in range(2)]
    graph, x, edge_attr = features(modules, channels=8)
    attn = make_attention(8, heads=4)
    _, _, (token_index, alpha) = attn(x, edge_attr, graph, return_attention_weights=True)
    assert alpha.shape == (token_index.size(1), 4)
    sums = scatter(alpha, token_index[0], 0, reduce="sum")
    torch.testing.assert_close(sums, torch.ones_like(sums), atol=1e-12, rtol=0)
    # dense network: pairs are the row-major [T_i, T_i] blocks, graph by graph, layer by layer
    _, dense_alpha = nft_attention_dense(attn, WeightSpace.from_features(graph, x, edge_attr),
                                         return_attention_weights=True)
    blocks = [a[b].permute(1, 2, 0).reshape(-1, 4) for b in range(2) for a in dense_alpha]
    torch.testing.assert_close(alpha, torch.cat(blocks), atol=1e-12, rtol=0)
    sizes = [2, 4, 3, 2]  # T_i = n_{i-1} + 1 + n_{i+1}, no bias / column tokens at i = 0
    tokens = [sizes[1]] + [sizes[i - 1] + 1 + (sizes[i + 1] if i + 1 < 4 else 0)
                           for i in range(1, 4)]
    assert token_index.size(1) == 2 * sum(t * t for t in tokens)


def test_attention_weights_sum_to_one_on_pruned_graph():
    graph, x, edge_attr = features([mlp([3, 5, 4, 2]).double()], channels=4)
    pruned, kept = drop_edges(graph, keep=0.5)
    attn = make_attention(4, heads=2)
    _, _, (token_index, alpha) = attn(x, edge_attr[kept], pruned,
                                      return_attention_weights=True)
    sums = scatter(alpha, token_index[0], 0, reduce="sum")
    present = torch.bincount(token_index[0], minlength=sums.size(0)) > 0
    torch.testing.assert_close(sums[present], torch.ones_like(sums[present]))


def test_helper_permutation_matches_permuted_module():
    module = mlp([3, 5, 4, 2]).double()
    graph = nft_pyg.from_module(module)
    permuted, node_map, edge_map, _ = permuted_graph(graph)
    sizes = [3, 5, 4, 2]
    starts = [0, 3, 8, 12]
    perms = [node_map[starts[i]:starts[i] + sizes[i]] - starts[i] for i in range(4)]
    assert not torch.equal(perms[1], torch.arange(5)) or not torch.equal(perms[2],
                                                                        torch.arange(4))
    expected = nft_pyg.from_module(permute_module_by_hand(module, perms))
    assert torch.equal(permuted.edge_index, expected.edge_index)
    assert torch.equal(permuted.x, expected.x)
    assert torch.equal(graph.edge_attr[edge_map], expected.edge_attr)


@pytest.mark.parametrize("prune", [False, True])
def test_equivariance_graph(prune):
    graph, x, edge_attr = features([mlp([3, 5, 4, 2]).double(), mlp([2, 4, 3]).double()],
                                        channels=8)
    if prune:
        graph, kept = drop_edges(graph, keep=0.6)
        edge_attr = edge_attr[kept]
    attn = make_attention(8, heads=2)
    x_out, edge_out = attn(x, edge_attr, graph)
    permuted, node_map, edge_map, _ = permuted_graph(graph)
    x_perm, edge_perm = attn(x[node_map], edge_attr[edge_map], permuted)
    torch.testing.assert_close(x_perm, x_out[node_map], atol=1e-12, rtol=0)
    torch.testing.assert_close(edge_perm, edge_out[edge_map], atol=1e-12, rtol=0)
    assert not torch.allclose(x_perm, x_out)  # the permutation really moved neurons


def test_equivariance_dense():
    graph, x, edge_attr = features([mlp([3, 5, 4, 2]).double()], channels=8)
    attn = make_attention(8, heads=2)
    ws = WeightSpace.from_features(graph, x, edge_attr)
    perm = role_permutation(graph.get_example(0))
    assert permute(attn.forward_dense(ws), perm).allclose(
        attn.forward_dense(permute(ws, perm)), atol=1e-12, rtol=0)
    assert not permute(ws, perm).allclose(ws)


def test_batch_mixing_pruned_and_dense_graphs():
    """A pruned graph (explicit paths) next to dense graphs (blocks) in one batch."""
    graphs = [features([mlp(sizes).double()], channels=4)[0].get_example(0)
              for sizes in ([3, 5, 4, 2], [3, 5, 4, 2], [2, 6, 2])]
    graphs[1], _ = drop_edges(graphs[1], keep=0.6)
    batch = Batch.from_data_list(graphs)
    attn = make_attention(4, heads=2)
    _, edge_out, (token_index, alpha) = attn(batch.x, batch.edge_attr, batch,
                                             return_attention_weights=True)
    for graph, (_, _, edge_b) in zip(graphs, split_graphs(batch, batch.x, edge_out)):
        alone = attn(graph.x, graph.edge_attr, graph)[1]
        torch.testing.assert_close(edge_b, alone, atol=1e-12, rtol=0)
    sums = scatter(alpha, token_index[0], 0, reduce="sum")
    present = torch.bincount(token_index[0], minlength=sums.size(0)) > 0
    torch.testing.assert_close(sums[present], torch.ones_like(sums[present]))
    for graph in (graphs[0], graphs[2]):
        assert_matches_dense(attn, graph, graph.x, graph.edge_attr)


def cross_paths(batch, attn):
    """The cross-term bookkeeping ``attn`` uses on ``batch`` (general path)."""
    return CrossPaths.of(batch, nft_pyg.nn.LayerStructure.of(batch), attn.dense_blocks,
                         attn.head_channels)


def test_masked_blocks_match_paths_on_pruned_graphs(monkeypatch):
    """Pruned groups: masked dense blocks (dense enough) == explicit paths."""
    # these small graphs have many paths per dense entry: a higher limit makes the
    # sparsest groups go neuron by neuron, the others stay masked blocks
    monkeypatch.setattr(nft_attention_module, "PATH_DENSITY_SCALE", 0.1)
    graphs = [features([mlp([3, 6, 5, 2]).double()], channels=4)[0].get_example(0)
              for _ in range(3)]
    graphs = [drop_edges(graph, keep)[0] for graph, keep in zip(graphs, (0.1, 0.5, 0.9))]
    batch = Batch.from_data_list(graphs)
    paths = make_attention(4, heads=2, dense_blocks=False)
    blocks = make_attention(4, heads=2)
    blocks.load_state_dict(paths.state_dict())
    got = blocks(batch.x, batch.edge_attr, batch, return_attention_weights=True)
    expected = paths(batch.x, batch.edge_attr, batch, return_attention_weights=True)
    for a, b in zip(got[:2], expected[:2]):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
    assert torch.equal(got[2][0], expected[2][0])
    torch.testing.assert_close(got[2][1], expected[2][1], atol=1e-12, rtol=0)
    cross = cross_paths(batch, blocks)
    assert cross.num_paths > 0 and any(b.masked for b in cross.blocks)


@pytest.mark.parametrize("dense_blocks", [True, False])
def test_pruned_graph_differs_from_zero_weights(dense_blocks):
    """Missing edges are absent entries, not zero vectors (documented choice)."""
    graph, x, edge_attr = features([mlp([3, 5, 4, 2]).double()], channels=4)
    pruned, kept = drop_edges(graph, keep=0.6)
    attn = make_attention(4, dense_blocks=dense_blocks)
    _, edge_pruned = attn(x, edge_attr[kept], pruned)
    _, edge_zeroed = attn(x, edge_attr * kept.unsqueeze(-1).double(), graph)
    assert not torch.allclose(edge_pruned, edge_zeroed[kept])


@pytest.mark.parametrize("flags", [{"cross_term": False}, {"global_term": False}])
def test_each_term_alone_matches_dense_and_matters(flags):
    graph, x, edge_attr = features([mlp([2, 5, 3, 2]).double() for _ in range(2)],
                                        channels=8)
    full = make_attention(8, heads=2)
    alone = make_attention(8, heads=2, **flags)
    alone.load_state_dict(full.state_dict())
    assert_matches_dense(alone, graph, x, edge_attr)
    x_full, edge_full = full(x, edge_attr, graph)
    x_alone, edge_alone = alone(x, edge_attr, graph)
    assert not torch.allclose(edge_full, edge_alone, atol=1e-6)
    assert not torch.allclose(x_full, x_alone, atol=1e-6)


def test_input_node_features_are_ignored():
    graph, x, edge_attr = features([mlp([3, 4, 2]).double()], channels=4)
    attn = make_attention(4)
    x_out, edge_out = attn(x, edge_attr, graph)
    changed = x.clone()
    changed[graph.node_layer == 0] += 5.0
    x_out2, edge_out2 = attn(changed, edge_attr, graph)
    assert torch.equal(x_out, x_out2) and torch.equal(edge_out, edge_out2)


def test_dropout_only_in_training():
    graph, x, edge_attr = features([mlp([3, 5, 2]).double()], channels=4)
    attn = make_attention(4, dropout=0.5)
    plain = make_attention(4)
    plain.load_state_dict(attn.state_dict())
    x_out, edge_out = attn(x, edge_attr, graph)
    x_plain, edge_plain = plain(x, edge_attr, graph)
    assert torch.equal(x_out, x_plain) and torch.equal(edge_out, edge_plain)
    attn.train()
    _, edge_train = attn(x, edge_attr, graph)
    assert not torch.allclose(edge_train, edge_plain)


def test_gradients_reach_every_projection():
    graph, x, edge_attr = features([mlp([3, 4, 2]).double()], channels=4)
    attn = make_attention(4, heads=2)
    x_out, edge_out = attn(x, edge_attr, graph)
    (x_out.pow(2).sum() + edge_out.pow(2).sum()).backward()
    for name, param in attn.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_gradcheck_blocks_and_paths(monkeypatch):
    monkeypatch.setattr(nft_attention_module, "PATH_DENSITY_SCALE", 0.2)
    graphs = [features([mlp([2, 3, 2]).double()], channels=2)[0].get_example(0)
              for _ in range(3)]
    graphs[1], _ = drop_edges(graphs[1], keep=0.1)  # sparse: neuron by neuron
    graphs[2], _ = drop_edges(graphs[2], keep=0.7)  # masked blocks
    batch = Batch.from_data_list(graphs)
    attn = make_attention(2, heads=2)
    x = batch.x.clone().requires_grad_()
    edge_attr = batch.edge_attr.clone().requires_grad_()
    cross = cross_paths(batch, attn)
    assert cross.num_paths > 0 and any(b.masked for b in cross.blocks)
    assert torch.autograd.gradcheck(lambda a, b: attn(a, b, batch), (x, edge_attr))


def test_bad_inputs():
    graph, x, edge_attr = features([mlp([3, 4, 5, 2]).double()], channels=4)
    with pytest.raises(ValueError, match="NFTAttention.*multiple of heads"):
        NFTAttention(6, heads=4)
    with pytest.raises(ValueError, match="NFTAttention.*global term, the cross term"):
        NFTAttention(4, global_term=False, cross_term=False)
    with pytest.raises(ValueError, match="NFTAttention.*at most 2 weight layers"):
        make_attention(4, num_layers=2)(x, edge_attr, graph)
    with pytest.raises(ValueError, match="NFTAttention.*at most 2 weight layers"):
        make_attention(4, num_layers=2).forward_dense(
            WeightSpace.from_features(graph, x, edge_attr))
    with pytest.raises(ValueError, match="NFTAttention.*built for 4 channels"):
        make_attention(4)(x[:, :3], edge_attr, graph)
    with pytest.raises(ValueError, match="NFTAttention.*rows"):
        make_attention(4)(x, edge_attr[1:], graph)
    missing = graph.clone()
    del missing.node_pos
    with pytest.raises(ValueError, match="NFTAttention.*node_pos"):
        make_attention(4)(x, edge_attr, missing)
    with pytest.raises(ValueError, match="forward_dense.*folded"):
        make_attention(1).forward_dense(WeightSpace.from_modules([cnn64()]))


def test_repr_and_reset_parameters():
    attn = NFTAttention(8, heads=2, num_layers=3, global_term=False)
    assert repr(attn) == "NFTAttention(8, heads=2, terms=cross, num_layers=3)"
    before = attn.query.weight.clone()
    attn.reset_parameters()
    assert not torch.equal(before, attn.query.weight)


# --- fast paths ------------------------------------------------------------------
def general_path(attn):
    """A copy of ``attn`` (same parameters) that never takes the uniform-batch path."""
    other = make_attention(attn.channels, attn.heads, dtype=attn.query.weight.dtype,
                           global_term=attn.global_term, cross_term=attn.cross_term)
    other.load_state_dict(attn.state_dict())
    other._uniform_path = False
    return other


def outputs_and_gradients(attn, graph, x, edge_attr):
    x = x.clone().requires_grad_()
    edge_attr = edge_attr.clone().requires_grad_()
    x_out, edge_out, weights = attn(x, edge_attr, graph, return_attention_weights=True)
    (x_out.pow(2).sum() + edge_out.sin().sum()).backward()
    grads = [x.grad, edge_attr.grad] + [p.grad for p in attn.parameters()]
    return x_out, edge_out, weights, grads


@pytest.mark.parametrize("flags", [{}, {"global_term": False}, {"cross_term": False}])
@pytest.mark.parametrize("networks", ["mlp", "cnn"])
def test_uniform_path_matches_general_path(flags, networks):
    """Batches of one fully connected layout take the view-based path: same outputs,
    attention weights and gradients as the gathered blocks (float64)."""
    if networks == "mlp":
        graph, x, edge_attr = features([mlp([3, 5, 4, 2]).double() for _ in range(3)],
                                            channels=8)
        attn = make_attention(8, heads=4, **flags)
    else:
        graph = Batch.from_data_list([nft_pyg.from_module(cnn64()) for _ in range(2)])
        x, edge_attr = folded_raw_features(graph)
        attn = make_attention(9, heads=3, **flags)
    layout = UniformLayout.of(nft_pyg.nn.LayerStructure.of(graph))
    assert layout is not None and layout.num_graphs == graph.num_graphs
    fast = outputs_and_gradients(attn, graph, x, edge_attr)
    slow = outputs_and_gradients(general_path(attn), graph, x, edge_attr)
    for a, b in zip(fast[:2] + (fast[3],), slow[:2] + (slow[3],)):
        for u, v in zip(a if isinstance(a, list) else [a], b if isinstance(b, list) else [b]):
            torch.testing.assert_close(u, v, atol=1e-10, rtol=0)
    if attn.cross_term:
        assert torch.equal(fast[2][0], slow[2][0])
        torch.testing.assert_close(fast[2][1], slow[2][1], atol=1e-12, rtol=0)
    else:
        assert fast[2] is None and slow[2] is None


def test_uniform_layout_only_for_one_complete_layout():
    def layout(graph):
        return UniformLayout.of(nft_pyg.nn.LayerStructure.of(graph))

    graph = features([mlp([3, 5, 2]).double() for _ in range(2)], channels=2)[0]
    assert layout(graph).sizes == (3, 5, 2)
    assert layout(graph.get_example(0)).num_graphs == 1
    assert layout(features([mlp([3, 5, 2]).double(), mlp([3, 4, 2]).double()], 2)[0]) is None
    assert layout(drop_edges(graph, keep=0.8)[0]) is None
    reordered = graph.clone()  # same edges, not in canonical order
    order = torch.randperm(reordered.num_edges)
    reordered.edge_index = reordered.edge_index[:, order]
    reordered.edge_layer = reordered.edge_layer[order]
    assert layout(reordered) is None


def test_uniform_path_dropout_in_training():
    graph, x, edge_attr = features([mlp([3, 5, 2]).double() for _ in range(2)], 4)
    attn = make_attention(4, heads=2, dropout=0.5).train()
    first, second = attn(x, edge_attr, graph)[1], attn(x, edge_attr, graph)[1]
    assert not torch.allclose(first, second)
    attn.eval()
    torch.testing.assert_close(attn(x, edge_attr, graph)[1],
                               general_path(attn)(x, edge_attr, graph)[1], atol=1e-12, rtol=0)


@pytest.mark.parametrize("heads", [1, 2, 8])
def test_sparse_groups_neuron_by_neuron_match_masked_blocks(monkeypatch, heads):
    """The per-neuron path (padded buckets of entries) == masked dense blocks, on
    pruned graphs whose neurons have from a few to ~25 entries (several buckets,
    with padding), including gradients."""
    modules = [mlp([3, 24, 20, 2]).double() for _ in range(3)]
    graph, x, edge_attr = features(modules, channels=8)
    pruned = Batch.from_data_list([drop_edges(g, keep)[0] for g, keep in
                                   zip(graph.to_data_list(), (0.15, 0.5, 0.9))])
    edge_attr = pruned.edge_attr
    attn = make_attention(8, heads=heads)
    monkeypatch.setattr(nft_attention_module, "PATH_DENSITY_SCALE", 1e9)  # all sparse
    sparse = outputs_and_gradients(attn, pruned, x, edge_attr)
    cross = cross_paths(pruned, attn)
    assert cross.blocks == [] and cross.num_paths > 0
    buckets = cross.buckets
    assert len(buckets.counts) > 3 and max(buckets.counts) > 8
    assert (buckets.entries == cross.num_entries).any()  # padded slots
    monkeypatch.setattr(nft_attention_module, "PATH_DENSITY_SCALE", 0.0)  # all blocks
    attn.zero_grad()
    dense = outputs_and_gradients(attn, pruned, x, edge_attr)
    assert cross_paths(pruned, attn).num_paths == 0
    for a, b in zip(sparse[:2], dense[:2]):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)
    assert torch.equal(sparse[2][0], dense[2][0])
    torch.testing.assert_close(sparse[2][1], dense[2][1], atol=1e-12, rtol=0)
    for a, b in zip(sparse[3], dense[3]):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)


def test_sparse_path_at_default_limit_on_90_percent_pruned_mlp():
    """At 90 % pruning a wide MLP's hidden layers go neuron by neuron by default
    (and a fully connected graph in the same batch stays a dense block)."""
    modules = [mlp([2, 40, 40, 1]).double() for _ in range(2)]
    graphs = features(modules, channels=16)[0].to_data_list()
    graphs[0] = drop_edges(graphs[0], keep=0.1)[0]
    batch = Batch.from_data_list(graphs)
    attn = make_attention(16, heads=8)
    cross = cross_paths(batch, attn)
    assert cross.num_paths > 0 and any(not b.masked for b in cross.blocks)
    for graph_b, (_, x_b, edge_b) in zip(graphs, split_graphs(batch, *attn(
            batch.x, batch.edge_attr, batch))):
        alone = attn(graph_b.x, graph_b.edge_attr, graph_b)
        torch.testing.assert_close(x_b, alone[0], atol=1e-12, rtol=0)
        torch.testing.assert_close(edge_b, alone[1], atol=1e-12, rtol=0)
    assert_matches_dense(attn, graphs[1], graphs[1].x, graphs[1].edge_attr)


def test_padded_count():
    count = torch.arange(1, 300)
    padded = padded_count(count)
    assert torch.equal(padded[:8], count[:8])
    assert bool((padded >= count).all()) and bool((padded <= 1.25 * count).all())
    assert padded.unique().numel() < 40


def test_segment_softmax_with_empty_segments():
    """Softmax along the last axis (head-major ``[H, S]`` weights)."""
    logits = torch.randn(2, 6, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([2, 0, 3, 0, 1])
    alpha = SegmentSoftmax.apply(logits, lengths)
    segment = torch.repeat_interleave(torch.arange(5), lengths)
    torch.testing.assert_close(alpha, softmax(logits.t(), segment, num_nodes=5).t())
    assert torch.autograd.gradcheck(lambda t: SegmentSoftmax.apply(t, lengths), (logits,))


def test_state_dict_keys_unchanged():
    """Models saved before the fast paths load: the parameters are the four Linears."""
    attn = NFTAttention(8, heads=2)
    assert list(attn.state_dict()) == [f"{name}.{kind}" for name in
                                       ("query", "key", "value", "out")
                                       for kind in ("weight", "bias")]
