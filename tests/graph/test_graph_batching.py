"""Batching mixed architectures keeps every graph intact; PadKernels."""
import random

import pytest
import torch
from architectures import (
    assert_graphs_equal,
    random_architecture,
    random_architectures,
    random_cnn,
    random_mlp,
    randomize,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch_geometric.data import Batch
from torch_geometric.loader import DataLoader

import nft_pyg
from nft_pyg.graph.neuron_graph import EDGE_IDS, NODE_IDS
from nft_pyg.graph.validate import validate
from nft_pyg.transforms import PadKernels


def mixed_graphs(seed: int = 0, count: int = 24) -> list[nft_pyg.NeuronGraph]:
    """MLPs and 1/2/3-D CNNs of different depths, widths and kernel sizes."""
    graphs = [nft_pyg.from_module(module) for module, _ in random_architectures(seed, count)]
    assert len({g.layout for g in graphs}) == count
    assert len({int(g.kernel_width) for g in graphs}) > 2
    assert len({g.num_weight_layers for g in graphs}) > 2
    return graphs


def test_mlp_and_cnn_do_not_collate_without_padding():
    mlp = nft_pyg.from_module(random_mlp(0)[0])
    cnn = nft_pyg.from_module(nn.Sequential(nn.Conv2d(2, 3, 3)))
    with pytest.raises(ValueError, match="kernel widths 1 and 9 cannot be batched as they are"):
        Batch.from_data_list([mlp, cnn])


@pytest.mark.parametrize("batch_size", [1, 5, 24])
def test_dataloader_of_mixed_architectures_gives_back_identical_graphs(batch_size):
    graphs = mixed_graphs()
    width = max(int(g.kernel_width) for g in graphs)
    padded = [PadKernels(width)(g) for g in graphs]
    loader = DataLoader(padded, batch_size=batch_size, shuffle=False)
    recovered = []
    for batch in loader:
        validate(batch)
        # ids are not shifted by collation: they are the concatenation
        for key in NODE_IDS + EDGE_IDS:
            members = padded[len(recovered):len(recovered) + batch.num_graphs]
            assert torch.equal(batch[key], torch.cat([g[key] for g in members])), key
        assert batch.layout == [g.layout for g in members]
        recovered += batch.to_data_list()
    assert len(recovered) == len(graphs)
    for graph, padded_graph, back in zip(graphs, padded, recovered):
        assert isinstance(back, nft_pyg.NeuronGraph)
        assert_graphs_equal(back, padded_graph)
        state, expected = nft_pyg.to_state_dict(back), nft_pyg.to_state_dict(graph)
        assert list(state) == list(expected)
        assert all(torch.equal(state[key], expected[key]) for key in expected)


def test_edge_index_is_shifted_by_node_offsets():
    graphs = [PadKernels(9)(g) for g in mixed_graphs(seed=1, count=4)
              if int(g.kernel_width) <= 9]
    batch = Batch.from_data_list(graphs)
    offset = 0
    edges = 0
    for graph in graphs:
        count = graph.edge_index.size(1)
        assert torch.equal(batch.edge_index[:, edges:edges + count], graph.edge_index + offset)
        offset, edges = offset + graph.num_nodes, edges + count
    assert batch.kernel_width.tolist() == [9] * len(graphs)


def test_pad_kernels_pads_and_keeps_the_network():
    module, example = random_cnn(random.Random(0), dim=2, head="spatial")
    graph = nft_pyg.from_module(module)
    width = int(graph.kernel_width)
    padded = PadKernels(width + 3)(graph)
    assert padded.edge_attr.shape == (graph.edge_attr.size(0), width + 3)
    assert torch.equal(padded.edge_attr[:, :width], graph.edge_attr)
    assert (padded.edge_attr[:, width:] == 0).all()
    assert padded.kernel_width.tolist() == [width + 3]
    assert graph.edge_attr.size(1) == width  # the input graph is not modified
    validate(padded)
    with torch.no_grad():
        assert torch.equal(nft_pyg.to_module(padded).eval()(example), module(example))
    assert_graphs_equal(PadKernels(width)(graph), graph)


def test_pad_kernels_matches_from_module_kernel_width():
    module, _ = random_cnn(random.Random(1), dim=1)
    graph = nft_pyg.from_module(module)
    assert_graphs_equal(PadKernels(11)(graph), nft_pyg.from_module(module, kernel_width=11))


def test_pad_kernels_pads_each_channel_of_a_feature_graph():
    graph = nft_pyg.from_module(randomize(nn.Sequential(nn.Conv1d(2, 2, 3)), 0))
    graph.edge_attr = torch.arange(graph.edge_attr.numel() * 2.0).reshape(-1, 6)
    graph.x = torch.randn(graph.num_nodes, 2)
    padded = PadKernels(4)(graph)
    expected = torch.nn.functional.pad(graph.edge_attr.reshape(-1, 2, 3), (0, 1))
    assert torch.equal(padded.edge_attr, expected.reshape(-1, 8))
    validate(padded)


def test_pad_kernels_rejects_a_smaller_width():
    graph = nft_pyg.from_module(nn.Sequential(nn.Conv2d(1, 1, 3)))
    with pytest.raises(ValueError, match=r"width=4 is smaller than the graph's kernel_width=9"):
        PadKernels(4)(graph)
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="positive int"):
            PadKernels(bad)
    with pytest.raises(ValueError, match="no kernel_width"):
        PadKernels(3)(nft_pyg.NeuronGraph(x=torch.zeros(2, 1)))
    assert repr(PadKernels(5)) == "PadKernels(width=5)"


def test_pad_kernels_on_a_batch():
    graphs = [nft_pyg.from_module(m) for m, _ in
              random_architectures(2, 3, kinds=("mlp",))]
    batch = PadKernels(4)(Batch.from_data_list(graphs))
    validate(batch)
    for graph, back in zip(graphs, batch.to_data_list()):
        assert_graphs_equal(back, PadKernels(4)(graph))


@settings(max_examples=15, deadline=None)
@given(seeds=st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=6))
def test_any_mixture_batches_and_splits_back(seeds):
    graphs = [nft_pyg.from_module(random_architecture(random.Random(seed))[0])
              for seed in seeds]
    width = max(int(g.kernel_width) for g in graphs)
    padded = [PadKernels(width)(g) for g in graphs]
    batch = Batch.from_data_list(padded)
    validate(batch)
    assert batch.num_weight_layers == max(g.num_weight_layers for g in graphs)
    for graph, back in zip(padded, batch.to_data_list()):
        assert_graphs_equal(back, graph)
