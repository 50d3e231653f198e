"""validate() accepts every graph the converters make and catches each broken invariant."""
import random

import pytest
import torch
from architectures import random_architectures, randomize
from torch import nn
from torch_geometric.data import Batch
from torch_geometric.loader import DataLoader

import nft_pyg
from nft_pyg import WeightSpace
from nft_pyg.graph import Activation, EdgeKind, NodeRole
from nft_pyg.graph.validate import GraphFormatError, validate
from nft_pyg.transforms import PadKernels


def example_graph() -> nft_pyg.NeuronGraph:
    """Neuron layers [2, 3, 4, 2] (nodes 0-1, 2-4, 5-8, 9-10); edges 0-5 conv
    (4 positions), 6-17 flatten (4 positions), 18-25 linear (padded to 4)."""
    module = nn.Sequential(nn.Conv2d(2, 3, 2), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(),
                           nn.Linear(12, 4, bias=False), nn.LayerNorm(4), nn.Tanh(),
                           nn.Linear(4, 2))
    graph = nft_pyg.from_module(randomize(module, 0))
    assert graph.num_nodes == 11 and graph.edge_index.size(1) == 26
    assert int(graph.kernel_width) == 4
    return graph


def test_the_example_graph_is_valid():
    validate(example_graph())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_every_generated_graph_is_valid(dtype):
    graphs = [nft_pyg.from_module(m) for m, _ in random_architectures(11, 40, dtype=dtype)]
    for graph in graphs:
        validate(graph)
    width = max(int(g.kernel_width) for g in graphs)
    for batch in DataLoader([PadKernels(width)(g) for g in graphs], batch_size=8):
        validate(batch)


def test_pruned_graphs_are_valid():
    graph = example_graph()
    keep = torch.rand(graph.edge_index.size(1), generator=torch.Generator().manual_seed(0)) > 0.5
    for key in ("edge_attr", "edge_layer", "edge_kind"):
        graph[key] = graph[key][keep]
    graph.edge_index = graph.edge_index[:, keep]
    validate(graph)
    graph.edge_index = graph.edge_index[:, :0]
    for key in ("edge_attr", "edge_layer", "edge_kind"):
        graph[key] = graph[key][:0]
    validate(graph)  # no edges at all is still a (fully pruned) network


def test_feature_graphs_are_valid():
    graph = example_graph()
    folded = WeightSpace.from_graph(graph).fold_kernels().to_graph()
    validate(folded)  # x [N, 4], edge_attr [E, 4], kernel_width 1
    features = graph.clone()
    features.x = torch.randn(graph.num_nodes, 3)
    features.edge_attr = torch.randn(graph.edge_index.size(1), 3 * 4)
    validate(features)  # kernels kept: edge_attr [E, C * kernel_width]
    one_channel = graph.clone()
    one_channel.x = torch.randn(graph.num_nodes, 1)  # operator output with nonzero inputs
    validate(one_channel, raw=False)
    with pytest.raises(GraphFormatError, match="an input neuron has no bias"):
        validate(one_channel)
    with pytest.raises(GraphFormatError, match=r"'x' has shape \(11, 3\); a raw graph"):
        validate(features, raw=True)


def _delete(key):
    def corrupt(graph):
        delattr(graph, key)
    return corrupt


def _set(key, index, value):
    def corrupt(graph):
        graph[key][index] = value
    return corrupt


def _assign(key, make):
    def corrupt(graph):
        graph[key] = make(graph[key])
    return corrupt


def _swap_edges(graph):
    order = torch.arange(graph.edge_index.size(1))
    order[[0, 1]] = order[[1, 0]]
    graph.edge_index = graph.edge_index[:, order]
    graph.edge_attr = graph.edge_attr[order]


def _layout_step(change):
    def corrupt(graph):
        import json
        steps = json.loads(graph.layout)
        change(steps)
        graph.layout = json.dumps(steps)
    return corrupt


def _other_layout(graph):
    graph.layout = nft_pyg.from_module(nn.Sequential(nn.Linear(2, 2))).layout


def _smaller_kernel_width(graph):
    graph.kernel_width = torch.tensor([2])
    graph.edge_attr = graph.edge_attr[:, :2]


