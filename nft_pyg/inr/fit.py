"""Fit many SIRENs to many images at once on the CPU.

:func:`fit_sirens` trains ``B`` independent SIRENs in lock step: their
parameters are stacked into tensors ``[B, n_i, n_{i-1}]`` / ``[B, n_i]``,
optimised by one Adam optimiser, and the per-INR losses are summed so every
INR receives exactly the gradient of its own loss (Adam is element-wise, so
the INRs do not interact). Forward and backward passes are written out by
hand with batched matrix products, which is several times faster on a CPU
than autograd for these tiny networks; :func:`mse_and_grads` exposes them.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .render import check_weights, make_grid
from .siren import init_bounds, siren, siren_layers

__all__ = ["SirenFit", "fit_sirens", "init_sirens", "mse_and_grads", "psnr", "to_modules"]


class SirenFit(NamedTuple):
    """Result of :func:`fit_sirens`; unpacks as ``weights, biases, psnr``.

    Attributes:
        weights: ``L`` tensors ``[B, n_i, n_{i-1}]``.
        biases: ``L`` tensors ``[B, n_i]``.
        psnr: ``[B]`` PSNR (dB) of each fitted INR on its image grid.
    """

    weights: list[Tensor]
    biases: list[Tensor]
    psnr: Tensor


def psnr(mse: Tensor, data_range: float = 1.0) -> Tensor:
    """Peak signal-to-noise ratio ``10 log10(data_range^2 / mse)`` in dB."""
    return 10.0 * torch.log10(data_range**2 / mse)


BIAS_INITS = ("uniform", "zero")


def check_bias_init(bias_init: str, owner: str = "") -> None:
    """Raise a ``ValueError`` (prefixed ``owner: ``) unless ``bias_init`` is one of
    :data:`BIAS_INITS`."""
    if bias_init not in BIAS_INITS:
        prefix = f"{owner}: " if owner else ""
        raise ValueError(f"{prefix}bias_init must be one of {BIAS_INITS}, got {bias_init!r}")


def init_sirens(
    batch: int,
    sizes: Sequence[int],
    w0: float = 30.0,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    bias_init: str = "uniform",
) -> tuple[list[Tensor], list[Tensor]]:
    """Stacked parameters of ``batch`` SIRENs with the :func:`~nft_pyg.inr.siren` init.

    Args:
        batch: Number of INRs ``B``.
        sizes: Layer sizes ``[n_0, ..., n_L]``.
        w0: Hidden frequency (sets the init range of the later layers).
        generator: Random generator (global RNG if ``None``). Draws layer by
            layer: all ``B`` weights, then all ``B`` biases.
        dtype: Floating dtype of the result.
        bias_init: ``"uniform"`` (the :func:`~nft_pyg.inr.siren` init) or
            ``"zero"`` (all biases 0, as in the INRs of DWSNets / NFN). The
            uniform biases are drawn either way, so the weights are the
            same for both choices.

    Returns:
        ``(weights, biases)`` with shapes ``[B, n_i, n_{i-1}]`` and ``[B, n_i]``.
    """
    check_bias_init(bias_init)
    weights, biases = [], []
    for i, (w_bound, b_bound) in enumerate(init_bounds(sizes, w0)):
        w = torch.empty(batch, sizes[i + 1], sizes[i], dtype=dtype)
        b = torch.empty(batch, sizes[i + 1], dtype=dtype)
        weights.append(w.uniform_(-w_bound, w_bound, generator=generator))
        biases.append(b.uniform_(-b_bound, b_bound, generator=generator))
    if bias_init == "zero":
        biases = [b.zero_() for b in biases]
    return weights, biases


def mse_and_grads(
    weights: Sequence[Tensor],
    biases: Sequence[Tensor],
    coords: Tensor,
    target: Tensor,
    w0: float = 30.0,
    w0_first: float = 30.0,
) -> tuple[Tensor, list[Tensor], list[Tensor]]:
    """Per-INR mean squared error and its gradients, by a hand-written backward.

    The gradient of INR ``b``'s parameters is that of its own loss
    ``mse[b]``, i.e. of ``mse.sum()`` (the INRs are independent). Inputs are
    not validated (see :func:`~nft_pyg.inr.check_weights`); pass detached
    tensors or call under ``torch.no_grad()``, autograd is not needed.

    Args:
        weights: ``L`` tensors ``[B, n_i, n_{i-1}]`` (validated stacks).
        biases: ``L`` tensors ``[B, n_i]``.
        coords: ``[P, n_0]`` coordinates shared by all INRs.
        target: ``[B, P, n_L]`` values to fit.
        w0: Frequency of the hidden sines.
        w0_first: Frequency of the sine after the first layer.

    Returns:
        ``(mse, grad_weights, grad_biases)`` with ``mse`` of shape ``[B]`` and
        gradients shaped like ``weights`` / ``biases``.
    """
    num_layers = len(weights)
    w0s = [w0_first] + [w0] * (num_layers - 2)
    batch = weights[0].shape[0]
    # Forward: keep every layer input h and every pre-activation z.
    inputs = [coords.unsqueeze(0).expand(batch, -1, -1)]
    pre = []
    for i in range(num_layers - 1):
        z = torch.baddbmm(biases[i].unsqueeze(1), inputs[-1], weights[i].transpose(1, 2),
                          beta=w0s[i], alpha=w0s[i])
        pre.append(z)
        inputs.append(torch.sin(z))
    out = torch.baddbmm(biases[-1].unsqueeze(1), inputs[-1], weights[-1].transpose(1, 2))
    residual = out.sub_(target)  # [B, P, C]
    numel = residual.shape[1] * residual.shape[2]
    mse = residual.pow(2).sum(dim=(1, 2)) / numel
    # Backward. delta = dLoss / d(layer output), starting with the output layer.
    delta = residual.mul_(2.0 / numel)
    grad_w: list[Tensor] = [None] * num_layers  # type: ignore[list-item]
    grad_b: list[Tensor] = [None] * num_layers  # type: ignore[list-item]
    scale = 1.0  # layer i computes scale * (h @ W^T + b)
    for i in range(num_layers - 1, -1, -1):
        if i < num_layers - 1:
            # through sin: d/dz sin(z) = cos(z); z = w0 * (h W^T + b)
            delta = delta.mul_(torch.cos(pre[i], out=pre[i]))
            scale = w0s[i]
        if i == 0:
            # Shared coordinates: one [n_0, P] @ [P, B * n_1] product is much
            # faster than a broadcast batched matmul.
            points, width = coords.shape[0], delta.shape[2]
            flat = delta.transpose(0, 1).reshape(points, batch * width)
            grad = coords.t().mm(flat).mul_(scale)  # [n_0, B * n_1]
            grad_w[i] = grad.view(-1, batch, width).permute(1, 2, 0).contiguous()
        else:
            grad_w[i] = torch.bmm(delta.transpose(1, 2), inputs[i]).mul_(scale)
        grad_b[i] = delta.sum(dim=1).mul_(scale)
        if i > 0:
            if delta.shape[2] == 1:  # a single output: outer product, no bmm
                delta = delta * (weights[i] * scale)
            else:
                delta = torch.bmm(delta, weights[i] * scale)
    return mse, grad_w, grad_b


def fit_sirens(
    images: Tensor,
    hidden: Sequence[int] = (32, 32),
    steps: int = 100,
    lr: float = 5e-3,
    w0: float = 30.0,
    w0_first: float = 30.0,
    seed: int = 0,
    generator: torch.Generator | None = None,
    progress: bool = True,
    chunk_size: int = 64,
    data_range: float | None = None,
    shared_init: bool = False,
    shared_first_layers: int = 0,
    shared_seed: int | None = None,
    bias_init: str = "uniform",
) -> SirenFit:
    """Fit one SIREN per image, ``B`` at a time, with Adam.

    Each image is fitted on the :func:`~nft_pyg.inr.make_grid` grid of its
    own resolution (coordinates in ``[-1, 1]``, first coordinate = row), with
    the image values as targets (no rescaling), so
    ``render_image(weights, biases, (H, W))`` reproduces ``images``.
    Images are processed in chunks of ``chunk_size`` INRs (one optimiser per
    chunk) to keep memory bounded: about ``chunk_size * H * W * width * 4``
    bytes (float32) per stored activation, a handful per hidden layer. The
    learning rate follows a cosine decay from ``lr`` to ``lr / 20`` over
    ``steps``.

    Speed (2-vCPU AMD EPYC, shared machine, 28x28 grey digits, 2-32-32-1):
    about 20 INRs per CPU-second on one thread with the defaults (100 steps,
    mean PSNR ~44 dB), about 40 with ``steps=50, lr=8e-3`` (~36 dB). On a
    busy machine ``torch.set_num_threads(1)`` avoids thread oversubscription.

    Determinism: the initialisation is drawn for all ``B`` INRs from
    ``generator`` (or ``torch.Generator().manual_seed(seed)``) before
    training, so it does not depend on ``chunk_size``. Two runs with the same
    seed, ``chunk_size`` and ``torch.get_num_threads()`` give identical
    results; a different thread count or chunk size can change the float
    summation order inside the matrix products and hence the last bits.

    Args:
        images: ``[B, C, H, W]`` floating images with values in ``[0, 1]``
            (or ``[-1, 1]``). Fitting runs on their device and in their dtype
            (float32 or float64; anything else is cast to float32).
        hidden: Hidden layer widths.
        steps: Adam steps per INR (full grid every step).
        lr: Peak Adam learning rate.
        w0, w0_first: Sine frequencies (see :func:`~nft_pyg.inr.siren`).
        seed: Seed of the initialisation when ``generator`` is ``None``.
        generator: Random generator for the initialisation.
        progress: Show a tqdm progress bar.
        chunk_size: INRs trained together.
        data_range: Value range for the PSNR; ``None`` means 1.0 if
            ``images.min() >= 0`` (``[0, 1]`` images) and 2.0 otherwise
            (``[-1, 1]`` images).
        shared_init: Start every INR from the same initialisation (one draw
            from the generator, copied ``B`` times). Fits of similar images
            then end near each other in weight space, which makes the weights
            much easier to classify from few samples.
        shared_first_layers: Start every INR's first ``k`` layers (weights
            and biases) from one shared draw and the others from their own
            random initialisation (with ``shared_init=False``).
        shared_seed: Seed of that shared draw (default ``seed``), so that
            several calls, e.g. the shards of a dataset, share it.
        bias_init: ``"uniform"`` or ``"zero"`` initial biases (see
            :func:`init_sirens`).

    Returns:
        :class:`SirenFit` ``(weights, biases, psnr)`` with ``weights[i]`` of
        shape ``[B, n_i, n_{i-1}]``, ``biases[i]`` of shape ``[B, n_i]``
        (``n_0 = 2``, ``n_L = C``) and ``psnr`` of shape ``[B]``.

    Shapes:
        - images: ``[B, C, H, W]``
        - output: see Returns.
    """
    if not isinstance(images, Tensor) or images.dim() != 4:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be a tensor of shape [B, C, H, W], got {shape}")
    if min(images.shape) == 0:
        raise ValueError(f"images must be non-empty, got shape {tuple(images.shape)}")
    if steps < 0 or chunk_size < 1:
        raise ValueError(f"need steps >= 0 and chunk_size >= 1, got {steps} and {chunk_size}")
    dtype = images.dtype if images.dtype in (torch.float32, torch.float64) else torch.float32
    images = images.detach().to(dtype=dtype)
    device = images.device
    if data_range is None:
        data_range = 1.0 if float(images.min()) >= 0.0 else 2.0
    batch, channels, height, width = images.shape
    sizes = [2, *[int(h) for h in hidden], channels]
    if generator is None:
        generator = torch.Generator().manual_seed(seed)
    if not 0 <= shared_first_layers <= len(sizes) - 1:
        raise ValueError(f"shared_first_layers must be in 0..{len(sizes) - 1} (the SIREN's "
                         f"layers), got {shared_first_layers}")
    weights, biases = init_sirens(1 if shared_init else batch, sizes, w0, generator, dtype,
                                  bias_init)
    if shared_init:
        weights = [w.expand(batch, -1, -1).clone() for w in weights]
        biases = [b.expand(batch, -1).clone() for b in biases]
    elif shared_first_layers:
        shared = torch.Generator().manual_seed(seed if shared_seed is None else shared_seed)
        first_w, first_b = init_sirens(1, sizes, w0, shared, dtype, bias_init)
        for k in range(shared_first_layers):
            weights[k] = first_w[k].expand(batch, -1, -1).clone()
            biases[k] = first_b[k].expand(batch, -1).clone()
    weights = [w.to(device) for w in weights]
    biases = [b.to(device) for b in biases]
    coords = make_grid((height, width), 2, dtype=dtype, device=device)
    targets = images.flatten(2).transpose(1, 2)  # [B, H*W, C]
    final_mse = torch.empty(batch, dtype=dtype, device=device)

    num_chunks = math.ceil(batch / chunk_size)
    bar = tqdm(total=num_chunks * steps, unit="step", disable=not progress,
               desc=f"fitting {batch} SIRENs")
    with torch.no_grad():
        for start in range(0, batch, chunk_size):
            stop = min(start + chunk_size, batch)
            params_w = [w[start:stop].clone() for w in weights]
            params_b = [b[start:stop].clone() for b in biases]
            target = targets[start:stop].contiguous()
            opt = torch.optim.Adam(params_w + params_b, lr=lr)
            for step in range(steps):
                mse, gw, gb = mse_and_grads(params_w, params_b, coords, target, w0, w0_first)
                for p, g in zip(params_w + params_b, gw + gb):
                    p.grad = g
                for group in opt.param_groups:
                    group["lr"] = lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / steps)))
                opt.step()
                bar.update(1)
                if progress and (step % 50 == 0 or step == steps - 1):
                    mean_psnr = psnr(mse, data_range).mean().item()
                    bar.set_postfix(chunk=f"{start // chunk_size + 1}/{num_chunks}",
                                    psnr=f"{mean_psnr:.2f}")
            final_mse[start:stop] = mse_and_grads(params_w, params_b, coords, target,
                                                  w0, w0_first)[0]
            for w, p in zip(weights, params_w):
                w[start:stop] = p
            for b, p in zip(biases, params_b):
                b[start:stop] = p
    bar.close()
    return SirenFit(weights, biases, psnr(final_mse, data_range))


def to_modules(
    weights: Sequence[Tensor],
    biases: Sequence[Tensor],
    w0: float = 30.0,
    w0_first: float = 30.0,
) -> list[nn.Sequential]:
    """Load stacked SIREN parameters into ``B`` :func:`~nft_pyg.inr.siren` modules.

    The parameters are copied exactly (bitwise, same dtype and device), so
    each module computes what :func:`~nft_pyg.inr.render_weights` computes.
    The modules do not share memory with ``weights`` / ``biases``.

    Args:
        weights: ``L`` tensors ``[B, n_i, n_{i-1}]`` (or ``[B, 1, n_i, n_{i-1}]``).
        biases: ``L`` tensors ``[B, n_i]`` (or ``[B, 1, n_i]``).
        w0, w0_first: Sine frequencies of the modules.

    Returns:
        A list of ``B`` ``nn.Sequential`` SIRENs.
    """
    ws, bs = check_weights(weights, biases)
    sizes = [ws[0].shape[2], *[w.shape[1] for w in ws]]
    modules = []
    for k in range(ws[0].shape[0]):
        # A private generator keeps the (overwritten) init off the global RNG.
        module = siren(sizes[0], sizes[1:-1], sizes[-1], w0, w0_first,
                       generator=torch.Generator())
        module = module.to(dtype=ws[0].dtype, device=ws[0].device)
        linears, _ = siren_layers(module)
        with torch.no_grad():
            for linear, w, b in zip(linears, ws, bs):
                linear.weight.copy_(w[k])
                linear.bias.copy_(b[k])
        modules.append(module)
    return modules
