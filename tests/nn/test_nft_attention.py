"""NFTAttention: graph path (message passing and dense blocks) == dense twin in
float64, the two paths equal on pruned and mixed batches, equivariance, each
term used, pure forward, PyG calling conventions, torch.compile."""
import pickle

import pytest
import torch
from helpers import (
    cnn,
    drop_edges,
    feature_batch,
    folded_raw_features,
    mlp,
    permuted_graph,
    role_permutation,
    split_graphs,
)
from torch_geometric.data import Batch
from torch_geometric.nn import Sequential

import nft_pyg
from nft_pyg import WeightSpace
from nft_pyg.nn.conv.nft_attention import NFTAttention
from nft_pyg.nn.structure import WeightGraphIndex
from nft_pyg.symmetry import permute

torch.set_num_threads(1)

MLP_SIZES = {1: [3, 2], 2: [2, 5, 3], 3: [3, 4, 5, 2], 4: [2, 3, 4, 3, 2]}
#: block_density of the two paths: dense blocks always / message passing always
PATHS = {"blocks": 0.0, "messages": float("inf")}


def cnn64():
    """Conv 3x3 -> Conv 2x2 -> pool -> Flatten (4 positions) -> Linear, float64."""
    return cnn([2, 3, 4], [3, 2], head=3, pooled=2, padding=[1, 0]).double()


def features(modules, channels, dtype=torch.float64):
    """``(batch, x, edge_attr)``: the modules' graphs with random ``[N, C]`` /
    ``[E, C]`` features (input nodes too)."""
    batch = feature_batch(modules, channels, dtype, seed=None, folded=False)
    return batch, batch.x, batch.edge_attr


def make_attention(channels=8, heads=1, dtype=torch.float64, path="blocks", **kwargs):
    return NFTAttention(channels, heads=heads, block_density=PATHS[path],
                        **kwargs).to(dtype).eval()


def same_parameters(attn, path):
    other = make_attention(attn.channels, attn.heads, attn.query.weight.dtype, path,
                           global_term=attn.global_term, cross_term=attn.cross_term)
    other.load_state_dict(attn.state_dict())
    return other


def run(attn, graph, x, edge_attr):
    return attn(x, graph.edge_index, edge_attr, WeightGraphIndex.from_data(graph))


def assert_matches_dense(attn, graph, x, edge_attr, atol=1e-10):
    """Graph path on ``graph`` (one architecture) equals the dense twin."""
    x_out, edge_out = run(attn, graph, x, edge_attr)
    assert x_out.shape == x.shape and edge_out.shape == edge_attr.shape
    assert x_out[graph.node_layer == 0].abs().max() == 0
    expected = attn.forward_dense(WeightSpace.from_features(graph, x, edge_attr))
    got = WeightSpace.from_features(graph, x_out, edge_out)
    for a, b in zip(got.weights + got.biases, expected.weights + expected.biases):
        torch.testing.assert_close(a, b, atol=atol, rtol=0)


def outputs_and_gradients(attn, graph, x, edge_attr):
    x = x.clone().requires_grad_()
    edge_attr = edge_attr.clone().requires_grad_()
    x_out, edge_out = run(attn, graph, x, edge_attr)
    (x_out.pow(2).sum() + edge_out.sin().sum()).backward()
    return [x_out, edge_out, x.grad, edge_attr.grad] + [p.grad for p in attn.parameters()]


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
@pytest.mark.parametrize("heads", [1, 4])
@pytest.mark.parametrize("batch_size", [1, 3])
@pytest.mark.parametrize("path", list(PATHS))
def test_graph_matches_dense_mlp(depth, heads, batch_size, path):
    modules = [mlp(MLP_SIZES[depth]).double() for _ in range(batch_size)]
    graph, x, edge_attr = features(modules, channels=8)
    assert_matches_dense(make_attention(8, heads, path=path), graph, x, edge_attr)


@pytest.mark.parametrize("path", list(PATHS))
def test_graph_matches_dense_cnn_folded_kernels(path):
    graph = Batch.from_data_list([nft_pyg.from_module(cnn64()) for _ in range(2)])
    x, edge_attr = folded_raw_features(graph)  # 9 kernel positions as channels
    assert_matches_dense(make_attention(9, heads=3, path=path), graph, x, edge_attr)


