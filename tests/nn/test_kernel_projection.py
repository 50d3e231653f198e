"""KernelProjection / KernelReadout: graph == dense, per-layer maps, equivariance,
round trip of the read-out through nft_pyg.to_module, errors."""

import pytest
import torch
from helpers import (
    ARCHITECTURES,
    KERNEL_WIDTH,
    assert_equivariant,
    mixed_batch,
    mlp,
    permuted_pair,
    random_features,
    slice_of,
)
from torch import nn
from torch_geometric.data import Batch

import nft_pyg
from nft_pyg import WeightSpace
from nft_pyg.nn.kernel_projection import KernelProjection, KernelReadout
from nft_pyg.nn.structure import WeightGraphIndex

torch.set_num_threads(1)

# kernel sizes per layer: cnn = [9, 4, 4]; every MLP layer has 1 position (padded)
MIXED_SIZES = [9, 4, 4, 1]


def projection(sizes=MIXED_SIZES, channels=5):
    return KernelProjection(sizes, KERNEL_WIDTH, channels).double()


def raw_slices(batch, graphs, ids, out_x, out_e, name):
    node_mask, edge_mask = slice_of(batch, ids[name])
    sub = Batch.from_data_list([graphs[i] for i in ids[name]])
    return sub, out_x[node_mask], out_e[edge_mask]


# --- KernelProjection ---------------------------------------------------------------
def test_projection_matches_dense_on_mixed_batch():
    module = projection()
    batch, graphs, ids = mixed_batch(list(ARCHITECTURES))
    out_x, out_e = module(batch.x, batch.edge_attr, batch)
    assert out_x.shape == (batch.num_nodes, 5) and out_e.shape == (batch.num_edges, 5)
    assert bool((out_x[batch.node_role == 0] == 0).all())
    for name in ARCHITECTURES:
        sub, sub_x, sub_e = raw_slices(batch, graphs, ids, out_x, out_e, name)
        dense_x, dense_e = module.forward_dense(WeightSpace.from_graph(sub)).graph_features()
        assert torch.allclose(sub_x, dense_x.reshape(-1, 5), atol=1e-10)
        assert torch.allclose(sub_e, dense_e.reshape(-1, 5), atol=1e-10)


def test_projection_formula_per_layer():
    module = KernelProjection.for_layout(nft_pyg.from_module(ARCHITECTURES["cnn"]()).layout,
                                         3).double()
    assert module.kernel_sizes == [9, 4, 4] and module.kernel_width == 9
    graph = nft_pyg.from_module(ARCHITECTURES["cnn"]())
    out_x, out_e = module(graph.x, graph.edge_attr, graph)
    for layer, size in enumerate(module.kernel_sizes, start=1):
        edges, nodes = graph.edge_layer == layer, graph.node_layer == layer
        lin = nn.Linear(size, 3).double()
        with torch.no_grad():
            lin.weight.copy_(module.edge_weight[layer - 1, :size].t())
            lin.bias.copy_(module.edge_bias[layer - 1])
        assert torch.allclose(out_e[edges], lin(graph.edge_attr[edges, :size]))
        expected = graph.x[nodes] * module.node_weight[layer - 1] + module.node_bias[layer - 1]
        assert torch.allclose(out_x[nodes], expected)


@pytest.mark.parametrize("layer", [1, 2, 3])
def test_projection_layers_are_distinct(layer):
    module = projection()
    batch, _, _ = mixed_batch(["cnn", "mlp_deep"])
    out_x, out_e = module(batch.x, batch.edge_attr, batch)
    with torch.no_grad():
        module.edge_weight[layer - 1].add_(1.0)
    new_x, new_e = module(batch.x, batch.edge_attr, batch)
    changed = (new_e != out_e).any(-1)
    assert torch.equal(changed, batch.edge_layer == layer) and torch.equal(new_x, out_x)
    with torch.no_grad():
        module.node_weight[layer - 1].add_(1.0)
    new_x, _ = module(batch.x, batch.edge_attr, batch)
    changed = (new_x != out_x).any(-1)
    has_bias = (batch.x != 0).squeeze(-1)
    assert torch.equal(changed, (batch.node_layer == layer) & has_bias)


def test_projection_padded_positions_get_no_gradient():
    module = projection()
    batch, _, _ = mixed_batch(["cnn"], copies=1)
    out_x, out_e = module(batch.x, batch.edge_attr, batch)
    (out_x.sum() + out_e.pow(2).sum()).backward()
    grad = module.edge_weight.grad
    assert bool((grad[1, 4:] == 0).all()) and bool((grad[3, 1:] == 0).all())
    assert grad[0].abs().sum() > 0 and grad[1, :4].abs().sum() > 0


