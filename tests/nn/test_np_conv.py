"""NPConv: graph == dense twin, NP equivariance, IO embeddings, every term used."""
import copy

import pytest
import torch
from helpers import (
    assert_matches_dense,
    cnn,
    drop_edges,
    feature_batch,
    index_maps,
    mlp,
    permute_module_by_hand,
    permuted_graph,
    random_neuron_permutation,
    role_permutation,
)

import nft_pyg
from nft_pyg.graph.types import NodeRole
from nft_pyg.nn.conv.np_conv import NPConv
from nft_pyg.nn.conv.pointwise_conv import PointwiseConv
from nft_pyg.nn.structure import WeightGraphIndex
from nft_pyg.tensor.weight_space import WeightSpace

torch.set_num_threads(1)
ALL_ROLES = (NodeRole.INPUT, NodeRole.HIDDEN, NodeRole.OUTPUT)


def make_conv(in_channels, out_channels, num_layers, dtype=torch.float64, **kwargs):
    conv = NPConv(in_channels, out_channels, num_layers, **kwargs).to(dtype)
    with torch.no_grad():  # biases start at zero: make them count in the tests
        conv.edge_bias.normal_()
        conv.node_bias.normal_()
    return conv


MLPS = [
    ([3, 2], 1),
    ([4, 5, 3], 2),
    ([2, 6, 1, 4, 3], 3),
    ([5, 3, 3, 3, 3, 2], 1),
]


@pytest.mark.parametrize("sizes,batch_size", MLPS)
@pytest.mark.parametrize("io_embedding", [False, True])
def test_matches_dense_mlp(sizes, batch_size, io_embedding):
    batch = feature_batch([mlp(sizes).double() for _ in range(batch_size)], channels=3)
    conv = make_conv(3, 4, len(sizes) - 1, io_embedding=io_embedding,
                     num_inputs=sizes[0], num_outputs=sizes[-1])
    x_out, edge_out = assert_matches_dense(conv, batch)
    assert x_out.shape == (batch.num_nodes, 4) and edge_out.shape == (batch.num_edges, 4)
    assert torch.all(x_out[batch.node_role == int(NodeRole.INPUT)] == 0)


@pytest.mark.parametrize("module", [
    cnn([2, 3, 4], [3, 1]),
    cnn([1, 3, 2], [5, 3], dim=1, head=3, pooled=2),
    cnn([3, 2], [3], head=2, pooled=2),
], ids=["conv3-conv1", "conv1d-flatten-positions", "conv-flatten-linear"])
def test_matches_dense_cnn_folded(module):
    batch = feature_batch([module.double()] * 2, channels=2)
    width = int(batch.kernel_width[0])
    assert batch.x.size(1) == 2 * width > 2
    conv = make_conv(2 * width, 3, 4)
    assert_matches_dense(conv, batch)


def test_matches_dense_mixed_batch():
    modules = [mlp([3, 4, 2]), cnn([2, 3, 2], [3, 1], head=3, pooled=2), mlp([3, 2, 2, 5, 2]),
               mlp([3, 4, 2]), cnn([1, 2], [3])]
    batch = feature_batch([m.double() for m in modules], channels=2)
    conv = make_conv(batch.x.size(1), 3, 4)
    assert_matches_dense(conv, batch)


def test_matches_dense_float32():
    batch = feature_batch([mlp([4, 6, 5, 2]), cnn([2, 3, 2], [3, 3])], channels=2,
                          dtype=torch.float32)
    conv = make_conv(batch.x.size(1), 5, 3, dtype=torch.float32)
    assert_matches_dense(conv, batch, atol=1e-5)


def test_raw_graph_with_folded_bias_is_an_input():
    """A raw CNN graph: edge_attr [E, S], x zero-padded to [N, S] (bias in column 0)."""
    module = cnn([2, 3, 2], [3, 1]).double()
    graph = nft_pyg.from_module(module)
    width = int(graph.kernel_width[0])
    x = torch.nn.functional.pad(graph.x, (0, width - 1))
    conv = make_conv(width, 2, 2)
    x_out, edge_out = conv(x, graph.edge_index, graph.edge_attr, graph)
    dense = conv.forward_dense(WeightSpace.from_modules([module]).fold_kernels(width))
    x_dense, e_dense = dense.graph_features()
    torch.testing.assert_close(x_out, x_dense[0], atol=1e-10, rtol=0)
    torch.testing.assert_close(edge_out, e_dense[0], atol=1e-10, rtol=0)


