"""Tests for nft_pyg.inr.render: batched rendering equals the modules."""
import pytest
import torch
from torch import nn

from nft_pyg.inr import (
    Sine,
    make_grid,
    render_image,
    render_module,
    render_weights,
    siren,
    stack_modules,
)

SHAPES = [  # (in_features, hidden, out_features): 1-D, 2-D, colour, depth 1..4
    (1, (16,), 1),
    (2, (), 1),
    (2, (32, 32), 1),
    (2, (16, 12), 3),
    (3, (8, 8, 8), 2),
    (1, (6, 7, 5), 3),
]


def random_sirens(shape, batch=3, w0=30.0, w0_first=20.0, seed=0):
    in_features, hidden, out_features = shape
    gen = torch.Generator().manual_seed(seed)
    mods = [siren(in_features, hidden, out_features, w0, w0_first, generator=gen).double()
            for _ in range(batch)]
    return mods, *stack_modules(mods)


@pytest.mark.parametrize("shape", SHAPES)
def test_render_weights_matches_modules(shape):
    mods, weights, biases = random_sirens(shape)
    gen = torch.Generator().manual_seed(1)
    coords = torch.rand(50, shape[0], dtype=torch.float64, generator=gen) * 2 - 1
    out = render_weights(weights, biases, coords, w0=30.0, w0_first=20.0)
    assert out.shape == (3, 50, shape[2])
    for k, mod in enumerate(mods):
        torch.testing.assert_close(out[k], mod(coords), rtol=0, atol=1e-12)
    # per-INR coordinates [B, P, in] give the same result
    out_b = render_weights(weights, biases, coords.expand(3, -1, -1), 30.0, 20.0)
    torch.testing.assert_close(out_b, out, rtol=0, atol=1e-12)


def test_channel_dim_form():
    _, weights, biases = random_sirens((2, (8,), 3))
    coords = make_grid(4, dtype=torch.float64)
    ref = render_weights(weights, biases, coords)
    out = render_weights([w.unsqueeze(1) for w in weights], [b.unsqueeze(1) for b in biases],
                         coords)
    assert torch.equal(out, ref)
    with pytest.raises(ValueError, match="C == 1"):
        render_weights([w.unsqueeze(1).expand(-1, 2, -1, -1) for w in weights], biases, coords)
    with pytest.raises(ValueError, match="C == 1"):
        render_weights(weights, [b.unsqueeze(1).expand(-1, 2, -1) for b in biases], coords)


def test_gradcheck():
    gen = torch.Generator().manual_seed(0)
    weights = [torch.randn(2, 3, 2, dtype=torch.float64, generator=gen) * 0.3,
               torch.randn(2, 2, 3, dtype=torch.float64, generator=gen) * 0.3]
    biases = [torch.randn(2, 3, dtype=torch.float64, generator=gen),
              torch.randn(2, 2, dtype=torch.float64, generator=gen)]
    coords = torch.rand(4, 2, dtype=torch.float64, generator=gen) * 2 - 1
    inputs = [t.requires_grad_() for t in (*weights, *biases, coords)]

    def fn(w1, w2, b1, b2, x):
        return render_weights([w1, w2], [b1, b2], x, w0=3.0, w0_first=5.0)

    assert torch.autograd.gradcheck(fn, inputs)


def test_make_grid():
    grid = make_grid((3, 4))
    assert grid.shape == (12, 2)
    assert grid.min() == -1 and grid.max() == 1
    # row-major, first coordinate indexes rows
    assert grid[0].tolist() == [-1.0, -1.0]
    assert grid[1].tolist() == pytest.approx([-1.0, -1.0 / 3.0])
    assert grid[4].tolist() == pytest.approx([0.0, -1.0])
    assert grid[-1].tolist() == [1.0, 1.0]
    line = make_grid(5, dim=1, dtype=torch.float64)
    assert line.dtype == torch.float64
    assert line[:, 0].tolist() == [-1.0, -0.5, 0.0, 0.5, 1.0]
    assert make_grid(2, dim=3).shape == (8, 3)
    with pytest.raises(ValueError, match="resolution"):
        make_grid((3, 4, 5), dim=2)
    with pytest.raises(ValueError, match="resolution"):
        make_grid(0)


def test_render_image_layout():
    _, weights, biases = random_sirens((2, (16,), 3), batch=2)
    img = render_image(weights, biases, (5, 7), w0=30.0, w0_first=20.0)
    assert img.shape == (2, 3, 5, 7)
    flat = render_weights(weights, biases, make_grid((5, 7), dtype=torch.float64), 30.0, 20.0)
    for r, c in [(0, 0), (1, 3), (4, 6), (2, 5)]:
        assert torch.equal(img[:, :, r, c], flat[:, r * 7 + c])
    # 1-D signals render to [B, out, N]
    _, w1, b1 = random_sirens((1, (8,), 1), batch=2)
    assert render_image(w1, b1, 9).shape == (2, 1, 9)


def test_render_module():
    net = nn.Sequential(nn.Linear(2, 8), Sine(10.0), nn.Linear(8, 6), Sine(20.0),
                        nn.Linear(6, 4), Sine(7.0), nn.Linear(4, 3)).double()
    img = render_module(net, (4, 6))
    assert img.shape == (3, 4, 6)
    ref = net(make_grid((4, 6), dtype=torch.float64)).T.reshape(3, 4, 6)
    torch.testing.assert_close(img, ref, rtol=0, atol=1e-12)
    # differentiable w.r.t. the module's parameters
    img.square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
    # agrees with the batched renderer
    mods, weights, biases = random_sirens((2, (8, 8), 1), batch=2)
    batched = render_image(weights, biases, 5, w0=30.0, w0_first=20.0)
    torch.testing.assert_close(render_module(mods[1], 5), batched[1], rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="Tanh"):
        render_module(nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1)), 4)


def test_bad_inputs():
    _, weights, biases = random_sirens((2, (8,), 1), batch=2)
    coords = make_grid(3, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"weights\[0\] must have shape"):
        render_weights([weights[0][0], weights[1]], biases, coords)
    with pytest.raises(ValueError, match=r"biases\[1\] must have shape"):
        render_weights(weights, [biases[0], biases[1][0]], coords)
    with pytest.raises(ValueError, match="batch sizes differ"):
        render_weights([weights[0], weights[1][:1]], biases, coords)
    with pytest.raises(ValueError, match="batch sizes differ"):
        render_weights(weights, [biases[0][:1], biases[1]], coords)
    with pytest.raises(ValueError, match="batch sizes differ"):
        render_weights(weights, biases, coords.expand(3, -1, -1))
    with pytest.raises(ValueError, match="one bias per weight"):
        render_weights(weights, biases[:1], coords)
    with pytest.raises(ValueError, match="at least one layer"):
        render_weights([], [], coords)
    with pytest.raises(ValueError, match="sequences of tensors"):
        render_weights(weights[0], biases[0], coords)
    with pytest.raises(ValueError, match="output rows"):
        render_weights(weights, [biases[0][:, :5], biases[1]], coords)
    with pytest.raises(ValueError, match="expects 8 inputs"):
        render_weights([weights[0][:, :5], weights[1]], [biases[0][:, :5], biases[1]], coords)
    with pytest.raises(ValueError, match="coords have 3 features"):
        render_weights(weights, biases, torch.zeros(4, 3))
    with pytest.raises(ValueError, match="coords must have shape"):
        render_weights(weights, biases, torch.zeros(4))
