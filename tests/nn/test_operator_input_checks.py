"""The index every operator takes checks what it is built from, once per batch:
residual graphs are refused naming the residual edge (the NF operators and NFT
attention apply to chains of weight layers), and an ``edge_index`` outside the
nodes gets our message instead of a failure deep inside a scatter."""
import pytest
import torch
from architectures import ResidualMLP
from torch import nn

import nft_pyg
from nft_pyg.nn import HNPConv, NFTAttention, NPConv, NPPool, PointwiseConv, WeightGraphIndex
from nft_pyg.nn.models.nfn import NFN

C = 4


OPERATORS = {
    "NPConv": lambda: NPConv(C, 3, 3),
    "HNPConv": lambda: HNPConv(C, 3, 3, 3, 2),
    "PointwiseConv": lambda: PointwiseConv(C, 3, 3),
    "NFTAttention": lambda: NFTAttention(C, heads=2, num_layers=3),
}


def features(graph, device):
    graph = graph.to(device)
    x = torch.randn(graph.num_nodes, C, device=device)
    edge_attr = torch.randn(graph.edge_index.size(1), C, device=device)
    return graph, x, edge_attr


@pytest.mark.parametrize("name", list(OPERATORS))
def test_operators_refuse_residual_graphs_naming_the_edge(name, device):
    graph, x, edge_attr = features(nft_pyg.from_module(ResidualMLP()), device)
    conv = OPERATORS[name]().to(device)
    with pytest.raises(ValueError, match=r"edge 36 \(3 -> 7\) is a residual connection"):
        conv(x, graph.edge_index, edge_attr, graph)
    with pytest.raises(ValueError, match=r"WeightGraphIndex: edge 36 \(3 -> 7\) is a residual"):
        WeightGraphIndex.from_data(graph)


@pytest.mark.parametrize("mode", ["np", "hnp"])
def test_pools_and_models_refuse_residual_graphs(mode, device):
    graph, x, edge_attr = features(nft_pyg.from_module(ResidualMLP()), device)
    with pytest.raises(ValueError, match="is a residual connection"):
        NPPool(C, 3).to(device)(x, edge_attr, graph)
    model = NFN.for_layout(graph.layout, mode, hidden_channels=C, out_channels=1).to(device)
    with pytest.raises(ValueError, match="is a residual connection"):
        model(graph)


def test_an_edge_index_outside_the_nodes_is_named(device):
    plain = nft_pyg.from_module(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)))
    graph, x, edge_attr = features(plain, device)
    broken = graph.clone()
    broken.edge_index = graph.edge_index.clone()
    broken.edge_index[1, 5] = 40
    with pytest.raises(ValueError, match=r"WeightGraphIndex: edge_index\[:, 5\] = \[\d+, 40\] "
                                         r"refers to node 40, outside the 9 nodes of the graph"):
        WeightGraphIndex.from_data(broken)
