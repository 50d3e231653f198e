"""Neuron permutations: every path (module, state dict, graph, WeightSpace) agrees."""
from __future__ import annotations

import copy
import random

import pytest
import torch
from architectures import (
    assert_graphs_equal,
    leaf_types,
    random_architecture,
    random_cnn,
    random_mlp,
    randomize,
)
from symmetry_helpers import DOUBLE, norm_cnn, norm_mlp
from torch import nn
from torch_geometric.data import Batch

from nft_pyg import WeightSpace, from_module, to_state_dict
from nft_pyg.graph.convert import layout_of
from nft_pyg.graph.modules import Sine
from nft_pyg.symmetry import (
    NeuronPermutation,
    is_type_preserving_isomorphic,
    permute,
    permute_features,
    random_permutation,
)

SEEDS = range(30)


def network(seed: int) -> tuple[nn.Module, torch.Tensor]:
    """Seeds 0, 1: hand-made nets with trained norm statistics; others random."""
    if seed == 0:
        return norm_mlp(seed)
    if seed == 1:
        return norm_cnn(seed)
    kinds = ("mlp", "cnn1d", "cnn2d", "cnn3d", "custom", "nested")
    return random_architecture(random.Random(seed), kinds=kinds, dtype=DOUBLE)


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(1000 + seed)


def nontrivial_permutation(module: nn.Module, seed: int, permute_io: bool = False):
    """A random permutation, redrawn a few times to avoid the identity."""
    gen = generator(seed)
    perm = random_permutation(module, gen, permute_io=permute_io)
    for _ in range(10):
        if not perm.is_identity():
            break
        perm = random_permutation(module, gen, permute_io=permute_io)
    return perm


# --- NeuronPermutation ----------------------------------------------------------
def test_neuron_permutation_basics():
    perm = NeuronPermutation([[0, 1], [2, 0, 1], [1, 0, 2, 3], [0]])
    assert perm.sizes == [2, 3, 4, 1] and perm.num_layers == 3 and len(perm) == 4
    assert perm.preserves_io and not perm.is_identity()
    assert perm.then(perm.inverse()).is_identity()
    assert perm.inverse().then(perm) == NeuronPermutation.identity([2, 3, 4, 1])
    assert perm[1].tolist() == [2, 0, 1]
    assert not NeuronPermutation([[1, 0], [0]]).preserves_io
    with pytest.raises(ValueError, match="layer 1 is not a permutation"):
        NeuronPermutation([[0], [0, 0]])
    with pytest.raises(ValueError, match="at least 2"):
        NeuronPermutation([[0, 1]])


def test_random_permutation_objects_and_io():
    module, _ = random_mlp(3, depth=3, in_features=4, out_features=5)
    graph = from_module(module)
    sizes = layout_of(module).neuron_layer_sizes
    for obj in (module, graph, layout_of(module), WeightSpace.from_modules([module]), sizes):
        perm = random_permutation(obj, generator(0))
        assert perm.sizes == sizes and perm.preserves_io
    # same generator state -> same permutation
    assert random_permutation(module, generator(5)) == random_permutation(graph, generator(5))
    io = [random_permutation(module, generator(s), permute_io=True) for s in range(10)]
    assert any(not p.preserves_io for p in io)
    batch = Batch.from_data_list([graph, from_module(random_mlp(4)[0])])
    perms = random_permutation(batch, generator(0))
    assert isinstance(perms, list) and [p.sizes for p in perms] == [
        g.layout_obj.neuron_layer_sizes for g in batch.to_data_list()]
    with pytest.raises(TypeError, match="random_permutation"):
        random_permutation("not a network")


def test_composition_matches_repeated_permutation():
    module, _ = random_cnn(7, dim=2, head="spatial", dtype=DOUBLE)
    graph = from_module(module)
    a, b = random_permutation(graph, generator(1)), random_permutation(graph, generator(2))
    assert_graphs_equal(permute(permute(graph, a), b), permute(graph, a.then(b)))
    assert_graphs_equal(permute(permute(graph, a), a.inverse()), graph)


# --- every path computes the same permuted network -------------------------------
def test_the_seeded_networks_cover_the_supported_modules():
    used = set().union(*(leaf_types(network(seed)[0]) for seed in SEEDS))
    needed = {Sine, nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.BatchNorm1d,
              nn.BatchNorm2d, nn.LayerNorm, nn.Flatten, nn.MaxPool2d}
    assert needed <= used, needed - used
    kinds = {layer.kind + ("-flatten" if layer.kernel_shape and layer.kind == "linear" else "")
             for seed in SEEDS for layer in layout_of(network(seed)[0]).weight_layers()}
    assert kinds == {"linear", "linear-flatten", "conv"}
    assert any(not layer.bias for seed in SEEDS
               for layer in layout_of(network(seed)[0]).weight_layers())


