"""WeightSpace <-> graphs, modules and state dicts: exact conversions."""
import copy
import random

import pytest
import torch
from architectures import random_architecture, random_cnn, random_mlp, randomize
from torch import nn
from torch_geometric.data import Batch

import nft_pyg
from nft_pyg import WeightSpace
from nft_pyg.graph.validate import validate

KINDS = ("mlp", "cnn1d", "cnn2d", "cnn3d", "custom")


def same_architecture(seed: int, count: int, dtype=torch.float64, kinds=KINDS):
    """``count`` networks of one random architecture with different weights."""
    rng = random.Random(seed)
    module, example = random_architecture(rng, kinds=kinds, dtype=dtype)
    modules = [module] + [randomize(copy.deepcopy(module), rng) for _ in range(count - 1)]
    return modules, example


def equal_spaces(a: WeightSpace, b: WeightSpace) -> bool:
    return len(a.weights) == len(b.weights) and all(
        x.shape == y.shape and x.dtype == y.dtype and torch.equal(x, y)
        for x, y in zip(a.weights + a.biases, b.weights + b.biases))


@pytest.mark.parametrize("seed", range(8))
def test_from_graph_equals_from_modules(seed):
    modules, _ = same_architecture(seed, count=3)
    graphs = [nft_pyg.from_module(m) for m in modules]
    from_modules = WeightSpace.from_modules(modules)
    assert equal_spaces(WeightSpace.from_graph(Batch.from_data_list(graphs)), from_modules)
    assert equal_spaces(WeightSpace.from_graph(graphs[1]),
                        WeightSpace.from_modules(modules[1:2]))
    layout = graphs[0].layout_obj
    for layer, weight, bias in zip(layout.weight_layers(), from_modules.weights,
                                   from_modules.biases):
        assert weight.shape == (3, 1, layer.out_neurons, layer.in_neurons, *layer.kernel_shape)
        for b, module in enumerate(modules):
            state = module.state_dict()
            assert torch.equal(weight[b, 0].reshape(layer.weight_shape),
                               state[f"{layer.name}.weight"])
            expected = state.get(f"{layer.name}.bias", torch.zeros(layer.out_neurons,
                                                                    dtype=torch.float64))
            assert torch.equal(bias[b, 0], expected)


@pytest.mark.parametrize("seed", range(8))
def test_to_graph_gives_back_the_raw_graphs(seed):
    modules, example = same_architecture(seed, count=3)
    graphs = [nft_pyg.from_module(m) for m in modules]
    batch = WeightSpace.from_modules(modules).to_graph()
    validate(batch)
    for graph, back, module in zip(graphs, batch.to_data_list(), modules):
        # norms (node_norm, batch counts in the layout) are not part of the tensor formulation
        skipped = {"node_norm", "layout"} if graph.layout_obj.has_norms else set()
        for key in graph.keys():
            if key not in skipped:
                value = graph[key]
                assert torch.equal(back[key], value) if torch.is_tensor(value) else \
                    back[key] == value, key
        if not graph.layout_obj.has_norms:
            with torch.no_grad():
                assert torch.equal(nft_pyg.to_module(back).eval()(example), module(example))


@pytest.mark.parametrize("seed", range(6))
def test_state_dicts_round_trip(seed):
    modules, _ = same_architecture(seed, count=2)
    space = WeightSpace.from_modules(modules)
    for module, state in zip(modules, space.to_state_dicts()):
        original = {k: v for k, v in module.state_dict().items()
                    if k.endswith(("weight", "bias")) and k in state}
        assert set(state) == {f"{layer.name}.{suffix}" for layer in space.layout.weight_layers()
                              for suffix in ("weight", "bias")
                              if suffix == "weight" or layer.bias}
        for key, value in original.items():
            assert torch.equal(state[key], value), key
    assert equal_spaces(WeightSpace.from_state_dicts(space.to_state_dicts(), space.layout),
                        space)


@pytest.mark.parametrize("make", [random_mlp, lambda rng, **kw: random_cnn(rng, dim=2, **kw),
                                  lambda rng, **kw: random_cnn(rng, dim=3, **kw)])
def test_to_modules_compute_the_same_function(make):
    rng = random.Random(0)
    # the tensor formulation drops norms: norm-free networks
    module, example = make(rng, norms=False, dtype=torch.float64)
    modules = [module, randomize(copy.deepcopy(module), rng)]
    for module, rebuilt in zip(modules, WeightSpace.from_modules(modules).to_modules()):
        with torch.no_grad():
            assert torch.equal(rebuilt.eval()(example), module(example))


