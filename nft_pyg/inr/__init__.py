"""Implicit neural representations (SIRENs): build, render and fit them.

- :func:`siren` / :class:`Sine`: SIREN modules as plain ``nn.Sequential``.
- :func:`render_weights` / :func:`render_image` / :func:`render_module`:
  batched, differentiable evaluation from stacked weight tensors.
- :func:`fit_sirens` / :func:`to_modules`: fit thousands of SIRENs to images
  on the CPU and turn the result back into modules.
"""
from .fit import SirenFit, fit_sirens, init_sirens, mse_and_grads, psnr, to_modules
from .render import check_weights, make_grid, render_image, render_module, render_weights
from .siren import Sine, init_bounds, siren, siren_layers, stack_modules

__all__ = [
    "Sine",
    "siren",
    "init_bounds",
    "siren_layers",
    "stack_modules",
    "check_weights",
    "render_weights",
    "make_grid",
    "render_image",
    "render_module",
    "SirenFit",
    "fit_sirens",
    "init_sirens",
    "mse_and_grads",
    "psnr",
    "to_modules",
]