@pytest.mark.parametrize("seed", SEEDS)
def test_permuted_module_computes_same_function(seed):
    module, example = network(seed)
    perm = nontrivial_permutation(module, seed)
    permuted = permute(module, perm).eval()
    with torch.no_grad():
        torch.testing.assert_close(permuted(example), module(example), atol=1e-10, rtol=0)
    if not perm.is_identity():
        before, after = module.state_dict(), permuted.state_dict()
        assert any(not torch.equal(before[k], after[k]) for k in before)
    assert type(permuted) is type(module) and permuted is not module


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("permute_io", [False, True])
def test_graph_state_dict_and_weight_space_paths_agree(seed, permute_io):
    module, _ = network(seed)
    perm = nontrivial_permutation(module, seed, permute_io)
    layout = layout_of(module)
    permuted_module = permute(module, perm)
    expected = from_module(permuted_module)
    assert_graphs_equal(permute(from_module(module), perm), expected)

    state = permute((module.state_dict(), layout), perm)
    assert state.keys() == permuted_module.state_dict().keys()
    for key, value in permuted_module.state_dict().items():
        assert torch.equal(state[key], value), key

    space = permute(WeightSpace.from_modules([module]), perm)
    reference = WeightSpace.from_modules([permuted_module])
    assert all(torch.equal(a, b) for a, b in zip(space.weights + space.biases,
                                                   reference.weights + reference.biases))
    folded = permute(WeightSpace.from_modules([module]).fold_kernels(), perm)
    assert folded.allclose(reference.fold_kernels(), rtol=0, atol=0)


@pytest.mark.parametrize("seed", range(2, 12))
def test_permute_io_breaks_the_function_but_relabels_it(seed):
    module, _ = random_mlp(random.Random(seed), in_features=4, out_features=3, norms=False,
                           dtype=DOUBLE)
    perm = random_permutation(module, generator(seed), permute_io=True)
    while _is_identity(perm[0]) or _is_identity(perm[-1]):
        perm = random_permutation(module, generator(seed + 100 * perm.num_layers), True)
        seed += 1
    permuted = permute(module, perm)
    example = torch.randn(5, 4, dtype=DOUBLE)
    with torch.no_grad():
        assert not torch.allclose(permuted(example), module(example), atol=1e-6)
        # new input p is old input perm[0][p], new output q is old output perm[-1][q]
        relabelled = example.new_empty(example.shape)
        relabelled[:, torch.arange(4)] = example[:, perm[0]]
        torch.testing.assert_close(permuted(relabelled), module(example)[:, perm[-1]],
                                   atol=1e-10, rtol=0)


def _is_identity(p: torch.Tensor) -> bool:
    return torch.equal(p, torch.arange(p.numel()))


# --- graphs with features, batches, pruned graphs ---------------------------------
def test_feature_graph_and_permute_features_match_dense_permutation():
    module, _ = random_cnn(3, dim=2, head="spatial", dtype=DOUBLE)
    graph = from_module(module)
    x = torch.randn(graph.num_nodes, 7, dtype=DOUBLE)
    edges = torch.randn(graph.num_edges, 7, dtype=DOUBLE)
    perm = nontrivial_permutation(module, 3, permute_io=True)
    carried = graph.clone()
    carried.x, carried.edge_attr = x, edges
    permuted = permute(carried, perm)
    x_new, edges_new = permute_features(graph, x, edges, perm)
    assert torch.equal(permuted.x, x_new) and torch.equal(permuted.edge_attr, edges_new)
    assert torch.equal(permuted.edge_index, graph.edge_index)
    assert torch.equal(permuted.node_pos, graph.node_pos)
    # independent reference: dense index_select on the tensor formulation
    dense = permute(WeightSpace.from_features(graph, x, edges), perm)
    ref_x, ref_edges = dense.graph_features()
    inputs = graph.node_layer == 0
    assert torch.equal(x_new[~inputs], ref_x[0][~inputs]) and torch.equal(edges_new, ref_edges[0])
    assert torch.equal(x_new[inputs], x[inputs][perm[0]])


def test_batch_of_mixed_architectures_one_permutation_each():
    graphs = [from_module(network(seed)[0], kernel_width=27) for seed in (1, 4, 5, 6)]
    graphs = [g for g in graphs if g.kernel_width.item() == 27]
    batch = Batch.from_data_list(graphs)
    perms = random_permutation(batch, generator(0))
    x = torch.randn(batch.num_nodes, 3, dtype=DOUBLE)
    x_new, edges_new = permute_features(batch, x, batch.edge_attr, perms)
    x_parts = x.split([g.num_nodes for g in graphs])
    singles = [permute_features(g, xs, g.edge_attr, p) for g, xs, p in zip(graphs, x_parts, perms)]
    assert torch.equal(x_new, torch.cat([s[0] for s in singles]))
    assert torch.equal(edges_new, torch.cat([s[1] for s in singles]))
    permuted = permute(batch, perms)
    assert isinstance(permuted, Batch)
    for got, graph, perm in zip(permuted.to_data_list(), graphs, perms):
        assert_graphs_equal(got, permute(graph, perm))
    with pytest.raises(ValueError, match="one per graph"):
        permute_features(batch, x, None, perms[:-1])


