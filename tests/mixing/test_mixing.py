"""Our operators mixed with PyG layers: shapes, PyG Sequential, pooling, and which
symmetry each mix keeps (checked with nft_pyg.symmetry.check_equivariance)."""
from __future__ import annotations

import pickle
import random

import pytest
import torch
from torch import nn
from torch_geometric.data import Batch
from torch_geometric.nn import (
    GATConv,
    GATv2Conv,
    GINEConv,
    PNAConv,
    Sequential,
    TransformerConv,
    global_add_pool,
    global_max_pool,
    global_mean_pool,
)

import nft_pyg
from nft_pyg.nn.conv.hnp_conv import HNPConv
from nft_pyg.nn.conv.nft_attention import NFTAttention
from nft_pyg.nn.conv.np_conv import NPConv
from nft_pyg.nn.mixing import EndpointEdgeUpdate, NodeEdgeAdapter
from nft_pyg.nn.pool.np_pool import NPPool
from nft_pyg.nn.structure import WeightGraphIndex
from nft_pyg.symmetry import check_equivariance, random_permutation
from nft_pyg.transforms.encodings import AddIOPositions, AddLayerEncoding

torch.set_num_threads(1)
C = 8


def mlp(sizes, act=nn.ReLU):
    layers = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(act())
    return nn.Sequential(*layers).double()


@pytest.fixture(scope="module")
def graphs():
    torch.manual_seed(0)
    single = nft_pyg.from_module(mlp([3, 5, 4, 2]))
    batch = Batch.from_data_list([nft_pyg.from_module(mlp([3, 5, 4, 2])),
                                  nft_pyg.from_module(mlp([3, 6, 3, 2]))])
    return single, batch


class MixedModel(nn.Module):
    """our op -> GATv2Conv(edge_dim) -> our op -> global_mean_pool, all PyG calls."""

    def __init__(self, first: nn.Module, last: nn.Module):
        super().__init__()
        self.first = first
        self.gat = GATv2Conv(C, C, heads=1, edge_dim=C)
        self.last = last

    def forward(self, x, edge_index, edge_attr, index):
        x, edge_attr = self.first(x, edge_index, edge_attr, index)
        x = self.gat(torch.relu(x), edge_index, torch.relu(edge_attr))
        x, edge_attr = self.last(x, edge_index, edge_attr, index)
        return global_mean_pool(x, index.node_batch) + global_mean_pool(edge_attr,
                                                                        index.edge_batch)


def operator_pairs():
    return {
        "np": lambda: (NPConv(1, C, num_layers=3), NPConv(C, C, num_layers=3)),
        "hnp": lambda: (HNPConv(1, C, 3, 3, 2), HNPConv(C, C, 3, 3, 2)),
        "nft": lambda: (NPConv(1, C, num_layers=3), NFTAttention(C, heads=2, num_layers=3)),
    }


@pytest.mark.parametrize("kind", ["np", "hnp", "nft"])
def test_mixed_model_is_invariant_to_hidden_permutations(graphs, kind):
    _, batch = graphs
    torch.manual_seed(1)
    first, last = operator_pairs()[kind]()
    model = MixedModel(first, last).double().eval()
    out = model(batch.x, batch.edge_index, batch.edge_attr, WeightGraphIndex.from_data(batch))
    assert out.shape == (2, C)
    report = check_equivariance(model, batch, trials=3, atol=1e-9,
                                generator=torch.Generator().manual_seed(2))
    assert report.kind == "invariance" and report.nontrivial_trials == 3
    assert report.passed, report


def test_mixed_hnp_model_is_not_np_invariant(graphs):
    """HNP sees input/output positions: permuting inputs changes the output."""
    _, batch = graphs
    torch.manual_seed(1)
    model = MixedModel(*operator_pairs()["hnp"]()).double().eval()
    report = check_equivariance(model, batch, permute_io=True, trials=3,
                                generator=torch.Generator().manual_seed(3))
    assert not report.passed and report.max_error > 1e-4


