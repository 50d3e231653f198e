"""Bad input to the converters raises errors that name the culprit."""
import pytest
import torch
from architectures import randomize
from torch import nn

import nft_pyg
from nft_pyg.graph import UnsupportedModuleError, from_state_dict, layout_of


def error_message(call, error=Exception) -> str:
    with pytest.raises(error) as info:
        call()
    return str(info.value)


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.first = nn.Linear(3, 3)
        self.second = nn.Linear(3, 3)

    def forward(self, x):
        return self.second(torch.relu(self.first(x))) + x


class Branching(nn.Module):
    def __init__(self):
        super().__init__()
        self.left = nn.Linear(3, 2)
        self.right = nn.Linear(3, 2)

    def forward(self, x):
        return torch.cat([self.left(x), self.right(x)], dim=1)


class DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        return self.fc(x) if x.sum() > 0 else x


@pytest.mark.parametrize("module, expected", [
    (nn.Sequential(nn.Linear(3, 4), nn.Softmax(dim=-1)),
     ["module 1 (Softmax) is not supported", "Supported: Linear"]),
    (nn.Sequential(nn.Conv2d(2, 4, 4, padding="same")),
     ["module 0 (Conv2d)", "padding='same' with kernel_size=(4, 4)", "pads unevenly"]),
    (nn.Sequential(nn.Conv2d(2, 3, 1), nn.LayerNorm([3, 4, 4])),
     ["module 1 (LayerNorm)", "normalized_shape=(3, 4, 4)"]),
    (nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Linear(3, 2)),
     ["module 2 (Linear)", "needs a Flatten in between"]),
    (nn.Sequential(nn.Conv1d(2, 3, 3), nn.Flatten(), nn.Linear(7, 2)),
     ["module 2 (Linear)", "in_features=7 is not a multiple of the 3 channels"]),
    (nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(5, 2)),
     ["layer '2' takes 5 input neurons but '0' gives 4"]),
    (nn.Sequential(nn.MaxPool2d(2, return_indices=True), nn.Conv2d(1, 1, 1)),
     ["module 0 (MaxPool2d)", "return_indices=True"]),
    (nn.Sequential(nn.ReLU(), nn.Dropout()),
     ["needs at least one Linear or Conv layer"]),
    (nn.Sequential(nn.Linear(3, 3), nn.Sequential(nn.TransformerEncoderLayer(4, 1))),
     ["module 1.0 (TransformerEncoderLayer) is not supported"]),
    (Branching(), ["the network (Branching): its forward branches: a layer reads a value "
                   "other than the previous layer's output"]),
    (DataDependent(), ["the network (DataDependent): its forward has Python control flow "
                       "(if / for / while) that depends on tensor values"]),
    (nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(5), nn.Linear(4, 2)),
     ["norm '1' has 5 features but its layer has 4 neurons"]),
    (nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.LayerNorm(4), nn.Linear(4, 2)),
     ["norm '2' is the second norm on neuron layer 1"]),
])
def test_unsupported_modules_are_named(module, expected):
    message = error_message(lambda: nft_pyg.from_module(module), (TypeError, ValueError))
    for part in expected:
        assert part in message, message


def test_nested_unsupported_module_is_named_by_its_path():
    module = nn.Sequential(nn.Linear(2, 3), nn.Sequential(nn.ReLU(), nn.Softmax(dim=1)))
    message = error_message(lambda: nft_pyg.from_module(module), UnsupportedModuleError)
    assert "module 1.1 (Softmax) is not supported" in message


def test_from_module_needs_a_module():
    message = error_message(lambda: nft_pyg.from_module(torch.zeros(3)), TypeError)
    assert "expected a torch.nn.Module, got Tensor" in message


def mlp_and_layout():
    module = randomize(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)), 0)
    return dict(module.state_dict()), layout_of(module)


def test_missing_state_dict_key_is_named():
    state, layout = mlp_and_layout()
    del state["2.bias"]
    message = error_message(lambda: from_state_dict(state, layout), KeyError)
    assert "no entry '2.bias'" in message and "expected shape (2,)" in message


def test_state_dict_shape_mismatch_is_named():
    state, layout = mlp_and_layout()
    state["2.weight"] = torch.zeros(2, 5)
    message = error_message(lambda: from_state_dict(state, layout), ValueError)
    assert "'2.weight' has shape (2, 5), the layout expects (2, 4)" in message


def test_state_dict_entry_that_is_not_a_tensor_is_named():
    state, layout = mlp_and_layout()
    state["0.bias"] = [0.0] * 4
    message = error_message(lambda: from_state_dict(state, layout), TypeError)
    assert "'0.bias' is a list, not a tensor" in message


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nonfinite_weights_error_or_keep(value):
    module = randomize(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)), 0)
    with torch.no_grad():
        module[2].bias[1] = value
    message = error_message(lambda: nft_pyg.from_module(module), ValueError)
    assert "'2.bias' holds NaN or inf" in message and "nonfinite='keep'" in message
    graph = nft_pyg.from_module(module, nonfinite="keep")
    kept = graph.x[3 + 4 + 1, 0]
    assert torch.isnan(kept) if value != value else kept == value
    message = error_message(lambda: nft_pyg.from_module(module, nonfinite="drop"), ValueError)
    assert "nonfinite must be one of ('error', 'keep'), got 'drop'" in message


