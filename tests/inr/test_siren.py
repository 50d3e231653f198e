"""Tests for nft_pyg.inr.siren: structure, initialisation and parsing."""
import math

import pytest
import torch
from torch import nn

from nft_pyg.inr import Sine, init_bounds, siren, siren_layers, stack_modules


def test_sine_forward_and_repr():
    x = torch.linspace(-1, 1, 11, dtype=torch.float64)
    act = Sine(12.5)
    assert torch.equal(act(x), torch.sin(12.5 * x))
    assert "w0=12.5" in repr(act)
    assert Sine().w0 == 30.0


@pytest.mark.parametrize(
    "in_features, hidden, out_features",
    [(2, (32, 32), 1), (1, (16,), 1), (2, (8, 8, 8), 3), (3, (), 2)],
)
def test_structure(in_features, hidden, out_features):
    net = siren(in_features, hidden, out_features, w0=25.0, w0_first=40.0)
    assert type(net) is nn.Sequential
    children = list(net)
    assert len(children) == 2 * len(hidden) + 1
    sizes = [in_features, *hidden, out_features]
    for j, child in enumerate(children):
        if j % 2 == 0:
            assert type(child) is nn.Linear
            assert (child.in_features, child.out_features) == (sizes[j // 2], sizes[j // 2 + 1])
            assert child.bias is not None
        else:
            assert type(child) is Sine
            assert child.w0 == (40.0 if j == 1 else 25.0)
    out = net(torch.rand(5, in_features) * 2 - 1)
    assert out.shape == (5, out_features)
    assert out.dtype == torch.float32


def test_init_ranges():
    w0 = 30.0
    net = siren(2, (256, 256), 3, w0=w0, generator=torch.Generator().manual_seed(0))
    linears, _ = siren_layers(net)
    sizes = [2, 256, 256, 3]
    assert init_bounds(sizes, w0)[0] == (0.5, 1 / math.sqrt(2))
    for i, lin in enumerate(linears):
        n_in = sizes[i]
        w_bound = 1.0 / n_in if i == 0 else math.sqrt(6.0 / n_in) / w0
        b_bound = 1.0 / math.sqrt(n_in)
        w, b = lin.weight.detach(), lin.bias.detach()
        assert w.abs().max() <= w_bound
        assert b.abs().max() <= b_bound
        if w.numel() >= 512:  # enough samples to approach the bound
            assert w.abs().max() > 0.95 * w_bound
            # U(-a, a) has standard deviation a / sqrt(3)
            assert abs(w.std().item() - w_bound / math.sqrt(3)) < 0.05 * w_bound


def test_generator_reproducible_and_global_rng_untouched():
    state = torch.get_rng_state()
    a = siren(generator=torch.Generator().manual_seed(3))
    b = siren(generator=torch.Generator().manual_seed(3))
    c = siren(generator=torch.Generator().manual_seed(4))
    assert torch.equal(torch.get_rng_state(), state)
    for pa, pb, pc in zip(a.parameters(), b.parameters(), c.parameters()):
        assert torch.equal(pa, pb)
        assert not torch.equal(pa, pc)


def test_bad_sizes():
    with pytest.raises(ValueError, match="positive"):
        siren(2, (0,), 1)


def test_siren_layers_parses_and_rejects():
    net = siren(2, (8, 4), 1, w0=10.0, w0_first=20.0)
    linears, w0s = siren_layers(net)
    assert [l.out_features for l in linears] == [8, 4, 1]
    assert w0s == [20.0, 10.0]
    with pytest.raises(ValueError, match="ReLU"):
        siren_layers(nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1)))
    with pytest.raises(ValueError, match="got Linear: not an nn.Sequential"):
        siren_layers(nn.Linear(2, 3))
    with pytest.raises(ValueError, match="odd number"):
        siren_layers(nn.Sequential(nn.Linear(2, 3), Sine()))
    with pytest.raises(ValueError, match="no bias"):
        siren_layers(nn.Sequential(nn.Linear(2, 3, bias=False)))
    with pytest.raises(ValueError, match="in_features"):
        siren_layers(nn.Sequential(nn.Linear(2, 3), Sine(), nn.Linear(4, 1)))


def test_stack_modules():
    mods = [siren(2, (5,), 3, generator=torch.Generator().manual_seed(s)) for s in range(4)]
    weights, biases = stack_modules(mods)
    assert [tuple(w.shape) for w in weights] == [(4, 5, 2), (4, 3, 5)]
    assert [tuple(b.shape) for b in biases] == [(4, 5), (4, 3)]
    assert torch.equal(weights[1][2], mods[2][2].weight)
    with pytest.raises(ValueError, match="same layer shapes"):
        stack_modules([siren(2, (5,), 1), siren(2, (6,), 1)])
    with pytest.raises(ValueError, match="at least one"):
        stack_modules([])


def test_siren_layers_reads_sines_by_what_they_compute():
    class Periodic(nn.Module):  # e.g. a third-party SIREN's activation, any class name
        def __init__(self, omega_0):
            super().__init__()
            self.register_buffer("omega_0", torch.tensor(omega_0))

        def forward(self, x):
            return torch.sin(self.omega_0 * x)

    net = nn.Sequential(nn.Linear(2, 4), Periodic(15.0), nn.Linear(4, 1))
    assert siren_layers(net)[1] == [15.0]

    class Sine(nn.Module):  # a look-alike: named Sine, with w0, computing something else
        w0 = 3.0

        def forward(self, x):
            return torch.sin(self.w0 * x) + 1

    with pytest.raises(ValueError, match=r"child 1 \(Sine\) does not compute sin\(w0 \* x\)"):
        siren_layers(nn.Sequential(nn.Linear(2, 4), Sine(), nn.Linear(4, 1)))
