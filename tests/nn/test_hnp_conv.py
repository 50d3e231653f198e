"""HNPConv: graph == dense twin, hidden-neuron equivariance, no input/output
symmetry, every term used, parameter count, bad inputs."""
import copy

import pytest
import torch
from helpers import (
    cnn,
    dense_of,
    drop_edges,
    folded_raw_features,
    index_maps,
    layer_sizes,
    mlp,
    permuted_graph,
    permuted_pair,
    random_features,
    random_neuron_permutation,
    split_graphs,
    structure_batch,
)

import nft_pyg
from nft_pyg.nn.conv.hnp_conv import HNPConv
from nft_pyg.nn.structure import WeightGraphIndex
from nft_pyg.symmetry import NeuronPermutation
from nft_pyg.tensor.weight_space import WeightSpace

torch.set_num_threads(1)


def _pyg_args(features, graph):
    x, edge_attr = features
    return x, graph.edge_index, edge_attr, graph


def make_conv(in_channels, out_channels, widths, dtype=torch.float64, bias=True):
    conv = HNPConv(in_channels, out_channels, len(widths) - 1, widths[0], widths[-1],
                   bias=bias).to(dtype)
    if bias:
        with torch.no_grad():
            conv.global_map.bias.normal_()
    return conv


def assert_close_ws(a: WeightSpace, b: WeightSpace, atol):
    assert len(a.weights) == len(b.weights)
    for p, q in zip(a.weights + a.biases, b.weights + b.biases):
        assert p.shape == q.shape
        assert torch.allclose(p, q, atol=atol, rtol=0), (p - q).abs().max()


def check_against_dense(conv, batch, x, edge_attr, atol=1e-10):
    """Run the graph op on the whole batch; compare each graph with the dense twin."""
    x_out, e_out = conv(x, batch.edge_index, edge_attr, batch)
    is_input = batch.node_role == int(nft_pyg.graph.types.NodeRole.INPUT)
    assert torch.all(x_out[is_input] == 0)
    pieces = split_graphs(batch, x, edge_attr)
    outs = split_graphs(batch, x_out, e_out)
    for (graph, xi, ei), (_, xo, eo) in zip(pieces, outs):
        expected = conv.forward_dense(dense_of(graph, xi, ei))
        assert_close_ws(dense_of(graph, xo, eo), expected, atol)
    return x_out, e_out


MLP_CASES = [  # widths, batch size
    ([3, 2], 1),
    ([4, 3], 3),
    ([3, 5, 2], 2),
    ([2, 4, 3], 1),
    ([3, 4, 5, 2], 3),
    ([2, 3, 4, 2, 3], 2),
]


@pytest.mark.parametrize("widths,batch_size", MLP_CASES)
def test_graph_matches_dense_mlp(widths, batch_size):
    batch = structure_batch([mlp(widths) for _ in range(batch_size)])
    x, edge_attr = random_features(batch, 2)
    check_against_dense(make_conv(2, 3, widths), batch, x, edge_attr)


@pytest.mark.parametrize("modules", [
    [cnn([2, 3, 4], [3, 1]) for _ in range(2)],
    [cnn([1, 4, 2, 3], [3, 3, 1])],
    [cnn([2, 3], [3], head=4) for _ in range(2)],
])
def test_graph_matches_dense_cnn_folded(modules):
    """A raw CNN graph fed as folded features (C = S kernel positions)."""
    batch = structure_batch(modules)
    x, edge_attr = folded_raw_features(batch)
    x, edge_attr = x.double(), edge_attr.double()
    widths = layer_sizes(batch.to_data_list()[0])
    width = int(batch.kernel_width[0])
    conv = make_conv(width, 2, widths)
    x_out, e_out = conv(x, batch.edge_index, edge_attr, batch)
    folded = WeightSpace.from_graph(batch).map(torch.Tensor.double).fold_kernels(width)
    assert folded.allclose(dense_of(batch, x, edge_attr), atol=0)  # the folding convention
    assert_close_ws(dense_of(batch, x_out, e_out), conv.forward_dense(folded), 1e-10)