class PlainGNN(nn.Module):
    """GATv2 on the raw graph, optionally with encodings computed from the graph it gets."""

    def __init__(self, transform=None, node_extra: int = 0, edge_extra: int = 0):
        super().__init__()
        self.transform = transform
        self.gat1 = GATv2Conv(1 + node_extra, C, edge_dim=1 + edge_extra)
        self.gat2 = GATv2Conv(C, C, edge_dim=1 + edge_extra)

    def forward(self, graph):
        if self.transform is not None:
            graph = self.transform(graph.clone())
        x = torch.relu(self.gat1(graph.x, graph.edge_index, graph.edge_attr))
        x = self.gat2(x, graph.edge_index, graph.edge_attr)
        return global_mean_pool(x, getattr(graph, "batch", None))


def test_gatv2_alone_is_invariant_to_all_neuron_permutations(graphs):
    single, batch = graphs
    torch.manual_seed(4)
    model = PlainGNN().double().eval()
    for graph in (single, batch):
        report = check_equivariance(model, graph, permute_io=True, trials=3, atol=1e-10,
                                    generator=torch.Generator().manual_seed(5))
        assert report.nontrivial_trials == 3 and report.passed, report
    # the NP permutation really moved inputs and outputs
    perm = random_permutation(single, generator=torch.Generator().manual_seed(5), permute_io=True)
    assert not perm.preserves_io


def test_gatv2_with_io_positions_keeps_only_hidden_symmetry(graphs):
    _, batch = graphs
    torch.manual_seed(6)
    model = PlainGNN(AddIOPositions(3, 2), node_extra=5, edge_extra=5).double().eval()
    hidden = check_equivariance(model, batch, trials=3, atol=1e-10,
                                generator=torch.Generator().manual_seed(7))
    assert hidden.passed, hidden
    io = check_equivariance(model, batch, permute_io=True, trials=3,
                            generator=torch.Generator().manual_seed(7))
    assert not io.passed and io.max_error > 1e-4


def test_layer_encoding_keeps_np_symmetry(graphs):
    single, _ = graphs
    torch.manual_seed(8)
    model = PlainGNN(AddLayerEncoding(3), node_extra=4, edge_extra=3).double().eval()
    report = check_equivariance(model, single, permute_io=True, trials=3, atol=1e-10,
                                generator=torch.Generator().manual_seed(9))
    assert report.passed, report


@pytest.mark.parametrize("make_conv", [
    lambda: GATv2Conv(C, C, edge_dim=C),
    lambda: TransformerConv(C, C, heads=2, concat=False, edge_dim=C),
    lambda: GINEConv(nn.Linear(C, C), edge_dim=C),
    lambda: PNAConv(C, C, aggregators=["mean", "max"], scalers=["identity"],
                    deg=torch.tensor([0, 3, 3, 2]), edge_dim=C),
], ids=["gatv2", "transformer", "gine", "pna"])
def test_adapter_is_equivariant_for_edge_aware_pyg_convs(graphs, make_conv):
    _, batch = graphs
    torch.manual_seed(10)
    x = torch.randn(batch.num_nodes, C, dtype=torch.float64)
    edge_attr = torch.randn(batch.num_edges, C, dtype=torch.float64)
    adapter = NodeEdgeAdapter(make_conv(), edge_module=nn.Linear(C, 3)).double().eval()
    x_out, edge_out = adapter(x, edge_attr, batch)
    assert x_out.shape == (batch.num_nodes, C) and edge_out.shape == (batch.num_edges, 3)
    assert bool((x_out[batch.node_layer == 0] == 0).all())
    for permute_io in (False, True):  # hidden permutations, then all (NP)
        report = check_equivariance(adapter, batch, x, edge_attr, trials=2, atol=1e-9,
                                    generator=torch.Generator().manual_seed(11),
                                    permute_io=permute_io)
        assert report.kind == "equivariance" and report.passed, (permute_io, report)