NAN = float("nan")
CORRUPTIONS = {
    # required attributes, dtypes, shapes
    "missing x": (_delete("x"), "graph: 'x' is missing"),
    "missing edge_index": (_delete("edge_index"), "'edge_index' is missing"),
    "missing edge_attr": (_delete("edge_attr"), "'edge_attr' is missing"),
    "missing node_layer": (_delete("node_layer"), "'node_layer' is missing"),
    "missing node_role": (_delete("node_role"), "'node_role' is missing"),
    "missing node_pos": (_delete("node_pos"), "'node_pos' is missing"),
    "missing node_act": (_delete("node_act"), "'node_act' is missing"),
    "missing edge_layer": (_delete("edge_layer"), "'edge_layer' is missing"),
    "missing edge_kind": (_delete("edge_kind"), "'edge_kind' is missing"),
    "missing node_norm": (_delete("node_norm"), "'node_norm' is missing"),
    "missing kernel_width": (_delete("kernel_width"), "'kernel_width' is missing"),
    "missing layout": (_delete("layout"), "'layout' is missing"),
    "integer x": (_assign("x", lambda v: v.long()), "'x' should be a floating-point tensor"),
    "float node_layer": (_assign("node_layer", lambda v: v.float()),
                         "'node_layer' should have dtype torch.int64, got torch.float32"),
    "int32 edge_index": (_assign("edge_index", lambda v: v.int()),
                         "'edge_index' should have dtype torch.int64"),
    "float kernel_width": (_assign("kernel_width", lambda v: v.float()),
                           "'kernel_width' should have dtype torch.int64"),
    "edge_attr dtype differs from x": (_assign("edge_attr", lambda v: v.double()),
                                       "'edge_attr' has dtype torch.float64, x has "
                                       "torch.float32"),
    "x too short": (_assign("x", lambda v: v[:-1]), "'x' has shape (10, 1), expected [11, *]"),
    "node_pos too short": (_assign("node_pos", lambda v: v[:-1]),
                           "'node_pos' has shape (10,), expected [11]"),
    "edge_kind too long": (_assign("edge_kind", lambda v: torch.cat([v, v[:1]])),
                           "'edge_kind' has shape (27,), expected [26]"),
    "edge_attr width": (_assign("edge_attr", lambda v: v[:, :3]),
                        "'edge_attr' has shape (26, 3), expected [26, 4]"),
    "node_norm columns": (_assign("node_norm", lambda v: v[:, :3]),
                          "'node_norm' has shape (11, 3), expected [11, 4]"),
    "edge_index rows": (_assign("edge_index", lambda v: v[:1]),
                        "'edge_index' has shape (1, 26), expected [2, *]"),
    "kernel_width shape": (_assign("kernel_width", lambda v: v.repeat(2)),
                           "'kernel_width' has shape (2,), expected [1]"),
    "num_nodes": (lambda g: setattr(g, "num_nodes", 12),
                  "'num_nodes' is 12, the layout has 11 neurons"),
    # layout and kernel width
    "layout not JSON": (lambda g: setattr(g, "layout", "[{"), "'layout' is not a valid layout"),
    "layout not a string": (lambda g: setattr(g, "layout", 3),
                            "'layout' should be a JSON string, got int"),
    "layout unknown step": (_layout_step(lambda s: s[2].update(kind="softmax")),
                            "'layout' step 2"),
    "layout unknown activation": (_layout_step(lambda s: s[2].update(act="SWISH")),
                                  "unknown activation 'SWISH'"),
    "layout of another network": (_other_layout, "'x' has shape (11, 1), expected [4, *]"),
    "kernel_width too small": (_smaller_kernel_width,
                               "'kernel_width' is 2, smaller than the layout's largest kernel "
                               "(4 positions)"),
    # node ids
    "node_layer outside": (_set("node_layer", 10, 7), "'node_layer' of node 10 is 7, outside "
                           "[0, 3]"),
    "node_layer sizes": (_set("node_layer", 4, 2), "'node_layer' gives layer sizes [2, 2, 5, 2],"
                         " the layout has [2, 3, 4, 2]"),
    "node_layer order": (_assign("node_layer", lambda v: v[[0, 1, 2, 3, 5, 4, 6, 7, 8, 9, 10]]),
                         "'node_layer' is not sorted by layer: node 4 is in layer 2, "
                         "expected 1"),
    "node_pos": (_set("node_pos", 3, 0), "'node_pos' of node 3 (layer 1) is 0, expected 1"),
    "node_role": (_set("node_role", 10, int(NodeRole.HIDDEN)),
                  "'node_role' of node 10 is 1 (HIDDEN), expected 2 (OUTPUT)"),
    "node_act": (_set("node_act", 6, int(Activation.RELU)),
                 "'node_act' of node 6 is 1 (RELU), expected 5 (TANH)"),
    "node_act unknown code": (_set("node_act", 0, 42),
                              "'node_act' of node 0 is 42 (not a Activation code)"),
    # edges
    "edge_index outside": (_set("edge_index", (1, 0), 11),
                           "'edge_index' edge 0 is [0, 11], outside the node range [0, 11)"),
    "edge_layer outside": (_set("edge_layer", 0, 0), "'edge_layer' of edge 0 is 0, outside "
                           "[1, 3]"),
    "edge_layer vs target": (_set("edge_layer", 0, 2), "'edge_layer' of edge 0 is 2 but its "
                             "target node 2 is in neuron layer 1"),
    "edge skips a layer": (_set("edge_index", (0, 6), 0), "'edge_index' edge 6 goes from node 0"
                           " (layer 0) to node 5 (layer 2)"),
    "edge_kind": (_set("edge_kind", 0, int(EdgeKind.LINEAR)),
                  "'edge_kind' of edge 0 is 0 (LINEAR), expected 1 (CONV)"),
    "edge_kind flatten": (_set("edge_kind", 6, int(EdgeKind.LINEAR)),
                          "'edge_kind' of edge 6 is 0 (LINEAR), expected 2 (FLATTEN)"),
    "duplicate edges": (_set("edge_index", (slice(None), 1), torch.tensor([0, 2])),
                        "'edge_index' has duplicate edges [0, 1] (0 -> 2)"),
    "edge order": (_swap_edges, "'edge_index' is not in canonical order: edge 1 (0 -> 2, "
                   "layer 1) comes after edge 0"),
    # values
    "nan in x": (_set("x", (3, 0), NAN), "'x' holds NaN or inf (row 3)"),
    "inf in edge_attr": (_set("edge_attr", (7, 1), float("inf")),
                         "'edge_attr' holds NaN or inf (row 7)"),
    "nan in node_norm": (_set("node_norm", (2, 3), NAN), "'node_norm' holds NaN or inf (row 2)"),
    "kernel padding": (_set("edge_attr", (18, 2), 0.5),
                       "'edge_attr' of edge 18 (layer '7', 1 kernel positions) has nonzero "
                       "padding in columns 1..3"),
    "input bias": (_set("x", (1, 0), 0.5), "'x' of node 1 is 0.5, expected 0 (an input neuron "
                   "has no bias)"),
    "bias-free layer": (_set("x", (6, 0), 0.5), "'x' of node 6 is 0.5, expected 0 (in "
                        "bias-free layer '4' has no bias)"),
    "norm default": (_set("node_norm", (9, 0), 2.0), "'node_norm' of node 9, column 0 is 2.0, "
                     "expected the identity default 1.0"),
}


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_each_broken_invariant_is_caught(name):
    corrupt, expected = CORRUPTIONS[name]
    graph = example_graph()
    corrupt(graph)
    with pytest.raises(GraphFormatError) as info:
        validate(graph)
    assert expected in str(info.value), str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("name", ["nan in x", "inf in edge_attr", "nan in node_norm"])
