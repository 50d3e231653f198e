"""collate_graphs / GraphLoader give exactly what Batch.from_data_list /
PyG's DataLoader give: every attribute, batch, ptr, slices, increments,
to_data_list(), get_example and slicing."""
import pytest
import torch
from architectures import assert_graphs_equal, random_architectures
from torch import nn
from torch_geometric.data import Batch, Data
from torch_geometric.loader import DataLoader

import nft_pyg
from nft_pyg.graph import collate as fast_collate
from nft_pyg.graph.collate import GraphLoader, collate_graphs
from nft_pyg.graph.modules import Sine
from nft_pyg.graph.pruning import prune
from nft_pyg.transforms import PadKernels


def assert_same_value(actual, expected, what):
    if isinstance(expected, torch.Tensor):
        assert isinstance(actual, torch.Tensor), what
        assert actual.dtype == expected.dtype and actual.shape == expected.shape, what
        assert torch.equal(actual, expected), what
    else:
        assert actual == expected, what


def assert_batches_identical(batch, expected):
    assert type(batch) is type(expected)
    assert list(batch.keys()) == list(expected.keys())
    for key in expected.keys():
        assert_same_value(batch[key], expected[key], key)
    assert batch.num_graphs == expected.num_graphs
    assert batch.num_nodes == expected.num_nodes
    assert batch._store.__dict__.get("_num_nodes") == expected._store.__dict__.get("_num_nodes")
    for name in ("_slice_dict", "_inc_dict"):
        got, want = getattr(batch, name), getattr(expected, name)
        assert list(got) == list(want), name
        for key in want:
            assert_same_value(got[key], want[key], f"{name}[{key}]")
    graphs, wanted = batch.to_data_list(), expected.to_data_list()
    assert len(graphs) == len(wanted)
    for graph, want in zip(graphs, wanted):
        assert type(graph) is type(want)
        assert_graphs_equal(graph, want)
    count = expected.num_graphs
    picks = [count - 1, 0] if count > 1 else [0]
    for graph, want in zip(batch[picks], expected[picks]):
        assert_graphs_equal(graph, want)
    for graph, want in zip(batch[1:], expected[1:]):
        assert_graphs_equal(graph, want)
    assert_graphs_equal(batch.get_example(count - 1), expected.get_example(count - 1))


def siren(widths=(2, 8, 8, 1)):
    layers = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers += [nn.Linear(a, b)] + ([Sine(30.0)] if i < len(widths) - 2 else [])
    return nn.Sequential(*layers)


def zoo_cnn():
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 6, 3), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3))


def mixed(seed=0, count=10):
    graphs = [nft_pyg.from_module(m) for m, _ in random_architectures(seed, count)]
    width = max(int(g.kernel_width) for g in graphs)
    return [PadKernels(width)(g) for g in graphs]


def check(graphs, fast=True):
    """Compares with PyG; ``fast`` says whether collate_graphs must not hand off."""
    expected = Batch.from_data_list(graphs)
    if fast:
        assert fast_collate._collated(graphs) is not None
    assert_batches_identical(collate_graphs(graphs), expected)


@pytest.mark.parametrize("count", [1, 2, 7])
def test_sirens_and_cnns(count):
    check([nft_pyg.from_module(siren()) for _ in range(count)])
    check([nft_pyg.from_module(zoo_cnn()) for _ in range(count)])


def test_mixed_layouts_and_widths():
    check(mixed())
    check([nft_pyg.from_module(siren((2, 3, 1))), nft_pyg.from_module(siren((1, 5, 5, 5, 2)))])


def test_pruned_graphs_with_edge_mask():
    graphs = []
    generator = torch.Generator().manual_seed(0)
    unpruned = mixed(seed=1, count=6) + [nft_pyg.from_module(zoo_cnn())]
    width = max(int(g.kernel_width) for g in unpruned)
    for graph in unpruned:
        graph = PadKernels(width)(graph)
        mask = torch.rand(graph.edge_attr.shape, generator=generator) < 0.6
        graphs.append(prune(graph, mask))
    assert len({g.edge_index.size(1) for g in graphs}) > 1
    assert all("edge_mask" in g.keys() for g in graphs)
    check(graphs)


def test_feature_graphs_and_extra_attributes():
    graphs = []
    for i, graph in enumerate(mixed(seed=2, count=5)):
        graph = graph.clone()
        graph.x = torch.randn(graph.num_nodes, 3, dtype=torch.float64)
        graph.y = torch.tensor([i])
        graph.score = torch.tensor(0.5 * i)          # 0-d: stacked
        graph.pair_index = torch.tensor([[0, 1], [2, 3]])  # shifted by the node count
        graphs.append(graph)
    check(graphs)