def test_graph_matches_dense_float32():
    widths = [3, 6, 4, 2]
    batch = structure_batch([mlp(widths) for _ in range(2)])
    x, edge_attr = random_features(batch, 3, dtype=torch.float32)
    check_against_dense(make_conv(3, 2, widths, dtype=torch.float32), batch, x, edge_attr,
                        atol=1e-5)


@pytest.mark.parametrize("widths", [[3, 5, 2], [2, 4, 3, 3], [3, 6, 4, 5, 2], [1, 8, 16, 10]])
def test_grid_path_equals_the_reference(widths):
    """On a batch of complete networks of one architecture HNPConv takes the grid
    path; the message-passing reference (forced by an index without the grid
    part) gives the same map, gradients included (float64)."""
    batch = structure_batch([mlp(widths) for _ in range(3)])
    x, edge_attr = random_features(batch, 3)
    x[batch.node_layer == 0] = 0.0
    conv = make_conv(3, 2, widths)
    outputs, gradients = [], []
    for force_reference in (False, True):
        index = WeightGraphIndex.from_data(batch)
        if force_reference:
            index.parts["grid"] = None
        inputs = (x.clone().requires_grad_(), edge_attr.clone().requires_grad_())
        conv.zero_grad()
        out = conv(inputs[0], batch.edge_index, inputs[1], index)
        assert (index.parts["grid"] is None) == force_reference
        assert ("hnp_conv" in index.parts) == force_reference     # the reference's rows
        sum((o * torch.randn_like(o, generator=torch.Generator().manual_seed(i))).sum()
            for i, o in enumerate(out)).backward()
        outputs.append(out)
        gradients.append([t.grad for t in inputs] + [p.grad for p in conv.parameters()])
    for got, want in zip(*outputs):
        torch.testing.assert_close(got, want, atol=1e-10, rtol=0)
    for got, want in zip(*gradients):
        torch.testing.assert_close(got, want, atol=1e-10, rtol=0)


@pytest.mark.parametrize("hidden", [[[4], [7], [1]], [[3, 5], [6, 2], [2, 2]]])
def test_batch_mixing_hidden_widths(hidden):
    """One batch of several architectures (same depth and I/O): each graph's
    slice equals the dense twin of its own architecture and the graph op on
    the graph alone."""
    widths = [[3, *h, 2] for h in hidden]
    batch = structure_batch([mlp(w) for w in widths])
    x, edge_attr = random_features(batch, 2)
    conv = make_conv(2, 2, widths[0])
    x_out, e_out = check_against_dense(conv, batch, x, edge_attr)
    for (graph, xi, ei), (_, xo, eo) in zip(split_graphs(batch, x, edge_attr),
                                            split_graphs(batch, x_out, e_out)):
        alone = conv(xi, graph.edge_index, ei, graph)
        assert torch.allclose(alone[0], xo, atol=1e-12) and torch.allclose(alone[1], eo,
                                                                            atol=1e-12)


@pytest.mark.parametrize("modules", [
    [mlp([3, 4, 2]), mlp([3, 5, 2])],
    [mlp([2, 3, 4, 3]), mlp([2, 2, 5, 3])],
    [mlp([3, 4, 3, 2, 2]) for _ in range(2)],
    [cnn([2, 3, 4], [3, 1]), cnn([2, 3, 4], [3, 1])],
    [cnn([2, 3], [3], head=3)],
])
def test_equivariant_to_hidden_permutations(modules):
    batch = structure_batch(modules)
    channels = int(batch.edge_attr.size(1)) if isinstance(modules[0][0], torch.nn.Conv2d) else 2
    x, edge_attr = random_features(batch, channels)
    widths = layer_sizes(batch.to_data_list()[0])
    conv = make_conv(channels, 3, widths)
    node_map, edge_map = random_neuron_permutation(batch, "hidden")
    assert not torch.equal(node_map, torch.arange(node_map.numel()))
    x_out, e_out = conv(x, batch.edge_index, edge_attr, batch)
    x_perm, e_perm = conv(x[node_map], batch.edge_index, edge_attr[edge_map], batch)
    assert torch.allclose(x_perm, x_out[node_map], atol=1e-10)
    assert torch.allclose(e_perm, e_out[edge_map], atol=1e-10)


