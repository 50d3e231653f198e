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


def _pool_norm_worker(rank: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=2)
    try:
        norm, pooled, target = _pool_norm_case()
        rows = slice(0, 3) if rank == 0 else slice(3, 5)   # 3 / 2 networks
        local = pooled[rows].clone().requires_grad_()
        out = norm(local)
        (out * target[rows]).sum().backward()
        for parameter in norm.parameters():    # what DDP does (it averages; we sum)
            dist.all_reduce(parameter.grad)
        torch.save({"out": out.detach(), "input_grad": local.grad,
                    "weight_grad": norm.weight.grad, "bias_grad": norm.bias.grad,
                    "running_mean": norm.running_mean, "running_var": norm.running_var},
                   f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _pool_norm_case():
    torch.manual_seed(3)
    norm = PoolNorm(4).double()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.normal_()
    pooled = torch.randn(5, 4, dtype=torch.float64) * 0.2 + 1.0
    return norm, pooled, torch.randn(5, 4, dtype=torch.float64)


def test_pool_norm_uses_the_global_batch_under_torch_distributed(tmp_path):
    """2 gloo processes with 3 and 2 networks == one process with all 5:
    outputs, input and parameter gradients, running statistics."""
    import torch.multiprocessing as mp
    from distributed_helpers import free_port

    mp.spawn(_pool_norm_worker, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    norm, pooled, target = _pool_norm_case()
    whole = pooled.clone().requires_grad_()
    out = norm(whole)
    (out * target).sum().backward()
    close = dict(rtol=0, atol=1e-10)
    torch.testing.assert_close(torch.cat([ranks[0]["out"], ranks[1]["out"]]), out.detach(),
                               **close)
    torch.testing.assert_close(torch.cat([ranks[0]["input_grad"], ranks[1]["input_grad"]]),
                               whole.grad, **close)
    for rank in ranks:
        torch.testing.assert_close(rank["weight_grad"], norm.weight.grad, **close)
        torch.testing.assert_close(rank["bias_grad"], norm.bias.grad, **close)
        torch.testing.assert_close(rank["running_mean"], norm.running_mean, **close)
        torch.testing.assert_close(rank["running_var"], norm.running_var, **close)
    # per-rank statistics would differ: the first 3 rows alone are normalised otherwise
    alone = PoolNorm(4).double()
    alone.load_state_dict(_pool_norm_case()[0].state_dict())
    assert not torch.allclose(alone(pooled[:3]), ranks[0]["out"], atol=1e-3)