def test_allow_nonfinite(name):
    corrupt, _ = CORRUPTIONS[name]
    graph = example_graph()
    corrupt(graph)
    validate(graph, allow_nonfinite=True)


def test_norm_layers_may_set_their_node_norm_entries():
    graph = example_graph()
    graph.node_norm[2:5] = 0.25  # BatchNorm on layer 1: all four columns
    graph.node_norm[5:9, :2] = 0.25  # LayerNorm on layer 2: weight and bias
    validate(graph)
    graph.node_norm[5, 3] = 0.25  # a LayerNorm has no running variance
    with pytest.raises(GraphFormatError, match="'node_norm' of node 5, column 3 is 0.25, "
                                               "expected the identity default 1.0"):
        validate(graph)
    module = nn.Sequential(nn.Linear(2, 3), nn.LayerNorm(3, bias=False), nn.Linear(3, 1))
    graph = nft_pyg.from_module(module)
    graph.node_norm[2:5, 0] = 0.5
    validate(graph)
    graph.node_norm[2, 1] = 0.5  # a LayerNorm without bias has no bias column
    with pytest.raises(GraphFormatError, match="'node_norm' of node 2, column 1"):
        validate(graph)


# --- batches ---------------------------------------------------------------------
def example_batch() -> Batch:
    return Batch.from_data_list([example_graph(), example_graph()])