@pytest.mark.parametrize("widths", [[3, 4], [3, 4, 3], [4, 3, 5, 3]])
@pytest.mark.parametrize("which", ["input", "output"])
def test_not_equivariant_to_input_or_output_permutations(widths, which):
    """Input and output neurons are fixed by position: permuting them is not a
    symmetry of HNP (the position-typed maps tell them apart)."""
    batch = structure_batch([mlp(widths)])
    x, edge_attr = random_features(batch, 2)
    conv = make_conv(2, 2, widths)
    perms = [torch.arange(n) for n in widths]
    layer = 0 if which == "input" else len(widths) - 1
    perms[layer] = torch.roll(torch.arange(widths[layer]), 1)  # surely not the identity
    node_map, edge_map = index_maps(batch, NeuronPermutation(perms))
    x_out, e_out = conv(x, batch.edge_index, edge_attr, batch)
    x_perm, e_perm = conv(x[node_map], batch.edge_index, edge_attr[edge_map], batch)
    error = max((x_perm - x_out[node_map]).abs().max(), (e_perm - e_out[edge_map]).abs().max())
    assert error > 1e-3


def test_index_maps_match_module_permutation():
    """The helpers' index maps (from nft_pyg.symmetry) are what permuting the
    module by hand does to the graph: ``permuted_pair`` asserts that the
    permuted graph carries ``x[node_map]`` and ``edge_attr[edge_map]``."""
    for module in (mlp([3, 4, 5, 2]), cnn([2, 3, 4], [3, 1], head=3)):
        original, permuted, _, _ = permuted_pair(module)
        assert torch.equal(permuted.edge_index, original.edge_index)


TERM_CASES = [[3, 2], [3, 4, 2], [2, 3, 4, 3], [3, 4, 3, 4, 2]]


@pytest.mark.parametrize("widths", TERM_CASES)
def test_every_term_is_used(widths):
    batch = structure_batch([mlp(widths) for _ in range(2)])
    x, edge_attr = random_features(batch, 2)
    conv = make_conv(2, 2, widths)
    terms = conv.terms()
    # the terms partition the parameters: switching all off gives zero
    covered = {name: torch.zeros_like(p) for name, p in conv.named_parameters()}
    by_id = {id(p): name for name, p in conv.named_parameters()}
    for weight, columns in terms.values():
        covered[by_id[id(weight)]][..., columns] += 1
    assert all(torch.all(c == 1) for c in covered.values())

    x_out, e_out = conv(x, batch.edge_index, edge_attr, batch)
    for name, (weight, columns) in terms.items():
        ablated = copy.deepcopy(conv)
        ablated_weight = dict(ablated.named_parameters())[by_id[id(weight)]]
        with torch.no_grad():
            ablated_weight[..., columns] = 0
        x_abl, e_abl = ablated(x, batch.edge_index, edge_attr, batch)
        change = max((x_abl - x_out).abs().max(), (e_abl - e_out).abs().max())
        assert change > 1e-6, name
        dense = ablated.forward_dense(dense_of(batch, x, edge_attr))
        assert_close_ws(dense_of(batch, x_abl, e_abl), dense, 1e-10)


