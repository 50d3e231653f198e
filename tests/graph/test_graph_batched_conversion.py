"""from_modules / from_state_dicts: the batched conversion equals converting
and collating graph by graph, on its fast path and on its fallbacks."""
import random

import pytest
import torch
from architectures import assert_graphs_equal, random_architecture, random_mlp
from torch import nn
from torch_geometric.data import Batch

import nft_pyg


def one_by_one(modules, **kwargs):
    return Batch.from_data_list([nft_pyg.from_module(m, **kwargs) for m in modules])


def assert_batches_equal(batch, expected):
    got, want = batch.to_data_list(), expected.to_data_list()
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert_graphs_equal(a, b)
    for key in ("batch", "ptr", "edge_index"):
        assert torch.equal(batch[key], expected[key])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_same_architecture_matches_one_by_one(dtype):
    torch.manual_seed(0)
    modules = [nn.Sequential(nn.Linear(2, 8), nft_pyg.Sine(30.0), nn.Linear(8, 8),
                             nft_pyg.Sine(30.0), nn.Linear(8, 1)).to(dtype) for _ in range(5)]
    assert_batches_equal(nft_pyg.from_modules(modules), one_by_one(modules))


def test_cnn_and_kernel_width():
    torch.manual_seed(1)
    modules = [nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Conv2d(3, 4, 2), nn.Flatten(),
                             nn.Linear(16, 2)) for _ in range(3)]
    assert_batches_equal(nft_pyg.from_modules(modules, kernel_width=12),
                         one_by_one(modules, kernel_width=12))


def test_mixed_architectures_fall_back():
    rng = random.Random(3)
    modules = [random_architecture(rng)[0] for _ in range(4)]
    width = max(nft_pyg.graph.layout_of(m).kernel_width for m in modules)
    assert_batches_equal(nft_pyg.from_modules(modules, kernel_width=width),
                         one_by_one(modules, kernel_width=width))


def test_tracked_batchnorm_falls_back():
    modules = []
    for steps in (1, 3):
        module = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))
        for _ in range(steps):
            module(torch.randn(5, 3))
        modules.append(module.eval())
    assert_batches_equal(nft_pyg.from_modules(modules), one_by_one(modules))


def test_from_state_dicts_matches_from_state_dict():
    rng = random.Random(4)
    module, _ = random_mlp(rng)
    layout = nft_pyg.graph.layout_of(module)
    states = [{k: v + i for k, v in module.state_dict().items()} for i in range(3)]
    expected = Batch.from_data_list([nft_pyg.from_state_dict(s, layout) for s in states])
    assert_batches_equal(nft_pyg.from_state_dicts(states, layout), expected)


def test_nonfinite_is_named():
    modules = [nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1)) for _ in range(2)]
    with torch.no_grad():
        modules[1][1].weight[0, 1] = float("nan")
    with pytest.raises(ValueError, match=r"1\.weight"):
        nft_pyg.from_modules(modules)
    batch = nft_pyg.from_modules(modules, nonfinite="keep")
    assert torch.isnan(batch.edge_attr).sum() == 1


def test_empty_input_is_an_error():
    with pytest.raises(ValueError, match="at least one"):
        nft_pyg.from_modules([])