def test_float32_matches_dense(device):
    modules = [mlp([3, 6, 5, 2]) for _ in range(2)]
    graph, x, edge_attr = features(modules, channels=8, dtype=torch.float32)
    attn = make_attention(8, 2, dtype=torch.float32).to(device)
    graph, x, edge_attr = graph.to(device), x.to(device), edge_attr.to(device)
    assert_matches_dense(attn, graph, x, edge_attr, atol=1e-5)


@pytest.mark.parametrize("path", list(PATHS))
def test_mixed_architecture_batch(path):
    modules = [mlp([2, 5, 3]).double(), mlp([3, 4, 5, 2]).double(), cnn64(),
               mlp([2, 3, 3]).double()]
    graph, x, edge_attr = features(modules, channels=8)
    attn = make_attention(8, heads=2, path=path)
    x_out, edge_out = run(attn, graph, x, edge_attr)
    for (single, x_b, edge_b), (_, x_out_b, edge_out_b) in zip(
            split_graphs(graph, x, edge_attr), split_graphs(graph, x_out, edge_out)):
        expected = attn.forward_dense(WeightSpace.from_features(single, x_b, edge_b))
        got = WeightSpace.from_features(single, x_out_b, edge_out_b)
        assert got.allclose(expected, atol=1e-10, rtol=0)


def pruned_batch(channels=4, sizes=(3, 6, 5, 2), keeps=(0.1, 0.5, 0.9)):
    graphs = [features([mlp(list(sizes)).double()], channels)[0].get_example(0)
              for _ in keeps]
    return Batch.from_data_list([drop_edges(g, keep)[0] for g, keep in zip(graphs, keeps)])


@pytest.mark.parametrize("heads", [1, 2])
def test_paths_equal_blocks_on_pruned_and_mixed_batches(heads):
    """The fast path (masked, padded dense blocks) == message passing: outputs
    and gradients, on pruned graphs of several densities next to a dense one of
    another architecture."""
    pruned = pruned_batch().to_data_list()
    other = features([mlp([2, 7, 3]).double()], 4)[0].get_example(0)
    batch = Batch.from_data_list(pruned + [other])
    attn = make_attention(4, heads=heads)
    fast = outputs_and_gradients(attn, batch, batch.x, batch.edge_attr)
    reference = same_parameters(attn, "messages")
    slow = outputs_and_gradients(reference, batch, batch.x, batch.edge_attr)
    for a, b in zip(fast, slow):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)


def test_default_choice_of_path():
    """Fully connected batches take the dense blocks, a 90 % pruned wide MLP
    message passing; the reference really runs as message passing."""
    calls = []
    dense, _, _ = features([mlp([2, 40, 40, 1]).double() for _ in range(2)], channels=8)
    sparse = Batch.from_data_list([drop_edges(g, 0.1)[0] for g in dense.to_data_list()])
    attn = NFTAttention(8, heads=2).double()
    attn.register_message_forward_hook(lambda *args: calls.append(1))
    for graph, messages in ((dense, 0), (sparse, 1)):
        index = WeightGraphIndex.from_data(graph)
        attn(graph.x, graph.edge_index, graph.edge_attr, index)
        part = index.parts[f"nft_attention/{attn.block_density}"]
        assert (part.paths is not None) == bool(messages) and len(calls) == messages


@pytest.mark.parametrize("prune", [False, True])
@pytest.mark.parametrize("path", list(PATHS))
def test_equivariance_graph(prune, path):
    graph, x, edge_attr = features([mlp([3, 5, 4, 2]).double(), mlp([2, 4, 3]).double()],
                                   channels=8)
    if prune:
        graph, kept = drop_edges(graph, keep=0.6)
        edge_attr = edge_attr[kept]
    attn = make_attention(8, heads=2, path=path)
    x_out, edge_out = run(attn, graph, x, edge_attr)
    permuted, node_map, edge_map, _ = permuted_graph(graph)
    x_perm, edge_perm = run(attn, permuted, x[node_map], edge_attr[edge_map])
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