@pytest.mark.parametrize("widths", [[3, 4, 2], [2, 3, 4, 3]])
def test_last_bias_to_last_weight_term(widths):
    """``b_{L-1} -> W_L`` (absent from the official nfn code): with only this
    term on, W_L[i, j] depends on b_{L-1}[j] alone, through a map typed by i."""
    L = len(widths) - 1
    batch = structure_batch([mlp(widths)])
    conv = make_conv(2, 2, widths, bias=False)
    weight, columns = conv.terms()[f"W_{L} <- b_{L - 1}"]
    with torch.no_grad():
        kept = weight[:, columns].clone()
        for p in conv.parameters():
            p.zero_()
        weight[:, columns] = kept
    x, edge_attr = random_features(batch, 2)
    hidden = (batch.node_layer == L - 1).nonzero().view(-1)
    only = hidden[1]
    x_one = torch.zeros_like(x)
    x_one[only] = x[only]
    x_out, e_out = conv(x_one, batch.edge_index, edge_attr, batch)
    assert torch.all(x_out == 0)
    src, dst = batch.edge_index
    from_only = (batch.edge_layer == L) & (src == only)
    assert torch.all(e_out[~from_only] == 0)
    outputs = batch.node_pos[dst[from_only]]
    expected = (kept.view(widths[-1], 2, 2) @ x[only]).view(widths[-1], 2)[outputs]
    assert torch.allclose(e_out[from_only], expected, atol=1e-12)
    assert not torch.allclose(expected[0], expected[1])  # typed by the output row


def expected_parameter_count(c_in, c_out, L, n_in, n_out, bias=True):
    """The count of the docstring formula, term by term."""
    if L == 1:
        types = n_out * n_in + n_out
        return types * types * c_in * c_out + (types * c_out if bias else 0)
    types = n_in + 2 * n_out + 2 * L - 3
    width = {h: (n_in if h == 1 else 1) + 1 + (n_out if h == L - 1 else 1) for h in range(1, L)}
    count = types ** 2 + n_in * width[1] + n_out * width[L - 1] + sum(width.values())
    count += sum(1 + width[l - 1] + width[l] for l in range(2, L))
    return count * c_in * c_out + (types * c_out if bias else 0)


@pytest.mark.parametrize("L,n_in,n_out", [(1, 3, 2), (2, 3, 2), (2, 1, 1), (3, 4, 5),
                                          (5, 2, 3)])
def test_parameter_count(L, n_in, n_out):
    for bias in (True, False):
        conv = HNPConv(3, 2, L, n_in, n_out, bias=bias)
        count = sum(p.numel() for p in conv.parameters())
        assert count == expected_parameter_count(3, 2, L, n_in, n_out, bias)
    # hand-checked instances: L = 2, n_0 = 3, n_2 = 2 -> G = 8, s_1 = 6
    assert expected_parameter_count(1, 1, 2, 3, 2, False) == 64 + 18 + 12 + 6
    # L = 3, n_0 = 4, n_3 = 5 -> G = 17, s_1 = 6, s_2 = 7
    assert expected_parameter_count(1, 1, 3, 4, 5, False) == 289 + 24 + 35 + 13 + 14


def test_forward_backward_and_reset():
    widths = [3, 4, 2]
    batch = structure_batch([mlp(widths)])
    x, edge_attr = random_features(batch, 2)
    conv = make_conv(2, 3, widths)
    x_out, e_out = conv(x.requires_grad_(), batch.edge_index, edge_attr, batch)
    (x_out.sum() + e_out.sum()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in conv.parameters())
    before = conv.first_edge.weight.clone()
    conv.reset_parameters()
    assert not torch.equal(before, conv.first_edge.weight)
    assert repr(conv) == "HNPConv(2, 3, num_layers=2, num_inputs=3, num_outputs=2)"


