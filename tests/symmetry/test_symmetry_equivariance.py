"""check_equivariance / assert_equivariant on toy operators that are and are not equivariant."""
from __future__ import annotations

import pytest
import torch
from architectures import random_cnn, random_mlp
from symmetry_helpers import (
    DOUBLE,
    ToyEquivariant,
    ToyFirstHidden,
    ToyGraphModule,
    ToyHiddenPosition,
    ToyIOPosition,
    ToyReadout,
)
from torch import nn
from torch_geometric.data import Batch

from nft_pyg import from_module
from nft_pyg.symmetry import (
    EquivarianceReport,
    NeuronPermutation,
    assert_equivariant,
    check_equivariance,
    random_permutation,
)

CHANNELS = 4


def feature_graph(seed: int = 0, batch: bool = False):
    """A graph (or a mixed MLP/CNN batch) and random features ``[N, 4]``, ``[E, 4]``."""
    torch.manual_seed(seed)
    modules = [nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 4), nn.Tanh(),
                             nn.Linear(4, 2))]
    if batch:
        modules += [random_cnn(seed + 1, dim=2, head="spatial", max_channels=5)[0],
                    random_mlp(seed + 2, depth=2, in_features=3, out_features=2)[0]]
    graphs = [from_module(m.double(), kernel_width=64) for m in modules]
    graph = Batch.from_data_list(graphs) if batch else graphs[0]
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(graph.num_nodes, CHANNELS, generator=generator, dtype=DOUBLE)
    edges = torch.randn(graph.num_edges, CHANNELS, generator=generator, dtype=DOUBLE)
    return graph, x, edges


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("batch", [False, True])
def test_equivariant_operator_passes(batch):
    graph, x, edges = feature_graph(1, batch)
    operator = ToyEquivariant(CHANNELS)
    report = check_equivariance(operator, graph, x, edges, generator=gen(), trials=3,
                                atol=1e-10)
    assert isinstance(report, EquivarianceReport) and report
    assert report.kind == "equivariance" and report.trials == 3
    assert report.nontrivial_trials == 3 and report.max_error <= 1e-10
    # no positions are used: also equivariant to permutations of input/output neurons
    assert check_equivariance(operator, graph, x, edges, generator=gen(), permute_io=True,
                              atol=1e-10)


@pytest.mark.parametrize("batch", [False, True])
def test_hidden_position_operator_fails(batch):
    graph, x, edges = feature_graph(2, batch)
    report = check_equivariance(ToyHiddenPosition(CHANNELS), graph, x, edges, generator=gen())
    assert not report and report.max_error >= 1.0
    with pytest.raises(AssertionError, match=r"not permutation-equivariant: max error \d"):
        assert_equivariant(ToyHiddenPosition(CHANNELS), graph, x, edges, generator=gen())
    assert assert_equivariant(ToyEquivariant(CHANNELS), graph, x, edges, generator=gen()).passed


def test_io_position_operator_is_only_hidden_equivariant():
    graph, x, edges = feature_graph(3)
    operator = ToyIOPosition(CHANNELS)
    assert check_equivariance(operator, graph, x, edges, generator=gen(), atol=1e-10)
    assert not check_equivariance(operator, graph, x, edges, generator=gen(), permute_io=True)


@pytest.mark.parametrize("batch", [False, True])
def test_invariant_readout(batch):
    graph, x, edges = feature_graph(4, batch)
    hidden = graph.node_layer > 0  # inputs are not permuted by default: any x on them is fine
    report = check_equivariance(ToyReadout(), graph, x * hidden.unsqueeze(-1), edges,
                                generator=gen(), atol=1e-10)
    assert report and report.kind == "invariance"
    assert not check_equivariance(ToyFirstHidden(), graph, x, edges, generator=gen())


def test_tensor_output_as_node_features():
    graph, x, edges = feature_graph(5)

    def node_map(x, edge_attr, graph):
        return torch.tanh(x) * 3

    assert check_equivariance(node_map, graph, x, edges, invariant=False, generator=gen())
    # read as invariant, a node-wise output changes under the permutation
    report = check_equivariance(node_map, graph, x, edges, generator=gen())
    assert report.kind == "invariance" and not report


def test_graph_module_signature():
    graph, _, _ = feature_graph(6)
    assert check_equivariance(ToyGraphModule(), graph, generator=gen(), atol=1e-10)
    batch, _, _ = feature_graph(6, batch=True)
    assert check_equivariance(ToyGraphModule(), batch, generator=gen(), atol=1e-10)
    assert not check_equivariance(ToyGraphModule(shift_hidden_by_position=True), graph,
                                  generator=gen())


def test_explicit_permutation_and_identity():
    graph, x, edges = feature_graph(7)
    sizes = graph.layout_obj.neuron_layer_sizes
    identity = NeuronPermutation.identity(sizes)
    report = check_equivariance(ToyHiddenPosition(CHANNELS), graph, x, edges, perm=identity)
    assert report and report.trials == 1 and report.nontrivial_trials == 0
    perm = random_permutation(graph, gen(3))
    assert not perm.is_identity()
    assert not check_equivariance(ToyHiddenPosition(CHANNELS), graph, x, edges, perm=perm)


def test_bad_arguments():
    graph, x, edges = feature_graph(8)
    with pytest.raises(ValueError, match="trials"):
        check_equivariance(ToyEquivariant(CHANNELS), graph, x, edges, trials=0)

    def two_arguments(a, b):
        return a

    with pytest.raises(TypeError, match=r"module\(x, edge_attr, graph\) or module\(graph\)"):
        check_equivariance(two_arguments, graph)

    with pytest.raises(TypeError, match="returned str"):
        check_equivariance(lambda x, e, g: "nope", graph, x, edges)

    def pair_of_wrong_size(x, edge_attr, graph):
        return x[graph.node_layer > 0], edge_attr

    with pytest.raises(ValueError, match="changed shape|rows"):
        check_equivariance(pair_of_wrong_size, graph, x, edges)