def test_graphs_without_a_stored_node_count():
    graphs = []
    for module in (siren(), siren((3, 4, 2))):
        graph = nft_pyg.from_module(module)
        graphs.append(nft_pyg.NeuronGraph(**{key: graph[key] for key in graph.keys()
                                             if key != "num_nodes"}))
    check(graphs)


def test_non_long_edge_index_keeps_pyg_type_promotion():
    graphs = [nft_pyg.from_module(siren()) for _ in range(3)]
    for graph in graphs:
        graph.edge_index = graph.edge_index.int()
    check(graphs)


def test_what_it_does_not_handle_goes_to_pyg():
    graphs = [nft_pyg.from_module(siren()) for _ in range(3)]
    plain = [Data(x=g.x, edge_index=g.edge_index) for g in graphs]
    assert fast_collate._collated(plain) is None
    assert_batches_identical(collate_graphs(plain), Batch.from_data_list(plain))
    scalars = [g.clone() for g in graphs]
    for i, graph in enumerate(scalars):
        graph.label = i  # a Python int: PyG makes a tensor of them
    check(scalars, fast=False)
    expected = Batch.from_data_list(graphs, follow_batch=["edge_attr"], exclude_keys=["layout"])
    assert_batches_identical(collate_graphs(graphs, ["edge_attr"], ["layout"]), expected)
    assert "edge_attr_batch" in expected.keys()


def test_mismatched_shapes_raise_like_pyg():
    graphs = [nft_pyg.from_module(siren()), nft_pyg.from_module(siren())]
    graphs[1].node_norm = graphs[1].node_norm[:, :3]
    with pytest.raises(RuntimeError) as pyg:
        Batch.from_data_list(graphs)
    with pytest.raises(RuntimeError) as ours:
        collate_graphs(graphs)
    assert str(ours.value) == str(pyg.value)
    with pytest.raises(IndexError):
        collate_graphs([])


@pytest.mark.parametrize("num_workers", [0, 1])
def test_graph_loader_matches_pyg_loader(num_workers):
    graphs = mixed(seed=3, count=7)
    ours = GraphLoader(graphs, batch_size=3, num_workers=num_workers)
    theirs = DataLoader(graphs, batch_size=3)
    batches = list(ours)
    assert len(batches) == 3
    for batch, expected in zip(batches, theirs):
        assert_batches_identical(batch, expected)
    pairs = [(g, torch.tensor(i)) for i, g in enumerate(graphs)]  # tuples: PyG's recursion
    for (batch, labels), (expected, expected_labels) in zip(
            GraphLoader(pairs, batch_size=4), DataLoader(pairs, batch_size=4)):
        assert_batches_identical(batch, expected)
        assert torch.equal(labels, expected_labels)


def test_graph_loader_takes_a_batch_sampler():
    graphs = mixed(seed=4, count=5)
    sampler = [[4, 0], [2], [1, 3]]
    for batch, expected in zip(GraphLoader(graphs, batch_sampler=sampler),
                               DataLoader(graphs, batch_sampler=sampler), strict=True):
        assert_batches_identical(batch, expected)


def test_graphs_of_different_kernel_widths_are_padded_to_the_widest():
    from torch import nn

    import nft_pyg
    from nft_pyg.graph import GraphLoader, collate_graphs

    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    cnn = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 2, 5))
    graphs = [nft_pyg.from_module(mlp), nft_pyg.from_module(cnn)]
    widths = [int(g.kernel_width) for g in graphs]
    batch = collate_graphs(graphs)
    assert batch.edge_attr.shape[1] == 25 and batch.kernel_width.tolist() == [25, 25]
    assert [int(g.kernel_width) for g in graphs] == widths  # inputs unchanged
    for graph, back, module in zip(graphs, batch.to_data_list(), (mlp, cnn)):
        assert torch.equal(back.edge_attr[:, : int(graph.kernel_width)], graph.edge_attr)
        state = nft_pyg.to_state_dict(back)
        assert all(torch.equal(state[key], value) for key, value in module.state_dict().items())
    loaded = next(iter(GraphLoader(graphs, batch_size=2)))
    assert torch.equal(loaded.edge_attr, batch.edge_attr)


def test_pyg_dataloader_names_padkernels_for_mixed_kernel_widths():
    from torch import nn

    mlp = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    cnn = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 2, 3))
    graphs = [nft_pyg.from_module(mlp), nft_pyg.from_module(cnn)]
    with pytest.raises(ValueError, match=r"kernel widths 1 and 9 cannot be batched.*"
                       r"GraphLoader.*PadKernels\(width\) \(width >= 9\)"):
        next(iter(DataLoader(graphs, batch_size=2)))
    from nft_pyg.transforms import PadKernels
    padded = [PadKernels(9)(graph) for graph in graphs]
    batch = next(iter(DataLoader(padded, batch_size=2)))
    assert batch.edge_attr.shape[1] == 9
    assert next(iter(DataLoader(graphs[:1] * 2, batch_size=2))).num_graphs == 2