def test_bad_inputs():
    widths = [3, 4, 2]
    batch = structure_batch([mlp(widths)])
    x, edge_attr = random_features(batch, 2)
    conv = make_conv(2, 2, widths)
    with pytest.raises(ValueError, match="HNPConv: expected x with 2 channels"):
        conv(x[:, :1], batch.edge_index, edge_attr, batch)
    with pytest.raises(ValueError, match="HNPConv: expected edge_attr with 2 channels"):
        conv(x, batch.edge_index, edge_attr[:, :1], batch)
    with pytest.raises(ValueError, match="HNPConv: x has 8 rows"):
        conv(x[:8], batch.edge_index, edge_attr, batch)
    with pytest.raises(ValueError, match="num_layers=2"):
        deeper = structure_batch([mlp([3, 4, 4, 2])])
        conv(*_pyg_args(random_features(deeper, 2), deeper))
    with pytest.raises(ValueError, match="num_layers=2"):
        shallower = structure_batch([mlp([3, 2])])
        conv(*_pyg_args(random_features(shallower, 2), shallower))
    with pytest.raises(ValueError, match=r"depths \[2, 3\]"):
        mixed = structure_batch([mlp([3, 4, 2]), mlp([3, 4, 4, 2])])
        make_conv(2, 2, [3, 4, 4, 2])(*_pyg_args(random_features(mixed, 2), mixed))
    with pytest.raises(ValueError, match="num_inputs=3"):
        other = structure_batch([mlp([2, 4, 2])])
        conv(*_pyg_args(random_features(other, 2), other))
    with pytest.raises(ValueError, match="num_outputs=2"):
        other = structure_batch([mlp([3, 4, 5])])
        conv(*_pyg_args(random_features(other, 2), other))
    with pytest.raises(ValueError, match="HNPConv: the graph has no node_pos"):
        broken = batch.clone()
        del broken.node_pos
        conv(x, broken.edge_index, edge_attr, broken)
    with pytest.raises(TypeError, match=r"HNPConv: the fourth argument .*HNPConv\(x \[N, C\], "
                                        r"edge_index \[2, E\], edge_attr \[E, C\], index\)"):
        conv(x, batch.edge_index, edge_attr, None)
    ws = dense_of(batch, x, edge_attr)
    with pytest.raises(ValueError,
                       match="HNPConv.forward_dense: expected num_layers=3, the weight "
                             "space has 2"):
        make_conv(2, 2, [3, 4, 4, 2]).forward_dense(ws)
    with pytest.raises(ValueError, match="HNPConv.forward_dense: expected num_inputs=4"):
        make_conv(2, 2, [4, 4, 2]).forward_dense(ws)
    with pytest.raises(ValueError, match="HNPConv.forward_dense: expected channels=3"):
        make_conv(3, 2, widths).forward_dense(ws)
    with pytest.raises(ValueError, match="folded"):
        raw = WeightSpace.from_modules([cnn([2, 3, 4], [3, 1])])
        HNPConv(1, 1, 2, 2, 4).forward_dense(raw)
    with pytest.raises(ValueError, match="HNPConv: num_inputs must be >= 1"):
        HNPConv(2, 2, 2, 0, 2)


def commutant_dimension(widths):
    """``dim`` of the linear maps commuting with the hidden permutations:
    the mean over the group of (fixed coordinates of g)^2 (character formula)."""
    import itertools
    import math
    hidden = [list(itertools.permutations(range(n))) for n in widths[1:-1]]
    total = 0
    for perms in itertools.product(*hidden):
        fixed = [widths[0]] + [sum(p[k] == k for k in range(len(p))) for p in perms] + \
            [widths[-1]]
        coords = sum(fixed[l] * fixed[l - 1] + fixed[l] for l in range(1, len(widths)))
        total += coords ** 2
    return total // math.prod(math.factorial(n) for n in widths[1:-1])


def unit_weight_spaces(widths):
    """A batch of ``D`` networks, network ``k`` the ``k``-th unit vector of V."""
    sizes = [n * m + n for n, m in zip(widths[1:], widths[:-1])]
    eye = torch.eye(sum(sizes), dtype=torch.float64)
    weights, biases = [], []
    for block, n, m in zip(eye.split(sizes, dim=1), widths[1:], widths[:-1]):
        weights.append(block[:, : n * m].reshape(-1, 1, n, m))
        biases.append(block[:, n * m:].reshape(-1, 1, n))
    return WeightSpace(weights, biases)


