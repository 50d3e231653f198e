"""Pruned networks <-> pruned neuron graphs: exact round trips, validity, errors."""
import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune
from torch_geometric.data import Batch

from nft_pyg import from_module, to_module
from nft_pyg.graph.pruning import (
    EDGE_MASK,
    apply_masks,
    entry_mask_to_masks,
    from_pruned_module,
    masks_to_entry_mask,
    prune,
    sparsity,
    to_pruned_module,
    to_pruned_state_dict,
)
from nft_pyg.graph.validate import validate
from nft_pyg.symmetry import permute, permute_features, random_permutation


def _mlp():
    return nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 6), nn.Tanh(),
                         nn.Linear(6, 3, bias=False)).double()


def _cnn():
    return nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Conv2d(3, 4, 2), nn.ReLU(),
                         nn.Flatten(), nn.Linear(4 * 3 * 3, 5), nn.ReLU(),
                         nn.Linear(5, 3)).double()


def _random_masks(module, keep, generator):
    return {key: torch.rand(value.shape, generator=generator) < keep
            for key, value in module.state_dict().items() if key.endswith("weight")}


def _inputs(module):
    return torch.randn(4, 5, dtype=torch.double) if isinstance(module[0], nn.Linear) \
        else torch.randn(4, 2, 6, 6, dtype=torch.double)


def _same_graph(a, b):
    assert set(a.keys()) == set(b.keys())
    for key in a.keys():
        if isinstance(a[key], torch.Tensor):
            assert torch.equal(a[key], b[key]), key
        else:
            assert a[key] == b[key], key


@pytest.mark.parametrize("make", [_mlp, _cnn])
@pytest.mark.parametrize("keep", [0.0, 0.3, 1.0])
def test_round_trip_is_exact(make, keep):
    generator = torch.Generator().manual_seed(1)
    module = make()
    masks = _random_masks(module, keep, generator)
    graph = from_pruned_module(module, masks)
    validate(graph)
    kept = sum(int(m.sum()) for m in masks.values())
    assert int(graph[EDGE_MASK].sum()) == kept
    state, back = to_pruned_state_dict(graph)
    for key, mask in masks.items():
        assert torch.equal(back[key], mask)
        expected = torch.where(mask, module.state_dict()[key], torch.zeros((), dtype=torch.double))
        assert torch.equal(state[key], expected)
    rebuilt, flat_masks = to_pruned_module(graph)
    # the flat module carries the same names here (nn.Sequential), so everything is equal
    _same_graph(from_pruned_module(rebuilt, flat_masks), graph)
    reference = apply_masks(copy.deepcopy(module), masks)
    x = _inputs(module)
    assert torch.equal(rebuilt(x), reference(x))
    assert sparsity(graph) == pytest.approx(
        1 - kept / sum(m.numel() for m in masks.values()))


def test_pruned_edges_are_missing_and_partial_kernels_stay():
    module = _cnn()
    masks = {key: torch.ones_like(v, dtype=torch.bool)
             for key, v in module.state_dict().items() if key.endswith("weight")}
    masks["0.weight"][1, 0] = False          # the whole kernel of edge (in 0 -> out 1)
    masks["0.weight"][2, 1, 0, 0] = False     # one entry of edge (in 1 -> out 2)
    masks["7.weight"][0, 4] = False           # one linear weight
    dense, graph = from_module(module), from_pruned_module(module, masks)
    assert graph.num_edges == dense.num_edges - 2
    edges = {tuple(e) for e in graph.edge_index.t().tolist()}
    assert (0, 2 + 1) not in edges                     # dropped conv edge
    partial = graph.edge_index.t().tolist().index([1, 2 + 2])
    assert not graph[EDGE_MASK][partial, 0] and graph[EDGE_MASK][partial, 1:9].all()
    assert graph.edge_attr[partial, 0] == 0 and not graph[EDGE_MASK][partial, 9:].any()


def test_kept_zero_weight_is_not_a_pruned_weight():
    module = _mlp()
    with torch.no_grad():
        module[0].weight[0, 0] = 0.0
    masks = {"0.weight": torch.ones(7, 5, dtype=torch.bool)}
    masks["0.weight"][0, 1] = False
    graph = from_pruned_module(module, masks)
    assert graph.num_edges == from_module(module).num_edges - 1
    assert torch.equal(to_pruned_state_dict(graph)[1]["0.weight"], masks["0.weight"])


def test_torch_prune_buffers_are_read():
    module = _cnn()
    torch_prune.l1_unstructured(module[0], "weight", amount=0.5)
    torch_prune.random_unstructured(module[5], "weight", amount=0.7)
    graph = from_pruned_module(module)
    _, masks = to_pruned_state_dict(graph)
    assert torch.equal(masks["0.weight"], module[0].weight_mask.bool())
    assert torch.equal(masks["5.weight"], module[5].weight_mask.bool())
    assert masks["2.weight"].all()
    rebuilt, _ = to_pruned_module(graph)
    x = _inputs(module)
    assert torch.equal(rebuilt(x), module(x))


def test_prune_combines_masks_and_restricts_edge_attributes():
    graph = from_module(_mlp())
    graph.weight_id = torch.arange(graph.num_edges)
    generator = torch.Generator().manual_seed(0)
    first = torch.rand(graph.num_edges, generator=generator) < 0.6
    once = prune(graph, first)
    assert torch.equal(once.weight_id, torch.arange(graph.num_edges)[first])
    second = torch.rand(once.num_edges, generator=generator) < 0.5
    twice = prune(once, second.long())
    both = first.clone()
    both[first] = second
    _same_graph(twice, prune(graph, both))
    validate(twice)


def test_entry_masks_round_trip_through_layer_masks():
    module = _cnn()
    masks = _random_masks(module, 0.4, torch.Generator().manual_seed(3))
    layout = from_module(module).layout
    entry = masks_to_entry_mask(masks, layout)
    assert entry.shape == (from_module(module).num_edges, 9)
    back = entry_mask_to_masks(entry, layout)
    assert all(torch.equal(back[key], masks[key]) for key in masks)


def test_pruning_commutes_with_hidden_permutations():
    module = _cnn()
    graph = from_module(module)
    mask = torch.rand(graph.num_edges, 9) < 0.5
    perm = random_permutation(graph, generator=torch.Generator().manual_seed(2))
    _, moved_mask = permute_features(graph, None, mask, perm)
    _same_graph(prune(permute(graph, perm), moved_mask), permute(prune(graph, mask), perm))


def test_batches_of_pruned_graphs_validate_and_split_back():
    graphs = [from_pruned_module(make(), _random_masks(make(), 0.5,
                                                       torch.Generator().manual_seed(i)))
              for i, make in enumerate([_mlp, _mlp])]
    batch = Batch.from_data_list(graphs)
    validate(batch)
    for original, back in zip(graphs, batch.to_data_list()):
        _same_graph(original, back)
    assert to_module(back) is not None


def test_errors():
    graph = from_module(_mlp())
    with pytest.raises(ValueError, match="mask has shape"):
        prune(graph, torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="only 0 and 1"):
        prune(graph, torch.full((graph.num_edges,), 0.5))
    with pytest.raises(ValueError, match="batch"):
        prune(Batch.from_data_list([graph, graph]), torch.ones(2 * graph.num_edges))
    with pytest.raises(KeyError, match="name no weight"):
        from_pruned_module(_mlp(), {"9.weight": torch.ones(1)})
    with pytest.raises(ValueError, match="has shape"):
        from_pruned_module(_mlp(), {"0.weight": torch.ones(5, 7, dtype=torch.bool)})