def test_pruned_graph():
    module, _ = random_mlp(8, depth=3, in_features=3, out_features=2, dtype=DOUBLE)
    graph = from_module(module)
    keep = torch.rand(graph.num_edges, generator=generator(0)) < 0.6
    pruned = graph.clone()
    for key in ("edge_index", "edge_attr", "edge_layer", "edge_kind"):
        value = graph[key]
        pruned[key] = value[:, keep] if key == "edge_index" else value[keep]
    perm = nontrivial_permutation(module, 8)
    got = permute(pruned, perm)
    expected_state = permute((to_state_dict(pruned), graph.layout), perm)
    for key, value in to_state_dict(got).items():
        assert torch.equal(value, expected_state[key]), key
    key = got.edge_layer * 10 ** 6 + got.edge_index[1] * 1000 + got.edge_index[0]
    assert bool((key[1:] > key[:-1]).all())  # canonical order: layer, target, source


def test_permutation_size_errors():
    module, _ = random_mlp(2, depth=2, in_features=3, out_features=2)
    graph = from_module(module)
    wrong = NeuronPermutation.identity([3, 9, 2])
    for obj in (graph, module, WeightSpace.from_modules([module])):
        with pytest.raises(ValueError, match="neuron layer sizes"):
            permute(obj, wrong)
    with pytest.raises(ValueError, match="rows"):
        permute_features(graph, torch.zeros(1, 1), None, random_permutation(graph))
    with pytest.raises(TypeError, match="permute"):
        permute([1, 2], random_permutation(graph))


# --- isomorphism ------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5, 6, 7])
def test_permuted_graph_is_isomorphic_but_not_identical(seed):
    module, _ = network(seed)
    graph = from_module(module)
    perm = nontrivial_permutation(module, seed)
    permuted = permute(graph, perm)
    assert is_type_preserving_isomorphic(graph, permuted)
    if not perm.is_identity():
        assert not (torch.equal(graph.x, permuted.x) and
                    torch.equal(graph.edge_attr, permuted.edge_attr) and
                    torch.equal(graph.node_norm, permuted.node_norm))


def test_isomorphism_tells_networks_apart():
    module, _ = random_mlp(11, depth=3, in_features=3, out_features=3, norms=False,
                           dtype=DOUBLE)
    graph = from_module(module)
    changed = graph.clone()
    changed.edge_attr[4, 0] += 1.0
    assert not is_type_preserving_isomorphic(graph, changed)
    assert is_type_preserving_isomorphic(graph, changed, check_features=False)
    # input/output neurons are typed by position: an io relabelling is not an isomorphism
    io = NeuronPermutation([[1, 0, 2], *[torch.arange(n) for n in graph_sizes(graph)[1:]]])
    assert not is_type_preserving_isomorphic(graph, permute(graph, io))
    other, _ = random_mlp(12, depth=2, in_features=3, out_features=3, norms=False)
    assert not is_type_preserving_isomorphic(graph, from_module(other), check_features=False)


def graph_sizes(graph) -> list[int]:
    return graph.layout_obj.neuron_layer_sizes


def test_weight_space_batch_with_one_permutation_per_network():
    module, _ = random_mlp(20, depth=3, in_features=3, out_features=2, dtype=DOUBLE)
    modules = [randomize(copy.deepcopy(module), seed) for seed in range(3)]
    perms = [random_permutation(module, generator(s)) for s in range(3)]
    space = permute(WeightSpace.from_modules(modules), perms)
    reference = WeightSpace.from_modules([permute(m, p) for m, p in zip(modules, perms)])
    assert space.allclose(reference, rtol=0, atol=0)
    assert not space.allclose(permute(WeightSpace.from_modules(modules), perms[0]))


def test_permute_features_is_differentiable():
    module, _ = random_mlp(5, depth=3, in_features=2, out_features=2, dtype=DOUBLE)
    graph = from_module(module)
    x = torch.randn(graph.num_nodes, 2, dtype=DOUBLE, requires_grad=True)
    weights = torch.randn(graph.num_nodes, 2, dtype=DOUBLE)
    perm = random_permutation(graph, generator(0), permute_io=True)
    x_new, _ = permute_features(graph, x, None, perm)
    weights_new, _ = permute_features(graph, weights, None, perm)
    (x_new * weights_new).sum().backward()
    torch.testing.assert_close(x.grad, weights, atol=0, rtol=0)