def _batch_case(change):
    batch = example_batch()
    change(batch)
    with pytest.raises(GraphFormatError) as info:
        validate(batch)
    return str(info.value)


def test_batch_errors_name_the_graph():
    def act(batch):
        batch.node_act[11 + 6] = int(Activation.RELU)
    assert "graph 1 of the batch: 'node_act' of node 6 is 1 (RELU)" in _batch_case(act)

    def shifted(batch):  # ids must not be shifted by collation
        batch.node_layer[11:] += 4
    assert "graph 1 of the batch: 'node_layer' of node 0 is 4, outside [0, 3]" in \
        _batch_case(shifted)


def test_batch_vector_and_ptr():
    def unsorted(batch):
        batch.batch[0] = 1
    assert "'batch' is not sorted: node 1 belongs to graph 0 after a node of graph 1" in \
        _batch_case(unsorted)

    def ptr(batch):
        batch.ptr = batch.ptr.clone()
        batch.ptr[1] += 1
    assert "'ptr' is [0, 12, 22], expected the node offsets [0, 11, 22]" in _batch_case(ptr)

    def outside(batch):
        batch.batch[-1] = 2
    assert "'batch' holds graph ids outside [0, 2)" in _batch_case(outside)

    def negative(batch):
        batch.batch[0] = -1
    assert "'batch' holds graph ids outside [0, 2)" in _batch_case(negative)


def test_batch_edges():
    def crossing(batch):
        batch.edge_index[1, 0] = 11 + 2
    assert "'edge_index' edge 0 joins graph 0 to graph 1" in _batch_case(crossing)

    def ungrouped(batch):
        order = torch.arange(batch.edge_index.size(1)).roll(1)
        batch.edge_index = batch.edge_index[:, order]
    assert "edges are not grouped by graph: edge 1 belongs to graph 0" in \
        _batch_case(ungrouped)

    def outside(batch):
        batch.edge_index[0, 3] = 99
    assert "'edge_index' edge 3 points to node [99," in _batch_case(outside)


def test_batch_attribute_lengths():
    def longer(batch):
        batch.node_pos = torch.cat([batch.node_pos, batch.node_pos[:1]])
    assert "batch: 'node_pos' has 23 rows, the batch has 22 nodes" in _batch_case(longer)

    def shorter(batch):
        batch.edge_kind = batch.edge_kind[:-1]
    assert "batch: 'edge_kind' has 51 rows, the batch has 52 edges" in _batch_case(shorter)


def test_batch_graph_level_attributes():
    def layout(batch):
        batch.layout = "x"
    assert "'layout' should be a list of one JSON string per graph, got str" in \
        _batch_case(layout)

    def width(batch):
        batch.kernel_width = batch.kernel_width[:1]
    assert "'kernel_width' has shape (1,), expected [2]" in _batch_case(width)

    def missing(batch):
        del batch.ptr
    assert "batch: 'ptr' is missing" in _batch_case(missing)


def test_a_dataloader_batch_of_mixed_widths_needs_padding_first():
    graphs = [nft_pyg.from_module(m) for m, _ in
              random_architectures(5, 6, kinds=("cnn2d",))]
    width = max(int(g.kernel_width) for g in graphs)
    batch = Batch.from_data_list([PadKernels(width)(g) for g in graphs])
    validate(batch)
    rng = random.Random(0)
    corrupted = batch.clone()
    index = rng.randrange(len(graphs))
    corrupted.node_pos[int(corrupted.ptr[index])] = 5
    with pytest.raises(GraphFormatError, match=f"graph {index} of the batch: 'node_pos' of "
                                               "node 0"):
        validate(corrupted)
