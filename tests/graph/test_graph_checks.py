"""Public cheap checks for operators, to_module's layout checks, and compact storage."""
import json
import pickle

import pytest
import torch
from architectures import ResidualMLP
from torch import nn

import nft_pyg
from nft_pyg.graph import Layout, check_no_residual, check_operator_inputs, has_residual, to_module


def mlp():
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))


def test_has_residual_and_the_error_naming_the_edge():
    plain, residual = nft_pyg.from_module(mlp()), nft_pyg.from_module(ResidualMLP())
    assert not has_residual(plain.edge_kind) and has_residual(residual.edge_kind)
    check_no_residual(plain.edge_kind, plain.edge_index, "NPConv")
    with pytest.raises(ValueError, match=r"NPConv: edge 36 \(3 -> 7\) is a residual connection"):
        check_no_residual(residual.edge_kind, residual.edge_index, "NPConv")


def test_the_dense_weight_space_refuses_residual_graphs():
    """WeightSpace is a chain of weight layers: a residual edge is refused,
    never dropped."""
    with pytest.raises(ValueError, match=r"WeightSpace: edge 36 \(3 -> 7\) is a residual "
                                         r"connection.*WeightSpace applies to chains"):
        nft_pyg.WeightSpace.from_graph(nft_pyg.from_module(ResidualMLP()))


@pytest.mark.parametrize("mutate, message", [
    (lambda x, ei, ea: (x, ei.clone().fill_(99), ea), r"edge_index\[:, 0\] = \[99, 99\] refers "
     r"to node 99, outside the 9 nodes of x"),
    (lambda x, ei, ea: (x, ei.int(), ea), "edge_index of dtype torch.long, got torch.int32"),
    (lambda x, ei, ea: (x, ea, ei), r"expected edge_index as a \[2, E\] tensor, got \(20, 1\)"),
    (lambda x, ei, ea: (x, ei, ea[:3]), "edge_attr with one row per edge \\(20\\)"),
    (lambda x, ei, ea: (x, ei, ea.double()), "edge_attr is torch.float64"),
    (lambda x, ei, ea: (x.long(), ei, ea), "floating \\[N, C\\] tensor"),
])
def test_operator_inputs_are_checked_with_our_messages(mutate, message):
    graph = nft_pyg.from_module(mlp())
    x, edge_index, edge_attr = mutate(graph.x, graph.edge_index, graph.edge_attr)
    check_operator_inputs("NPConv", graph.x, graph.edge_index, graph.edge_attr, channels=1)
    with pytest.raises(ValueError, match="^NPConv: .*" + message):
        check_operator_inputs("NPConv", x, edge_index, edge_attr)


def test_nonfinite_inputs_are_named():
    graph = nft_pyg.from_module(mlp())
    edge_attr = graph.edge_attr.clone()
    edge_attr[5, 0] = float("nan")
    check_operator_inputs("op", graph.x, graph.edge_index, edge_attr)  # not asked
    with pytest.raises(ValueError, match=r"op: edge_attr holds NaN or inf \(row 5\)"):
        check_operator_inputs("op", graph.x, graph.edge_index, edge_attr, finite=True)


def edited(graph, index, **changes):
    steps = json.loads(graph.layout)
    steps[index].update(changes)
    graph = graph.clone()
    graph.layout = json.dumps(steps)
    return graph


@pytest.mark.parametrize("index, changes, message", [
    (1, {"act": "SWISH"}, "layout step '1': unknown activation 'SWISH'; one of IDENTITY, RELU"),
    (1, {"params": {"w0": 3.0}}, "layout step '1': activation RELU takes the parameters none, "
     "got {'w0': 3.0}"),
    (1, {"kind": "pool", "type": "Linear", "args": {}}, "layout step '1': pool type 'Linear' is "
     "not one of AvgPool1d"),
    (1, {"kind": "dropout", "type": "Transformer", "p": 0.1}, "layout step '1': dropout type "
     "'Transformer' is not one of Dropout"),
    (1, {"kind": "softmax"}, "layout step '1': unknown step kind 'softmax'"),
])
def test_to_module_checks_the_layout(index, changes, message):
    graph = nft_pyg.from_module(mlp())
    with pytest.raises(ValueError) as info:
        to_module(edited(graph, index, **changes))
    assert message in str(info.value)


def test_an_edited_activation_is_not_silently_built_as_another():
    graph = nft_pyg.from_module(nn.Sequential(nn.Linear(3, 4), nn.LeakyReLU(0.2),
                                              nn.Linear(4, 2)))
    with pytest.raises(ValueError, match="activation SINE takes the parameters \\['w0'\\], got "
                       "\\{'negative_slope': 0.2\\}"):
        to_module(edited(graph, 1, act="SINE"))


@pytest.mark.parametrize("module", [
    nn.Sequential(nn.Linear(2, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1)),
    nn.Sequential(nn.Conv2d(1, 16, 3), nn.ReLU(), nn.Conv2d(16, 16, 3), nn.ReLU(),
                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10)),
    ResidualMLP(),
])
def test_a_graph_pickles_at_about_the_size_of_its_data(module):
    graph = nft_pyg.from_module(module)
    data = sum(value.numel() * value.element_size() for value in graph.values()
               if isinstance(value, torch.Tensor)) + len(graph.layout)
    size = len(pickle.dumps(graph))
    assert size <= 1.2 * data + 4096, (size, data)  # 4 kB: pickle's fixed overhead
    if data > 40_000:
        assert size <= 1.2 * data, (size, data)


def test_layout_residuals_are_checked():
    steps = json.loads(nft_pyg.from_module(ResidualMLP()).layout)
    assert steps[3]["kind"] == "residual"
    steps[3]["source"] = 2
    with pytest.raises(ValueError, match="needs a source layer in 0..1, got 2"):
        Layout(steps)