@pytest.mark.parametrize("widths", [[2, 2], [2, 3, 2], [2, 3, 2, 3], [1, 2, 3, 2, 2]])
def test_spans_all_equivariant_linear_maps(widths):
    """The parameters map injectively onto a space of the dimension of all
    linear maps that commute with the hidden permutations; with the
    equivariance tests this shows the basis is complete and independent."""
    conv = make_conv(1, 1, widths, bias=False)
    basis = unit_weight_spaces(widths)
    params = list(conv.parameters())
    count = sum(p.numel() for p in params)
    maps = []
    with torch.no_grad():
        for k in range(count):
            torch.nn.utils.vector_to_parameters(
                torch.nn.functional.one_hot(torch.tensor(k), count).double(), params)
            out = conv.forward_dense(basis)
            maps.append(torch.cat([t.flatten(1) for t in out.weights + out.biases], 1).flatten())
    rank = int(torch.linalg.matrix_rank(torch.stack(maps)))
    assert rank == count == commutant_dimension(widths)


# --- pruned graphs (missing edges) -------------------------------------------------
def pruned_batch(modules, keep: float, channels: int, seed: int = 0):
    """Each network's graph with a random ``1 - keep`` of its edges removed (at
    least one per weight layer), batched, with random float64 features."""
    from torch_geometric.data import Batch
    torch.manual_seed(seed)
    batch = Batch.from_data_list([drop_edges(nft_pyg.from_module(m), keep)[0]
                                  for m in modules])
    x, edge_attr = random_features(batch, channels)
    return batch, x, edge_attr


def presence_mask(graph) -> list[torch.Tensor]:
    """Per weight layer ``[B, n_l, n_{l-1}]``: true where the graph has the edge."""
    ones = WeightSpace.from_features(graph, torch.zeros(graph.num_nodes, 1, dtype=torch.float64),
                                     torch.ones(graph.edge_index.size(1), 1,
                                                dtype=torch.float64))
    return [w[:, 0] > 0 for w in ones.weights]


def check_pruned_against_dense(conv, batch, x, edge_attr, atol=1e-10):
    x_out, e_out = conv(x, batch.edge_index, edge_attr, batch)
    for (graph, xi, ei), (_, xo, eo) in zip(split_graphs(batch, x, edge_attr),
                                            split_graphs(batch, x_out, e_out)):
        expected = conv.forward_dense(dense_of(graph, xi, ei), presence_mask(graph))
        assert_close_ws(dense_of(graph, xo, eo), expected, atol)
    return x_out, e_out


PRUNED_CASES = [  # widths, batch size, keep
    ([3, 4], 2, 0.5),
    ([3, 5, 4], 2, 0.4),
    ([2, 6, 5, 3], 3, 0.3),
    ([2, 6, 5, 3], 2, 0.8),
    ([3, 4, 6, 5, 4], 2, 0.3),
    ([1, 8, 16, 10], 2, 0.1),  # the CNN zoo's neuron layers, 90 % pruned
]


@pytest.mark.parametrize("widths,batch_size,keep", PRUNED_CASES)
def test_pruned_graph_matches_masked_dense(widths, batch_size, keep):
    """On a pruned graph every mean runs over the edges that exist: the dense
    twin with the presence mask computes the same map (absent weights zero)."""
    batch, x, edge_attr = pruned_batch([mlp(widths) for _ in range(batch_size)], keep, 3)
    conv = make_conv(3, 2, widths)
    check_pruned_against_dense(conv, batch, x, edge_attr)