# --- equivariance ----------------------------------------------------------------
def permuted_outputs(conv, batch, roles, seed=1):
    node_map, edge_map = random_neuron_permutation(
        batch, roles, torch.Generator().manual_seed(seed))
    x_out, edge_out = conv(batch.x, batch.edge_index, batch.edge_attr, batch)
    x_perm, edge_perm = conv(batch.x[node_map], batch.edge_index, batch.edge_attr[edge_map], batch)
    return (x_out, edge_out), (x_perm, edge_perm), (node_map, edge_map)


def assert_equivariant(conv, batch, roles):
    (x_out, edge_out), (x_perm, edge_perm), (node_map, edge_map) = permuted_outputs(
        conv, batch, roles)
    assert not torch.equal(node_map, torch.arange(batch.num_nodes))
    torch.testing.assert_close(x_perm, x_out[node_map], atol=1e-10, rtol=0)
    torch.testing.assert_close(edge_perm, edge_out[edge_map], atol=1e-10, rtol=0)


def test_equivariant_to_hidden_and_io_permutations():
    batch = feature_batch([mlp([4, 5, 3, 2]).double(), cnn([3, 4, 2], [3, 3]).double()],
                          channels=2)
    conv = make_conv(batch.x.size(1), 3, 3)
    assert_equivariant(conv, batch, (NodeRole.HIDDEN,))
    assert_equivariant(conv, batch, ALL_ROLES)  # NP: inputs and outputs too


def test_io_embedding_breaks_input_symmetry_only():
    batch = feature_batch([mlp([4, 5, 3, 3]).double()] * 2, channels=2)
    conv = make_conv(2, 3, 3, io_embedding=True, num_inputs=4, num_outputs=3)
    assert_equivariant(conv, batch, (NodeRole.HIDDEN,))
    for role in (NodeRole.INPUT, NodeRole.OUTPUT):
        (x_out, edge_out), (x_perm, edge_perm), (node_map, edge_map) = permuted_outputs(
            conv, batch, (role,))
        assert not torch.allclose(edge_perm, edge_out[edge_map], atol=1e-6)
    # without the embedding the same permutations are symmetries
    with torch.no_grad():
        for param in (conv.input_embedding, conv.output_embedding,
                      conv.output_bias_embedding):
            param.zero_()
    assert_equivariant(conv, batch, ALL_ROLES)


def test_permutation_helper_matches_module_permutation():
    module = mlp([3, 5, 4, 2]).double()
    graph = nft_pyg.from_module(module)
    perm = role_permutation(graph, generator=torch.Generator().manual_seed(3))
    node_map, edge_map = index_maps(graph, perm)
    permuted = permute_module_by_hand(module, perm.layers)
    other = nft_pyg.from_module(permuted)
    assert torch.equal(other.x, graph.x[node_map])
    assert torch.equal(other.edge_attr, graph.edge_attr[edge_map])
    inputs = torch.randn(7, 3, dtype=torch.float64)
    torch.testing.assert_close(permuted(inputs), module(inputs))


# --- every term is used ----------------------------------------------------------
def _block(name, part):
    def zero(conv):
        with torch.no_grad():
            param = getattr(conv, name)
            if part is None:
                param.zero_()
            else:
                c = conv.in_channels
                param[:, part * c:(part + 1) * c] = 0
    return zero


TERMS = {"A (edge_self)": _block("edge_self", None),
         "D (edge_global)": _block("edge_global", None),
         "F (node_global)": _block("node_global", None),
         "edge_bias": _block("edge_bias", None), "node_bias": _block("node_bias", None)}