def test_adapter_edge_modes(graphs):
    single, _ = graphs
    torch.manual_seed(12)
    x = torch.randn(single.num_nodes, C, dtype=torch.float64)
    edge_attr = torch.randn(single.num_edges, C, dtype=torch.float64)
    keep = NodeEdgeAdapter(GATv2Conv(C, C, edge_dim=C)).double()
    _, edges = keep(x, edge_attr, single)
    assert edges is edge_attr  # pass-through: the edges keep our operator's features
    endpoint = NodeEdgeAdapter(GATv2Conv(C, C, edge_dim=C),
                               edge_module=EndpointEdgeUpdate(C, C, 4)).double()
    x_out, edges = endpoint(x, edge_attr, single)
    src, dst = single.edge_index
    expected = endpoint.edge_module.linear(torch.cat([edge_attr, x_out[src], x_out[dst]], -1))
    torch.testing.assert_close(edges, expected)
    report = check_equivariance(endpoint.eval(), single, x, edge_attr, trials=2, atol=1e-9,
                                generator=torch.Generator().manual_seed(13))
    assert report.passed, report
    with pytest.raises(ValueError, match="NodeEdgeAdapter"):
        keep(x[:-1], edge_attr, single)
    with pytest.raises(ValueError, match="EndpointEdgeUpdate"):
        EndpointEdgeUpdate(C, 3, 4)(x, edge_attr, single)


def pyg_sequential() -> Sequential:
    """Our operators beside GATConv / GINEConv / TransformerConv, no adapter."""
    # PyG names the generated forward of a Sequential with Python's `random`, which
    # the test fixture seeds alike for every test: another test's Sequential built
    # earlier in the same process would lend this one its (wrong) forward
    random.seed("tests/mixing/test_mixing.py::pyg_sequential")
    return Sequential("x, edge_index, edge_attr, index", [
        (NPConv(1, C, num_layers=3), "x, edge_index, edge_attr, index -> x, edge_attr"),
        (GATConv(C, C, edge_dim=C), "x, edge_index, edge_attr -> x"),
        (GINEConv(nn.Linear(C, C), edge_dim=C), "x, edge_index, edge_attr -> x"),
        (TransformerConv(C, C, heads=2, concat=False, edge_dim=C),
         "x, edge_index, edge_attr -> x"),
        (NPConv(C, C, num_layers=3), "x, edge_index, edge_attr, index -> x, edge_attr"),
        (HNPConv(C, C, 3, 3, 2), "x, edge_index, edge_attr, index -> x, edge_attr"),
        (NPPool(C, 3), "x, edge_attr, index -> x"),
    ]).double().eval()


def test_pyg_sequential_and_pools(graphs):
    _, batch = graphs
    torch.manual_seed(14)
    model = pyg_sequential()
    pickled = pickle.dumps(batch)
    out = model(batch.x, batch.edge_index, batch.edge_attr, WeightGraphIndex.from_data(batch))
    assert pickle.dumps(batch) == pickled
    assert out.shape == (2, 2 * 3 * C)
    # the batch result equals each graph on its own
    for b, graph in enumerate(batch.to_data_list()):
        alone = model(graph.x, graph.edge_index, graph.edge_attr,
                      WeightGraphIndex.from_data(graph))
        torch.testing.assert_close(out[b:b + 1], alone)
    # check_equivariance reads the Sequential's signature; PyG's convs treat all
    # neurons alike and HNPConv keeps the input / output positions: hidden-invariant
    report = check_equivariance(model, batch, trials=2, atol=1e-9,
                                generator=torch.Generator().manual_seed(3))
    assert report.kind == "invariance" and report.nontrivial_trials == 2 and report.passed


def test_misuse_shows_the_pyg_signature(graphs):
    _, batch = graphs
    conv = NPConv(1, C, num_layers=3).double()
    signature = r"NPConv\(x \[N, C\], edge_index \[2, E\], edge_attr \[E, C\], index\)"
    with pytest.raises(TypeError, match=signature):     # the index left out
        conv(batch.x, batch.edge_index, batch.edge_attr)
    with pytest.raises(TypeError, match=signature):     # the old (x, edge_attr, graph) call
        conv(batch.x, batch.edge_attr, batch)


    x = torch.randn(batch.num_nodes, 2, dtype=torch.float64)
    for pool in (global_mean_pool, global_add_pool, global_max_pool):
        pooled = pool(x, batch.batch)
        assert pooled.shape == (2, 2)
        first = batch.batch == 0
        expected = {global_mean_pool: x[first].mean(0), global_add_pool: x[first].sum(0),
                    global_max_pool: x[first].max(0).values}[pool]
        torch.testing.assert_close(pooled[0], expected)
