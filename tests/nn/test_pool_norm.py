"""PoolNorm and the ``pool_norm`` option of NFN / NFT: standardised pooled
vectors, still invariant, single-network batches allowed."""
import pytest
import torch
from torch import nn
from torch_geometric.data import Batch

import nft_pyg
from nft_pyg.nn import PoolNorm
from nft_pyg.nn.models import NFN, NFT
from nft_pyg.symmetry import check_equivariance

torch.set_num_threads(1)


def _graphs(count=6):
    torch.manual_seed(0)
    return [nft_pyg.from_module(nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2))
                                .double()) for _ in range(count)]


def _models(layout):
    torch.manual_seed(1)
    return [NFN.for_layout(layout, "np", 6, 3, head_hidden=8, pool_norm=True),
            NFN.for_layout(layout, "hnp", 6, 3, head_hidden=8, pool_norm=True),
            NFT.for_layout(layout, 8, 3, heads=2, pool_norm=True)]


def test_pool_norm_standardises_each_feature_over_the_batch():
    norm = PoolNorm(4).double()
    pooled = torch.randn(7, 4, dtype=torch.float64) * 0.1 + torch.arange(4.0).double()
    out = norm(pooled)
    expected = (pooled - pooled.mean(0)) / torch.sqrt(pooled.var(0, unbiased=False) + norm.eps)
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=0)
    assert out.std(0).min() > 0.9   # a spread of 0.1 is now of order 1


def test_pool_norm_single_network_uses_running_statistics():
    norm = PoolNorm(3).double()
    norm(torch.randn(5, 3, dtype=torch.float64) + 4.0)  # updates the running stats
    single = torch.randn(1, 3, dtype=torch.float64)
    expected = (single - norm.running_mean) / torch.sqrt(norm.running_var + norm.eps)
    running = norm.running_mean.clone()
    torch.testing.assert_close(norm(single), expected)
    assert torch.equal(norm.running_mean, running)


@pytest.mark.parametrize("index", [0, 1, 2])
def test_pool_norm_models_are_invariant_and_use_the_norm(index):
    graphs = _graphs()
    batch = Batch.from_data_list(graphs)
    model = _models(graphs[0].layout)[index].double()
    assert isinstance(model.head[0], PoolNorm)
    model.train()   # batch statistics: the output of one graph depends on the others
    report = check_equivariance(lambda graph: model(graph), batch, invariant=True, atol=1e-10,
                                generator=torch.Generator().manual_seed(2))
    assert report.passed and report.nontrivial_trials > 0
    alone = model(Batch.from_data_list(graphs[:1]))
    with_others = model(batch)[:1]
    assert not torch.allclose(alone, with_others)
    model.eval()
    torch.testing.assert_close(model(Batch.from_data_list(graphs[:1])), model(batch)[:1])


def test_pool_norm_off_by_default():
    layout = _graphs(1)[0].layout
    assert not any(isinstance(m, PoolNorm) for m in NFN.for_layout(layout, "np", 4, 2).modules())
    assert not any(isinstance(m, PoolNorm) for m in NFT.for_layout(layout, 4, 2).modules())