@pytest.mark.parametrize("network", ["mlp_deep", "cnn"])
def test_projection_equivariance(network):
    graph, graph_p, node_map, edge_map = permuted_pair(ARCHITECTURES[network](), seed=2)
    module = KernelProjection.for_layout(graph.layout, 5).double()
    out_x, out_e = module(graph.x, graph.edge_attr, graph)
    perm_x, perm_e = module(graph_p.x, graph_p.edge_attr, graph_p)
    assert torch.allclose(perm_x, out_x[node_map], atol=1e-12)
    assert torch.allclose(perm_e, out_e[edge_map], atol=1e-12)


def test_projection_errors():
    graph = nft_pyg.from_module(ARCHITECTURES["cnn"]())
    with pytest.raises(ValueError, match=r"KernelProjection: expects raw edge features \[E, 4\]"):
        KernelProjection(3, 4, 2).double()(graph.x, graph.edge_attr, graph)
    with pytest.raises(ValueError, match=r"KernelProjection: expects raw node features x \[N, 1\]"):
        projection()(graph.x.repeat(1, 2), graph.edge_attr, graph)
    with pytest.raises(ValueError, match="KernelProjection: built for 2 weight layers, the graph "
                                         "has 3"):
        KernelProjection(2, 9, 2).double()(graph.x, graph.edge_attr, graph)
    with pytest.raises(ValueError, match="nonzero entries past their layer's kernel size"):
        KernelProjection([4, 4, 4], 9, 2).double()(graph.x, graph.edge_attr, graph)
    not_finite = graph.edge_attr.clone()
    not_finite[3, 0] = float("nan")
    with pytest.raises(ValueError, match=r"KernelProjection: the raw weights \(edge_attr\) hold "
                                         "NaN or inf"):
        projection()(graph.x, not_finite, graph)
    with pytest.raises(ValueError, match="kernel_sizes must be a non-empty list"):
        KernelProjection([9, 10], 9, 2)
    with pytest.raises(ValueError, match="num_layers must be positive"):
        KernelProjection(0, 9, 2)
    no_layers = graph.clone()
    del no_layers.edge_layer
    with pytest.raises(ValueError, match="KernelProjection: the graph has no edge_layer"):
        projection()(graph.x, graph.edge_attr, no_layers)
    assert repr(KernelProjection(2, 3, 4)) == \
        "KernelProjection(kernel_sizes=[3, 3], kernel_width=3, out_channels=4)"


# --- KernelReadout ------------------------------------------------------------------
def readout_for(network, channels=4, kernel_width=KERNEL_WIDTH):
    return KernelReadout.for_layout(nft_pyg.from_module(network).layout, channels,
                                    kernel_width=kernel_width).double()


@pytest.mark.parametrize("names, network", [(["mlp_deep", "mlp_shallow"], "mlp_deep"),
                                             (["cnn"], "cnn")])
def test_readout_matches_dense(names, network):
    module = readout_for(ARCHITECTURES[network]())
    batch, graphs, ids = mixed_batch(names)
    x, edge_attr = random_features(batch, 4)
    out_x, out_e = module(x, edge_attr, batch)
    assert out_x.shape == (batch.num_nodes, 1) and out_e.shape == (batch.num_edges, KERNEL_WIDTH)
    for name in names:
        node_mask, edge_mask = slice_of(batch, ids[name])
        sub = Batch.from_data_list([graphs[i] for i in ids[name]])
        dense = module.forward_dense(WeightSpace.from_features(sub, x[node_mask],
                                                               edge_attr[edge_mask]))
        dense_x, dense_e = dense.graph_features(KERNEL_WIDTH)
        assert torch.allclose(out_x[node_mask], dense_x.reshape(-1, 1), atol=1e-10)
        assert torch.allclose(out_e[edge_mask], dense_e.reshape(-1, KERNEL_WIDTH), atol=1e-10)


@pytest.mark.parametrize("network", [ARCHITECTURES["cnn"](), mlp([3, 4, 2], bias=False).double()],
                         ids=["cnn", "mlp_no_bias"])
def test_readout_round_trips_through_to_module(network):
    graph = nft_pyg.from_module(network)
    module = KernelReadout.for_layout(graph.layout, 4).double()
    with torch.no_grad():  # make every parameter matter, padded ones included
        for parameter in module.parameters():
            parameter.normal_()
    x, edge_attr = random_features(graph, 4)
    delta_x, delta_e = module(x, edge_attr, graph)
    assert bool((delta_x[graph.node_role == 0] == 0).all())
    for layer, size in enumerate(module.kernel_sizes, start=1):
        edges = graph.edge_layer == layer
        assert bool((delta_e[edges, size:] == 0).all())
        assert delta_e[edges, :size].abs().min() > 0
    edited = graph.clone()
    edited.x, edited.edge_attr = graph.x + delta_x, graph.edge_attr + delta_e
    rebuilt = nft_pyg.to_module(edited)
    again = nft_pyg.from_module(rebuilt)
    assert torch.equal(again.x, edited.x) and torch.equal(again.edge_attr, edited.edge_attr)
    if not any(isinstance(m, nn.Linear) and m.bias is not None for m in network.modules()):
        assert bool((delta_x == 0).all())