for _name, _short in (("edge_src", "B"), ("edge_dst", "C"), ("node_self", "E")):
    for _part, _what in enumerate(("in", "bias", "out")):
        TERMS[f"{_short}-{_what} ({_name})"] = _block(_name, _part)


@pytest.mark.parametrize("term", sorted(TERMS))
def test_each_term_is_used(term):
    batch = feature_batch([mlp([3, 4, 5, 2]).double()], channels=2)
    conv = make_conv(2, 2, 3)
    x_out, edge_out = conv(batch.x, batch.edge_index, batch.edge_attr, batch)
    TERMS[term](conv)
    x_cut, edge_cut = conv(batch.x, batch.edge_index, batch.edge_attr, batch)
    changed = (x_cut - x_out).abs().max() + (edge_cut - edge_out).abs().max()
    assert changed > 1e-3
    assert_matches_dense(conv, batch)  # the dense twin uses the same term


def test_self_terms_alone_give_the_pointwise_layer():
    batch = feature_batch([mlp([3, 4, 5, 2]).double(), cnn([2, 3], [3]).double()], channels=2)
    channels = batch.x.size(1)
    conv = make_conv(channels, 3, 3)
    pointwise = PointwiseConv(channels, 3, 3).double()
    with torch.no_grad():
        for param in (conv.edge_src, conv.edge_dst, conv.edge_global, conv.node_global):
            param.zero_()
        conv.node_self[:, :channels] = 0
        conv.node_self[:, 2 * channels:] = 0
        pointwise.edge_weight.copy_(conv.edge_self)
        pointwise.node_weight.copy_(conv.node_self[:, channels:2 * channels])
        pointwise.edge_bias.copy_(conv.edge_bias)
        pointwise.node_bias.copy_(conv.node_bias)
    for got, want in zip(conv(batch.x, batch.edge_index, batch.edge_attr, batch),
                         pointwise(batch.x, batch.edge_index, batch.edge_attr, batch)):
        torch.testing.assert_close(got, want, atol=1e-12, rtol=0)


# --- parameters, init, errors ----------------------------------------------------
@pytest.mark.parametrize("c_in,c_out,layers,bias,io", [
    (1, 1, 1, True, False), (3, 5, 2, True, False), (4, 2, 5, False, False),
    (2, 3, 3, True, True)])
def test_parameter_count(c_in, c_out, layers, bias, io):
    conv = NPConv(c_in, c_out, layers, io_embedding=io, num_inputs=6, num_outputs=4, bias=bias)
    expected = layers * c_out * ((10 + 4 * layers) * c_in + (2 if bias else 0))
    if io:
        expected += (6 + 2 * 4) * c_in
    assert sum(p.numel() for p in conv.parameters()) == expected


@torch.no_grad()
def test_initialisation_keeps_the_scale_through_depth():
    batch = feature_batch([mlp([8, 24, 24, 4])] * 2, channels=8, dtype=torch.float32)
    x, edge_attr = batch.x, batch.edge_attr
    hidden = batch.node_layer > 0
    for _ in range(12):
        x, edge_attr = NPConv(8, 8, 3)(x, batch.edge_index, edge_attr, batch)
        for features in (edge_attr, x[hidden]):
            assert 0.3 < float(features.std()) < 3.0


def test_reset_parameters_redraws():
    conv = NPConv(2, 2, 2)
    before = copy.deepcopy(conv.state_dict())
    conv.reset_parameters()
    assert not torch.equal(before["edge_global"], conv.edge_global)
    assert torch.all(conv.edge_bias == 0)