@pytest.mark.parametrize("seed", range(8))
def test_fold_then_unfold_is_exact(seed):
    modules, _ = same_architecture(seed, count=2)
    space = WeightSpace.from_modules(modules)
    shapes = [layer.kernel_shape for layer in space.layout.weight_layers()]
    width = space.layout.kernel_width
    folded = space.fold_kernels()
    assert folded.channels == width and all(w.dim() == 4 for w in folded.weights)
    # channel-major: channel position p of edge (j, i) is kernel entry p (0 past the kernel)
    for layer, dense, kernel in zip(space.layout.weight_layers(), folded.weights,
                                    space.weights):
        flat = kernel.reshape(*kernel.shape[:4], -1)
        assert torch.equal(dense[:, : layer.positions], flat[:, 0].permute(0, 3, 1, 2))
        assert (dense[:, layer.positions:] == 0).all()
    for dense, bias in zip(folded.biases, space.biases):
        assert torch.equal(dense[:, 0], bias[:, 0]) and (dense[:, 1:] == 0).all()
    assert equal_spaces(folded.unfold_kernels(shapes), space)


def test_unfold_kernels_inverts_fold_kernels_with_a_padded_width():
    """Fails on the lead's WeightSpace: unfold_kernels infers the width from the
    kernel shapes, so a space folded to a larger (batch-wide) width comes back
    with the wrong channel count (MLP) or a reshape error (CNN)."""
    mlp = randomize(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)), 0)
    space = WeightSpace.from_modules([mlp])
    folded = space.fold_kernels(3)  # e.g. padded to batch with 3-tap convs
    try:
        unfolded = folded.unfold_kernels([(), ()], kernel_width=3)
    except TypeError:  # no kernel_width argument yet: the width is guessed
        unfolded = folded.unfold_kernels([(), ()])
    assert unfolded.channels == 1
    assert equal_spaces(unfolded, space)


def test_folded_weight_space_is_the_operator_view_of_a_raw_graph():
    module, _ = random_cnn(random.Random(4), dim=2, head="spatial", dtype=torch.float64)
    graph = nft_pyg.from_module(module)
    width = int(graph.kernel_width)
    raw = WeightSpace.from_graph(graph)
    folded = raw.fold_kernels()
    # operator features of a raw CNN graph: edge_attr as is, x zero-padded with the bias first
    x = torch.nn.functional.pad(graph.x, (0, width - 1))
    assert equal_spaces(WeightSpace.from_features(graph, x, graph.edge_attr), folded)
    features = folded.to_graph()
    validate(features)
    assert features.kernel_width.tolist() == [1]
    assert torch.equal(features.edge_attr, graph.edge_attr)
    hidden = graph.node_layer > 0
    assert torch.equal(features.x[hidden], x[hidden]) and (features.x[~hidden] == 0).all()


def test_from_features_drops_input_neurons_and_reads_channels():
    graph = nft_pyg.from_module(random_mlp(0, depth=2, dtype=torch.float64)[0])
    x = torch.randn(graph.num_nodes, 3, dtype=torch.float64)
    edge_attr = torch.randn(graph.edge_index.size(1), 3, dtype=torch.float64)
    space = WeightSpace.from_features(graph, x, edge_attr)
    assert space.channels == 3
    back = space.to_graph()
    assert torch.equal(back.edge_attr, edge_attr)
    hidden = graph.node_layer > 0
    assert torch.equal(back.x[hidden], x[hidden]) and (back.x[~hidden] == 0).all()
    with pytest.raises(ValueError, match="node features have 3 channels, edge features 2"):
        WeightSpace.from_features(graph, x, edge_attr[:, :2])


def test_pruned_graph_gives_zero_weights():
    module = randomize(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)), 0).double()
    graph = nft_pyg.from_module(module)
    keep = torch.ones(graph.edge_index.size(1), dtype=torch.bool)
    keep[[0, 5, 13]] = False
    pruned = graph.clone()
    for key in ("edge_index", "edge_attr", "edge_layer", "edge_kind"):
        pruned[key] = graph[key][keep] if key != "edge_index" else graph[key][:, keep]
    validate(pruned)
    space = WeightSpace.from_graph(pruned)
    state = nft_pyg.to_state_dict(pruned)
    weight = module[0].weight.detach().clone()
    weight.view(-1)[[0, 5]] = 0
    assert torch.equal(space.weights[0][0, 0], weight) and torch.equal(state["0.weight"], weight)
    assert space.weights[1][0, 0].view(-1)[1] == 0 and state["2.weight"].view(-1)[1] == 0


def test_mixed_architectures_are_rejected():
    a = nft_pyg.from_module(random_mlp(0, depth=2)[0])
    b = nft_pyg.from_module(random_mlp(1, depth=3)[0])
    with pytest.raises(ValueError, match="mixes architectures"):
        WeightSpace.from_graph(Batch.from_data_list([a, b]))
    with pytest.raises(ValueError, match="differ in architecture"):
        WeightSpace.from_modules([random_mlp(0, depth=2)[0], random_mlp(1, depth=3)[0]])