def test_readout_layers_are_distinct():
    graph = nft_pyg.from_module(ARCHITECTURES["cnn"]())
    module = KernelReadout.for_layout(graph.layout, 4).double()
    x, edge_attr = random_features(graph, 4)
    out_x, out_e = module(x, edge_attr, graph)
    with torch.no_grad():
        module.edge_weight[1].add_(1.0)
        module.node_bias[2].add_(1.0)
    new_x, new_e = module(x, edge_attr, graph)
    assert torch.equal((new_e != out_e).any(-1), graph.edge_layer == 2)
    assert torch.equal((new_x != out_x).any(-1), graph.node_layer == 3)


@pytest.mark.parametrize("network", ["mlp_deep", "cnn"])
def test_readout_equivariance(network):
    network = ARCHITECTURES[network]()
    assert_equivariant(readout_for(network, kernel_width=None), network)


def test_readout_errors():
    mlp_graph = nft_pyg.from_module(mlp([3, 4, 2]).double(), kernel_width=KERNEL_WIDTH)
    x, edge_attr = random_features(mlp_graph, 4)
    with pytest.raises(ValueError, match=r"KernelReadout: built for kernel sizes \[9, 4, 4\]"):
        readout_for(ARCHITECTURES["cnn"]())(x, edge_attr, mlp_graph)
    with pytest.raises(ValueError, match="KernelReadout: built for kernel_width=4, the graph "
                                         r"has kernel_width \[9\]"):
        KernelReadout(4, [1, 1], 4).double()(x, edge_attr, mlp_graph)
    with pytest.raises(ValueError, match="KernelReadout: built for 3 channels"):
        KernelReadout(3, 2, 1).double()(x, edge_attr, mlp_graph)
    with pytest.raises(ValueError, match="KernelReadout: built for 1 weight layers"):
        KernelReadout(4, [1], 9).double()(x, edge_attr, mlp_graph)
    with pytest.raises(ValueError, match="biases"):  # a bias-free read-out would do, not this
        KernelReadout.for_layout(mlp_graph.layout, 4, kernel_width=9).double()(
            x, edge_attr, nft_pyg.from_module(mlp([3, 4, 2], bias=False).double(), kernel_width=9))
    with pytest.raises(ValueError, match="2 bias flags for 3 layers"):
        KernelReadout(4, 3, 9, bias=[True, False])
    with pytest.raises(ValueError, match="needs ws.layout"):
        readout_for(ARCHITECTURES["cnn"]()).forward_dense(WeightSpace(
            [torch.zeros(1, 4, 3, 2)], [torch.zeros(1, 4, 3)]))
    assert repr(KernelReadout(4, [1, 1], 1, bias=[True, False])) == \
        "KernelReadout(4, kernel_sizes=[1, 1], kernel_width=1, bias=[True, False])"


def test_readout_checks_the_index_like_the_graph():
    """Given the WeightGraphIndex, the read-out checks the kernel widths and
    layouts the index keeps (the same errors as with the graph)."""
    mlp_graph = nft_pyg.from_module(mlp([3, 4, 2]).double(), kernel_width=KERNEL_WIDTH)
    x, edge_attr = random_features(mlp_graph, 4)
    index = WeightGraphIndex.from_data(Batch.from_data_list([mlp_graph, mlp_graph]))
    assert index.layouts == (mlp_graph.layout,) and index.kernel_widths == (KERNEL_WIDTH,)
    x, edge_attr = x.repeat(2, 1), edge_attr.repeat(2, 1)
    with pytest.raises(ValueError, match=r"KernelReadout: built for kernel sizes \[9, 4, 4\]"):
        readout_for(ARCHITECTURES["cnn"]())(x, edge_attr, index)
    with pytest.raises(ValueError, match="KernelReadout: built for kernel_width=4, the graph "
                                         r"has kernel_width \[9\]"):
        KernelReadout(4, [1, 1], 4).double()(x, edge_attr, index)
    fitting = KernelReadout.for_layout(mlp_graph.layout, 4, kernel_width=KERNEL_WIDTH).double()
    for got, want in zip(fitting(x, edge_attr, index),
                         fitting(x, edge_attr, Batch.from_data_list([mlp_graph, mlp_graph]))):
        assert torch.equal(got, want)


def test_projection_value_checks_run_in_eager_mode_only():
    """NaN weights are refused in eager mode; while torch.compile traces, the
    check is skipped (so the forward stays one graph) and the NaN passes through."""
    graph = nft_pyg.from_module(ARCHITECTURES["cnn"]())
    module = projection()
    not_finite = graph.edge_attr.clone()
    not_finite[3, 0] = float("nan")
    index = WeightGraphIndex.from_data(graph)
    with pytest.raises(ValueError, match="NaN or inf"):
        module(graph.x, not_finite, index)
    torch._dynamo.reset()
    compiled = torch.compile(module, fullgraph=True, backend="eager")
    _, edge_out = compiled(graph.x, not_finite, index)
    assert torch.isnan(edge_out[3]).all() and not torch.isnan(edge_out[4:]).any()