def test_kernel_width_smaller_than_the_kernels():
    module = nn.Sequential(nn.Conv2d(1, 2, 3))
    message = error_message(lambda: nft_pyg.from_module(module, kernel_width=4), ValueError)
    assert "kernel_width=4 is smaller than the largest kernel of the network (9 positions)" \
        in message


def test_bad_layout_strings():
    state, _ = mlp_and_layout()
    assert "not a valid layout JSON string" in error_message(
        lambda: from_state_dict(state, "[{"), ValueError)
    assert "expected a Layout, its JSON string or a list of steps, got int" in error_message(
        lambda: from_state_dict(state, 3), TypeError)


def test_to_state_dict_rejects_feature_graphs_and_batches():
    graph = nft_pyg.from_module(nn.Sequential(nn.Linear(3, 2)))
    features = graph.clone()
    features.x = torch.zeros(graph.num_nodes, 2)
    message = error_message(lambda: nft_pyg.to_state_dict(features), ValueError)
    assert "expects a raw graph with x [N, 1] and edge_attr [E, 1]" in message
    from torch_geometric.data import Batch
    batch = Batch.from_data_list([graph, graph])
    assert "got a batch of 2 graphs" in error_message(lambda: nft_pyg.to_module(batch))


def test_to_state_dict_rejects_biases_of_bias_free_layers_and_nonzero_padding():
    graph = nft_pyg.from_module(nn.Sequential(nn.Linear(3, 2, bias=False)))
    graph.x[4, 0] = 1.0
    assert "layer '0' has no bias but the graph gives its neurons nonzero biases" in \
        error_message(lambda: nft_pyg.to_state_dict(graph), ValueError)
    graph = nft_pyg.from_module(nn.Sequential(nn.Linear(3, 2)), kernel_width=2)
    graph.edge_attr[0, 1] = 1.0
    assert "layer '0' has nonzero entries past its 1 kernel positions" in \
        error_message(lambda: nft_pyg.to_state_dict(graph), ValueError)


# --- bugs found in nft_pyg/graph (tests that fail until fixed) -------------------
def test_a_bare_leaf_module_converts():
    """``from_module(nn.Linear(3, 2))`` looks for the key '.weight': the state-dict
    key of a step named '' (the root) must be 'weight', not '.weight'."""
    module = randomize(nn.Linear(3, 2), 0)
    graph = nft_pyg.from_module(module)
    state = nft_pyg.to_state_dict(graph)
    assert list(state) == ["weight", "bias"]
    assert torch.equal(state["weight"], module.weight)


def test_layernorm_on_a_conv_feature_map_is_rejected():
    """``LayerNorm(C)`` on a [B, C, H, W] map normalises the last spatial axis,
    not the C channel neurons, so its parameters are not per neuron
    (``node_norm``): a channel permutation of the graph would change the
    network. It must be rejected like LayerNorm([C, H, W])."""
    module = nn.Sequential(nn.Conv2d(2, 3, 1), nn.LayerNorm(3), nn.Conv2d(3, 1, 1))
    message = error_message(lambda: nft_pyg.from_module(module), UnsupportedModuleError)
    assert "module 1 (LayerNorm)" in message


def test_identity_after_an_activation_keeps_the_activation_in_node_act():
    """``Linear, ReLU, Identity, Linear``: the hidden neurons are ReLU neurons,
    but graph_structure lets the no-op Identity overwrite node_act."""
    module = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Identity(), nn.Linear(4, 2))
    graph = nft_pyg.from_module(module)
    assert graph.node_act[graph.node_layer == 1].tolist() == [1] * 4  # Activation.RELU


class SharedActivation(nn.Module):
    """The common idiom of one parameter-free activation module used after every layer."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(3, 4), nn.Linear(4, 4), nn.Linear(4, 2)
        self.act = nn.ReLU()

    def forward(self, x):
        return self.fc3(self.act(self.fc2(self.act(self.fc1(x)))))


def test_a_shared_parameter_free_module_is_accepted():
    """trace.py rejects any module applied twice; only modules with parameters or
    buffers (shared weights) need rejecting."""
    module = randomize(SharedActivation(), 0).eval()
    graph = nft_pyg.from_module(module)
    example = torch.randn(2, 3)
    with torch.no_grad():
        assert torch.equal(nft_pyg.to_module(graph).eval()(example), module(example))


def test_a_module_with_weights_applied_twice_is_rejected():
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 3)

        def forward(self, x):
            return self.fc(torch.relu(self.fc(x)))

    message = error_message(lambda: nft_pyg.from_module(Shared()), UnsupportedModuleError)
    assert "module fc (Linear): the same layer (with weights) is applied twice;" in message
