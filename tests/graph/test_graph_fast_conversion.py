"""from_module's fast path (parameters gathered straight from the leaves) gives
exactly the graph of the general path (state dict -> graph), and hands every
unusual module to the general path."""
import math

import pytest
import torch
from architectures import assert_graphs_equal, random_architectures, randomize
from torch import nn

import nft_pyg
from nft_pyg.graph import convert
from nft_pyg.graph.modules import Sine


def general_path(module, kernel_width=None, nonfinite="error"):
    steps, leaves = convert._steps_and_leaves(module)
    template = convert._template_of_steps(steps, module, kernel_width)
    return convert._graph_from_state(template, convert._module_state(module, steps, leaves),
                                     nonfinite)


def fast_path(module, kernel_width=None, nonfinite="error"):
    steps, leaves = convert._steps_and_leaves(module)
    template = convert._template_of_steps(steps, module, kernel_width)
    return convert._gathered_graph(template, module, leaves, nonfinite)


def assert_same(graph, expected):
    assert_graphs_equal(graph, expected)
    assert list(graph.keys()) == list(expected.keys())  # attribute order, as collation sees it
    assert not any(value.requires_grad for value in graph.values()
                   if isinstance(value, torch.Tensor))


def siren(widths=(2, 16, 16, 1)):
    layers = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers += [nn.Linear(a, b)] + ([Sine(30.0)] if i < len(widths) - 2 else [])
    return nn.Sequential(*layers)


def zoo_cnn():
    return nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Conv2d(8, 16, 3), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_random_architectures_match_the_general_path(dtype):
    taken = 0
    for module, _ in random_architectures(11, 30, dtype=dtype):
        expected = general_path(module)
        assert_same(nft_pyg.from_module(module), expected)
        fast = fast_path(module)
        taken += fast is not None
        if fast is not None:
            assert_same(fast, expected)
    assert taken >= 10  # the fast path is really exercised


@pytest.mark.parametrize("factory", [siren, zoo_cnn])
@pytest.mark.parametrize("kernel_width", [None, 12])
def test_sirens_and_cnns_take_the_fast_path(factory, kernel_width):
    module = factory()
    fast = fast_path(module, kernel_width)
    assert fast is not None
    assert_same(fast, general_path(module, kernel_width))
    assert_same(nft_pyg.from_module(module, kernel_width=kernel_width), fast)


def test_bias_free_layers_and_a_root_leaf():
    for module in (nn.Sequential(nn.Linear(3, 4, bias=False), nn.Tanh(), nn.Linear(4, 2)),
                   nn.Sequential(nn.Conv1d(2, 3, 2, bias=False), nn.Flatten(), nn.Linear(9, 2)),
                   nn.Linear(3, 2), nn.Linear(3, 2).double(), nn.Conv2d(2, 3, 3)):
        expected = general_path(module)
        assert_same(nft_pyg.from_module(module), expected)


def test_graphs_copy_the_weights_and_own_their_ids():
    module = siren()
    first, second = nft_pyg.from_module(module), nft_pyg.from_module(module)
    before = first.edge_attr.clone()
    with torch.no_grad():
        module[0].weight.add_(1.0)
        module[0].bias.add_(1.0)
    assert torch.equal(first.edge_attr, before)
    second.node_layer.add_(5)
    second.edge_index.add_(5)
    second.kernel_width.add_(5)
    third = nft_pyg.from_module(module)
    for graph in (first, third):
        assert int(graph.node_layer.max()) == 3 and int(graph.edge_index.max()) == 34
        assert graph.kernel_width.tolist() == [1]


def test_mixed_dtypes_fall_back_and_convert_like_the_general_path():
    module = siren()
    module[2].double()
    assert fast_path(module) is None
    graph = nft_pyg.from_module(module)
    assert graph.edge_attr.dtype == torch.float32
    assert_same(graph, general_path(module))


def test_norms_and_state_dict_hooks_fall_back():
    normed = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.ReLU(), nn.Linear(4, 2))
    randomize(normed, 0)
    assert fast_path(normed) is None
    assert_same(nft_pyg.from_module(normed), general_path(normed))

    hooked = siren()

    def scale(module, state, prefix, local_metadata):
        state[prefix + "weight"] = state[prefix + "weight"] * 2

    hooked[0]._register_state_dict_hook(scale)
    assert fast_path(hooked) is None
    graph = nft_pyg.from_module(hooked)
    rows = hooked[0].weight.numel()
    assert torch.equal(graph.edge_attr[:rows, 0], 2 * hooked[0].weight.detach().reshape(-1))


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_nonfinite_weights_are_reported_by_name(bad):
    module = siren()
    with torch.no_grad():
        module[2].bias[3] = bad
    with pytest.raises(ValueError, match=r"'2\.bias' holds NaN or inf"):
        nft_pyg.from_module(module)
    kept = nft_pyg.from_module(module, nonfinite="keep")
    expected = general_path(module, nonfinite="keep")
    assert list(kept.keys()) == list(expected.keys())
    for key in expected.keys():
        if isinstance(expected[key], torch.Tensor):  # NaN != NaN: compare bit patterns
            assert kept[key].dtype == expected[key].dtype
            torch.testing.assert_close(kept[key], expected[key], rtol=0, atol=0, equal_nan=True)
    assert bool(torch.isnan(kept.x).any()) == math.isnan(bad)


def test_overflowing_sum_is_not_an_error():
    module = siren()
    with torch.no_grad():
        module[0].weight.fill_(3e38)
    graph = nft_pyg.from_module(module)
    assert torch.isfinite(graph.edge_attr).all()
    assert_same(graph, general_path(module))


def test_wrong_weight_shape_is_reported_by_the_general_path():
    module = siren()
    module[2].weight = nn.Parameter(torch.zeros(16, 15))
    with pytest.raises(ValueError, match=r"'2\.weight' has shape \(16, 15\)"):
        nft_pyg.from_module(module)


def test_template_cache_keys_on_the_layout():
    # equal reprs reuse a template; different hyper-parameters never do
    a, b = siren(), siren()
    assert nft_pyg.from_module(a).layout == nft_pyg.from_module(b).layout
    other = siren()
    other[1].w0 = 1.0
    assert nft_pyg.from_module(other).layout != nft_pyg.from_module(a).layout
    assert '"w0":1.0' in nft_pyg.from_module(other).layout