def test_pruned_mixed_widths_and_term_ablation():
    """Mixed hidden widths, pruned; each term still used and still matched."""
    modules = [mlp([3, 5, 4, 2]), mlp([3, 2, 6, 2]), mlp([3, 4, 4, 2])]
    batch, x, edge_attr = pruned_batch(modules, 0.5, 2, seed=1)
    conv = make_conv(2, 2, [3, 5, 4, 2])
    x_out, e_out = check_pruned_against_dense(conv, batch, x, edge_attr)
    by_id = {id(p): name for name, p in conv.named_parameters()}
    for name, (weight, columns) in conv.terms().items():
        ablated = copy.deepcopy(conv)
        with torch.no_grad():
            dict(ablated.named_parameters())[by_id[id(weight)]][..., columns] = 0
        x_abl, e_abl = check_pruned_against_dense(ablated, batch, x, edge_attr)
        assert max((x_abl - x_out).abs().max(), (e_abl - e_out).abs().max()) > 1e-6, name


@pytest.mark.parametrize("widths", [[3, 4, 5, 3], [3, 4, 3]])
@pytest.mark.parametrize("prune_first,prune_last", [(True, False), (False, True),
                                                    (True, True)])
def test_pruned_fixed_ends_match_masked_dense(prune_first, prune_last, widths):
    """W_1 / W_L pruned alone or together (absent entries are zero slots of the
    by-position parts of s(v)): the reference path matches the masked dense twin,
    also when every hidden neuron keeps an edge there."""
    from torch_geometric.data import Batch

    graphs = []
    for _ in range(2):
        graph = nft_pyg.from_module(mlp(widths))
        src, dst = graph.edge_index
        keep = torch.ones(graph.num_edges, dtype=torch.bool)
        # drop one edge per hidden neuron: every neuron keeps the others
        if prune_first:
            keep &= ~((graph.edge_layer == 1) & (graph.node_pos[src] == 0))
        if prune_last:
            keep &= ~((graph.edge_layer == len(widths) - 1) & (graph.node_pos[dst] == 1))
        graph.edge_index = graph.edge_index[:, keep]
        for key in ("edge_attr", "edge_layer", "edge_kind"):
            graph[key] = graph[key][keep]
        graphs.append(graph)
    batch = Batch.from_data_list(graphs)
    x, edge_attr = random_features(batch, 2)
    conv = make_conv(2, 3, widths)
    check_pruned_against_dense(conv, batch, x, edge_attr)
    index = WeightGraphIndex.from_data(batch)
    conv(x, batch.edge_index, edge_attr, index)
    assert index.parts["grid"] is None and "hnp_conv" in index.parts   # the reference path


@pytest.mark.parametrize("widths", [[3, 4, 2], [2, 5, 4, 3]])
def test_pruned_graph_equivariance_and_absent_is_not_zero(widths):
    batch, x, edge_attr = pruned_batch([mlp(widths) for _ in range(2)], 0.4, 2, seed=2)
    conv = make_conv(2, 2, widths)
    x_out, e_out = conv(x, batch.edge_index, edge_attr, batch)
    batch.x, batch.edge_attr = x, edge_attr
    permuted, node_map, edge_map, _ = permuted_graph(batch)
    x_perm, e_perm = conv(permuted.x, permuted.edge_index, permuted.edge_attr, permuted)
    assert torch.allclose(x_perm, x_out[node_map], atol=1e-10)
    assert torch.allclose(e_perm, e_out[edge_map], atol=1e-10)
    # the same weights with the missing ones present as zeros: a different map
    full = structure_batch([mlp(widths) for _ in range(2)])
    ws = dense_of(batch, x, edge_attr)
    x_full, e_full = conv(*_pyg_args(_features_of(ws, full), full))
    present = presence_mask(batch)[-1].unsqueeze(1)
    on_zeros = dense_of(full, x_full, e_full).weights[-1] * present
    assert (on_zeros - dense_of(batch, x_out, e_out).weights[-1]).abs().max() > 1e-6


def _features_of(ws: WeightSpace, graph):
    """``(x, edge_attr)`` of ``graph``'s structure holding ``ws`` (zeros included)."""
    batch = ws.to_graph()
    return batch.x, batch.edge_attr