@pytest.mark.parametrize("path", list(PATHS))
def test_pruned_graph_differs_from_zero_weights(path):
    """Missing edges are absent entries, not zero vectors (documented choice)."""
    graph, x, edge_attr = features([mlp([3, 5, 4, 2]).double()], channels=4)
    pruned, kept = drop_edges(graph, keep=0.6)
    attn = make_attention(4, path=path)
    _, edge_pruned = run(attn, pruned, x, edge_attr[kept])
    _, edge_zeroed = run(attn, graph, x, edge_attr * kept.unsqueeze(-1).double())
    assert not torch.allclose(edge_pruned, edge_zeroed[kept])


@pytest.mark.parametrize("flags", [{"cross_term": False}, {"global_term": False}])
@pytest.mark.parametrize("path", list(PATHS))
def test_each_term_alone_matches_dense_and_matters(flags, path):
    graph, x, edge_attr = features([mlp([2, 5, 3, 2]).double() for _ in range(2)],
                                   channels=8)
    full = make_attention(8, heads=2, path=path)
    alone = make_attention(8, heads=2, path=path, **flags)
    alone.load_state_dict(full.state_dict())
    assert_matches_dense(alone, graph, x, edge_attr)
    x_full, edge_full = run(full, graph, x, edge_attr)
    x_alone, edge_alone = run(alone, graph, x, edge_attr)
    assert not torch.allclose(edge_full, edge_alone, atol=1e-6)
    assert not torch.allclose(x_full, x_alone, atol=1e-6)


def test_input_node_features_are_ignored():
    graph, x, edge_attr = features([mlp([3, 4, 2]).double()], channels=4)
    attn = make_attention(4)
    x_out, edge_out = run(attn, graph, x, edge_attr)
    changed = x.clone()
    changed[graph.node_layer == 0] += 5.0
    x_out2, edge_out2 = run(attn, graph, changed, edge_attr)
    assert torch.equal(x_out, x_out2) and torch.equal(edge_out, edge_out2)


@pytest.mark.parametrize("path", list(PATHS))
def test_dropout_only_in_training(path):
    graph, x, edge_attr = features([mlp([3, 5, 2]).double()], channels=4)
    attn = make_attention(4, dropout=0.5, path=path)
    plain = make_attention(4, path=path)
    plain.load_state_dict(attn.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(run(attn, graph, x, edge_attr),
                                                 run(plain, graph, x, edge_attr)))
    attn.train()
    assert not torch.allclose(run(attn, graph, x, edge_attr)[1],
                              run(plain, graph, x, edge_attr)[1])


def test_gradients_reach_every_projection():
    graph, x, edge_attr = features([mlp([3, 4, 2]).double()], channels=4)
    attn = make_attention(4, heads=2)
    x_out, edge_out = run(attn, graph, x, edge_attr)
    (x_out.pow(2).sum() + edge_out.pow(2).sum()).backward()
    for name, param in attn.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


@pytest.mark.parametrize("path", list(PATHS))
def test_gradcheck(path):
    batch = pruned_batch(channels=2, sizes=(2, 3, 2), keeps=(1.0, 0.5))
    attn = make_attention(2, heads=2, path=path)
    x = batch.x.clone().requires_grad_()
    edge_attr = batch.edge_attr.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: run(attn, batch, a, b), (x, edge_attr))


@pytest.mark.parametrize("path", list(PATHS))
def test_forward_writes_nothing_onto_the_batch(path):
    graph, x, edge_attr = features([mlp([3, 5, 4, 2]).double() for _ in range(2)], 4)
    before = pickle.dumps(graph)
    attn = make_attention(4, heads=2, path=path)
    attn(graph.x, graph.edge_index, graph.edge_attr, graph)   # index built for the call
    run(attn, graph, x, edge_attr)
    assert pickle.dumps(graph) == before


