"""from_module reads the tensors each layer uses and equals from_state_dict of
the module's state dict; graphs copy weights and own their storage."""
import math
import pickle

import pytest
import torch
from architectures import assert_graphs_equal, random_architectures
from torch import nn

import nft_pyg
from nft_pyg.graph import layout_of
from nft_pyg.graph.modules import Sine


def from_state(module, **kwargs):
    return nft_pyg.from_state_dict(module.state_dict(), layout_of(module), **kwargs)


def siren(widths=(2, 16, 16, 1)):
    layers = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers += [nn.Linear(a, b)] + ([Sine(30.0)] if i < len(widths) - 2 else [])
    return nn.Sequential(*layers)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_random_architectures_equal_their_state_dicts(dtype):
    for module, _ in random_architectures(11, 30, dtype=dtype):
        assert_graphs_equal(nft_pyg.from_module(module), from_state(module))


@pytest.mark.parametrize("kernel_width", [None, 12])
def test_bias_free_layers_a_root_leaf_and_padding(kernel_width):
    for module in (nn.Sequential(nn.Linear(3, 4, bias=False), nn.Tanh(), nn.Linear(4, 2)),
                   nn.Sequential(nn.Conv1d(2, 3, 2, bias=False), nn.Flatten(), nn.Linear(9, 2)),
                   nn.Linear(3, 2), nn.Linear(3, 2).double(), nn.Conv2d(2, 3, 3)):
        assert_graphs_equal(nft_pyg.from_module(module, kernel_width=kernel_width),
                            from_state(module, kernel_width=kernel_width))


def test_graphs_copy_the_weights_and_own_their_ids():
    module = siren()
    first, second = nft_pyg.from_module(module), nft_pyg.from_module(module)
    before = first.edge_attr.clone()
    with torch.no_grad():
        module[0].weight.add_(1.0)
    assert torch.equal(first.edge_attr, before)
    second.node_layer.add_(5)
    second.edge_index.add_(5)
    second.kernel_width.add_(5)
    third = nft_pyg.from_module(module)
    for graph in (first, third):
        assert int(graph.node_layer.max()) == 3 and int(graph.edge_index.max()) == 34
        assert graph.kernel_width.tolist() == [1]
    # every tensor owns its storage: pickling writes each once
    for value in third.values():
        if isinstance(value, torch.Tensor):
            assert value.untyped_storage().nbytes() == value.numel() * value.element_size()
    assert len(pickle.dumps(third)) < 1.2 * sum(
        v.numel() * v.element_size() for v in third.values() if isinstance(v, torch.Tensor)) \
        + 4096


def test_mixed_dtypes_take_the_first_layers_dtype():
    module = siren()
    module[2].double()
    graph = nft_pyg.from_module(module)
    assert graph.edge_attr.dtype == torch.float32
    assert_graphs_equal(graph, from_state(module))


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_nonfinite_weights_are_reported_by_name(bad):
    module = siren()
    with torch.no_grad():
        module[2].bias[3] = bad
    with pytest.raises(ValueError, match=r"'2\.bias' holds NaN or inf"):
        nft_pyg.from_module(module)
    kept = nft_pyg.from_module(module, nonfinite="keep")
    assert bool(torch.isnan(kept.x).any()) == math.isnan(bad)


def test_an_overflowing_sum_is_not_an_error():
    module = siren()
    with torch.no_grad():
        module[0].weight.fill_(3e38)
    graph = nft_pyg.from_module(module)
    assert torch.isfinite(graph.edge_attr).all()


def test_a_wrong_weight_shape_is_reported():
    module = siren()
    module[2].weight = nn.Parameter(torch.zeros(16, 15))
    with pytest.raises(ValueError, match=r"'2\.weight' has shape \(16, 15\)"):
        nft_pyg.from_module(module)


def test_the_template_cache_keys_on_the_layout():
    a, b = siren(), siren()
    assert nft_pyg.from_module(a).layout == nft_pyg.from_module(b).layout
    other = siren()
    other[1].w0 = 1.0
    assert '"w0":1.0' in nft_pyg.from_module(other).layout
    assert nft_pyg.from_module(other).layout != nft_pyg.from_module(a).layout


def test_state_dict_hooks_play_no_part():
    """A state-dict hook changes what is saved, not what the layer computes."""
    module = siren()

    def scale(module, state, prefix, local_metadata):
        state[prefix + "weight"] = state[prefix + "weight"] * 2

    module[0]._register_state_dict_hook(scale)
    graph = nft_pyg.from_module(module)
    rows = module[0].weight.numel()
    assert torch.equal(graph.edge_attr[:rows, 0], module[0].weight.detach().reshape(-1))