def test_errors():
    batch = feature_batch([mlp([3, 4, 4, 2]).double()], channels=2)
    x, e = batch.x, batch.edge_attr
    with pytest.raises(ValueError, match=r"NPConv: the graph has 3 weight layers .*num_layers=2"):
        make_conv(2, 2, 2)(x, batch.edge_index, e, batch)
    conv = make_conv(2, 2, 3)
    with pytest.raises(ValueError, match=r"NPConv: expected x with 2 channels, got 3"):
        conv(torch.zeros(x.size(0), 3, dtype=x.dtype), batch.edge_index, e, batch)
    with pytest.raises(ValueError, match=r"NPConv: expected edge_attr with 2 channels"):
        conv(x, batch.edge_index, e[:, :1], batch)
    with pytest.raises(ValueError, match=r"NPConv: edge_attr has 5 rows"):
        conv(x, batch.edge_index, e[:5], batch)
    broken = copy.copy(batch)
    del broken.node_pos
    with pytest.raises(ValueError, match=r"NPConv: the graph has no node_pos"):
        conv(x, broken.edge_index, e, broken)
    zero_layer = copy.copy(batch)
    zero_layer.edge_layer = batch.edge_layer - 1
    with pytest.raises(ValueError, match=r"NPConv: edge_layer must be 1..L, got 0"):
        conv(x, zero_layer.edge_index, e, zero_layer)
    with pytest.raises(ValueError, match=r"NPConv: io_embedding=True needs num_inputs"):
        NPConv(2, 2, 3, io_embedding=True)
    small_io = make_conv(2, 2, 3, io_embedding=True, num_inputs=2, num_outputs=2)
    with pytest.raises(ValueError, match=r"NPConv: a graph has 3 input neurons .*num_inputs=2"):
        small_io(x, batch.edge_index, e, batch)
    ws = WeightSpace.from_features(batch, x, e)
    with pytest.raises(ValueError, match=r"NPConv.forward_dense: .*num_inputs=2"):
        small_io.forward_dense(ws)
    with pytest.raises(ValueError, match=r"NPConv.forward_dense: the weight space has 3"):
        make_conv(2, 2, 2).forward_dense(ws)
    with pytest.raises(ValueError, match=r"NPConv.forward_dense: expected in_channels=3"):
        make_conv(3, 2, 3).forward_dense(ws)
    raw = WeightSpace.from_modules([cnn([1, 2], [3]).double()])
    with pytest.raises(ValueError, match=r"NPConv.forward_dense: expects a folded"):
        make_conv(1, 2, 3).forward_dense(raw)


def test_gradients_reach_every_parameter():
    batch = feature_batch([mlp([3, 4, 5, 2]).double()], channels=2)
    conv = make_conv(2, 2, 3, io_embedding=True, num_inputs=3, num_outputs=2)
    x_out, edge_out = conv(batch.x, batch.edge_index, batch.edge_attr, batch)
    (x_out.square().sum() + edge_out.square().sum()).backward()
    for name, param in conv.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_repr():
    assert repr(NPConv(2, 3, 4)) == "NPConv(2, 3, num_layers=4, bias=True)"
    assert repr(NPConv(2, 3, 4, io_embedding=True, num_inputs=5, num_outputs=1)) == \
        "NPConv(2, 3, num_layers=4, io_embedding=True, num_inputs=5, num_outputs=1, bias=True)"


# --- pruned graphs (missing edges) -------------------------------------------------
def pruned(batch, keep: float, seed: int = 0):
    """``batch`` with a random ``1 - keep`` of its edges removed (each graph
    keeps at least one edge per weight layer)."""
    from torch_geometric.data import Batch
    generator = torch.Generator().manual_seed(seed)
    return Batch.from_data_list([drop_edges(graph, keep, generator)[0]
                                 for graph in batch.to_data_list()])


def presence_mask(graph) -> list[torch.Tensor]:
    """Per weight layer ``[B, n_l, n_{l-1}]``: true where the graph has the edge."""
    ones = WeightSpace.from_features(graph, torch.zeros(graph.num_nodes, 1, dtype=torch.float64),
                                     torch.ones(graph.num_edges, 1, dtype=torch.float64))
    return [w[:, 0] > 0 for w in ones.weights]