def test_inside_pyg_sequential():
    graph, x, edge_attr = features([mlp([3, 5, 4, 2]).double() for _ in range(2)], 4)
    first, second = make_attention(4, heads=2), make_attention(4, heads=2)
    model = Sequential("x, edge_index, edge_attr, index", [
        (first, "x, edge_index, edge_attr, index -> x, edge_attr"),
        (second, "x, edge_index, edge_attr, index -> x, edge_attr"),
    ])
    index = WeightGraphIndex.from_data(graph)
    expected = second(*first(x, graph.edge_index, edge_attr, index)[:1], graph.edge_index,
                      first(x, graph.edge_index, edge_attr, index)[1], index)
    got = model(x, graph.edge_index, edge_attr, index)
    assert all(torch.equal(a, b) for a, b in zip(got, expected))


def test_no_graph_breaks_with_a_built_index(device):
    """On CUDA also: the forward makes no host syncs once the index exists."""
    graph, x, edge_attr = features([mlp([3, 5, 4, 2]) for _ in range(2)], 8,
                                   dtype=torch.float32)
    graph, x, edge_attr = graph.to(device), x.to(device), edge_attr.to(device)
    for path in PATHS:
        attn = make_attention(8, heads=2, dtype=torch.float32, path=path).to(device)
        index = WeightGraphIndex.from_data(graph)
        attn(x, graph.edge_index, edge_attr, index)   # builds the index part
        if device.type == "cuda":   # once the index exists, no host syncs
            torch.cuda.set_sync_debug_mode("error")
        try:
            eager = attn(x, graph.edge_index, edge_attr, index)
        finally:
            if device.type == "cuda":
                torch.cuda.set_sync_debug_mode("default")
        torch._dynamo.reset()
        explanation = torch._dynamo.explain(attn)(x, graph.edge_index, edge_attr, index)
        assert explanation.graph_break_count == 0, (path, explanation.break_reasons)
        compiled = torch.compile(attn)(x, graph.edge_index, edge_attr, index)
        for a, b in zip(compiled, eager):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_bad_inputs():
    graph, x, edge_attr = features([mlp([3, 4, 5, 2]).double()], channels=4)
    index = WeightGraphIndex.from_data(graph)
    with pytest.raises(ValueError, match="NFTAttention.*multiple of heads"):
        NFTAttention(6, heads=4)
    with pytest.raises(ValueError, match="NFTAttention.*global term, the cross term"):
        NFTAttention(4, global_term=False, cross_term=False)
    with pytest.raises(ValueError, match="NFTAttention.*num_layers=2"):
        make_attention(4, num_layers=2)(x, graph.edge_index, edge_attr, index)
    with pytest.raises(ValueError, match="NFTAttention.*at most 2 weight layers"):
        make_attention(4, num_layers=2).forward_dense(
            WeightSpace.from_features(graph, x, edge_attr))
    with pytest.raises(ValueError, match="NFTAttention.*channels"):
        make_attention(4)(x[:, :3], graph.edge_index, edge_attr, index)
    with pytest.raises(ValueError, match="NFTAttention.*rows"):
        make_attention(4)(x, graph.edge_index, edge_attr[1:], index)
    # the old call attn(x, edge_attr, graph) shows the signature
    with pytest.raises(TypeError, match=r"NFTAttention.*edge_index \[2, E\], edge_attr"):
        make_attention(4)(x, edge_attr, graph)
    missing = graph.clone()
    del missing.node_pos
    with pytest.raises(ValueError, match="NFTAttention.*node_pos"):
        make_attention(4)(x, graph.edge_index, edge_attr, missing)
    with pytest.raises(ValueError, match="folded"):
        make_attention(1).forward_dense(WeightSpace.from_modules([cnn64()]))


def test_repr_reset_parameters_and_state_dict_keys():
    attn = NFTAttention(8, heads=2, num_layers=3, global_term=False)
    assert repr(attn) == "NFTAttention(8, heads=2, terms=cross, num_layers=3)"
    before = attn.query.weight.clone()
    attn.reset_parameters()
    assert not torch.equal(before, attn.query.weight)
    # models saved before keep loading: the parameters are the four Linears
    assert list(attn.state_dict()) == [f"{name}.{kind}" for name in
                                       ("query", "key", "value", "out")
                                       for kind in ("weight", "bias")]