def assert_pruned_matches_dense(conv, batch, atol=1e-10):
    """Each graph of a pruned batch against the dense twin with its presence
    mask (absent weights: absent from every mean, zero output)."""
    x_out, edge_out = conv(batch.x, batch.edge_index, batch.edge_attr, batch)
    edge_graph = batch.batch[batch.edge_index[0]]
    for b in range(batch.num_graphs):
        graph = batch.get_example(b)
        nodes, edges = batch.batch == b, edge_graph == b
        dense = conv.forward_dense(WeightSpace.from_features(graph, graph.x, graph.edge_attr),
                                   presence_mask(graph))
        got = WeightSpace.from_features(graph, x_out[nodes], edge_out[edges])
        for a, e in zip(got.weights + got.biases, dense.weights + dense.biases):
            torch.testing.assert_close(a, e, atol=atol, rtol=0)
    return x_out, edge_out


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9])
def test_pruned_matches_masked_dense(keep):
    """Mixed depths and kinds, pruned: the neuron terms are computed on the
    neurons that need them only, and still equal the masked dense twin."""
    modules = [mlp([3, 4, 2]), cnn([2, 3, 2], [3, 1], head=3, pooled=2), mlp([3, 6, 8, 5, 2]),
               mlp([3, 4, 2]), cnn([1, 2], [3])]
    batch = pruned(feature_batch([m.double() for m in modules], channels=2), keep)
    conv = make_conv(batch.x.size(1), 3, 4)
    assert_pruned_matches_dense(conv, batch)


def test_pruned_cnn_zoo_shape():
    """The benchmark's CNN zoo neuron layers (1-8-16-10), 90 % pruned: most
    neurons have no edge left on one side or both."""
    batch = pruned(feature_batch([mlp([1, 8, 16, 10]).double() for _ in range(3)],
                                 channels=3), 0.1, seed=1)
    conv = make_conv(3, 2, 3)
    assert_pruned_matches_dense(conv, batch)
    has_in = torch.zeros(batch.num_nodes, dtype=torch.bool)
    has_in[batch.edge_index[1]] = True
    assert (~has_in[batch.node_layer > 0]).any()  # the partial row sets are exercised


@pytest.mark.parametrize("term", sorted(TERMS))
def test_each_term_is_used_on_pruned_graphs(term):
    batch = pruned(feature_batch([mlp([3, 6, 5, 2]).double()] * 2, channels=2), 0.5, seed=2)
    conv = make_conv(2, 2, 3)
    x_out, edge_out = conv(batch.x, batch.edge_index, batch.edge_attr, batch)
    TERMS[term](conv)
    x_cut, edge_cut = assert_pruned_matches_dense(conv, batch)
    assert (x_cut - x_out).abs().max() + (edge_cut - edge_out).abs().max() > 1e-3


def test_pruned_equivariance_and_io_embedding():
    batch = pruned(feature_batch([mlp([4, 6, 5, 3]).double()] * 2, channels=2), 0.4, seed=3)
    conv = make_conv(2, 3, 3, io_embedding=True, num_inputs=4, num_outputs=3)
    assert_pruned_matches_dense(conv, batch)
    x_out, edge_out = conv(batch.x, batch.edge_index, batch.edge_attr, batch)
    permuted, node_map, edge_map, _ = permuted_graph(batch)
    x_perm, edge_perm = conv(permuted.x, permuted.edge_index, permuted.edge_attr, permuted)
    torch.testing.assert_close(x_perm, x_out[node_map], atol=1e-10, rtol=0)
    torch.testing.assert_close(edge_perm, edge_out[edge_map], atol=1e-10, rtol=0)


def test_repeated_calls_reuse_the_index_parts():
    for batch in (feature_batch([mlp([3, 8, 8, 2]).double()] * 2, channels=2),
                  pruned(feature_batch([mlp([3, 8, 8, 2]).double()] * 2, channels=2), 0.5)):
        index = WeightGraphIndex.from_data(batch)
        conv = make_conv(2, 2, 3)
        first = conv(batch.x, batch.edge_index, batch.edge_attr, index)
        grid = index.parts["grid"]
        assert (grid is None) == (batch.num_edges < 2 * (24 + 64 + 16))   # pruned: no grid
        second = conv(batch.x, batch.edge_index, batch.edge_attr, index)
        assert index.parts["grid"] is grid
        torch.testing.assert_close(first, second, atol=0, rtol=0)
