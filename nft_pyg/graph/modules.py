"""One converter per supported module kind: module <-> layout step.

``describe(name, module)`` turns a leaf module into a layout step (a JSON
``dict``), ``build(step)`` makes a fresh module from a step. Parameters and
buffers are moved by :mod:`nft_pyg.graph.convert`; this file only knows the
hyper-parameters.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from .types import Activation


class Sine(nn.Module):
    r"""The SIREN activation :math:`\sin(\omega_0 x)` (Sitzmann et al., 2020).

    The one sine class of the project (``nft_pyg.Sine``, ``nft_pyg.inr.Sine``).

    Args:
        w0 (float): the frequency :math:`\omega_0` (30 in the SIREN paper).

    Shapes:
        - input: any shape ``[*]``
        - output: the same shape
    """

    def __init__(self, w0: float = 30.0):
        super().__init__()
        self.w0 = float(w0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.w0 * x)

    def extra_repr(self) -> str:
        return f"w0={self.w0}"


# activation module class -> (code, names of the hyper-parameters to keep)
_ACTIVATIONS: dict[type, tuple[Activation, tuple[str, ...]]] = {
    nn.Identity: (Activation.IDENTITY, ()),
    nn.ReLU: (Activation.RELU, ()),
    nn.LeakyReLU: (Activation.LEAKY_RELU, ("negative_slope",)),
    nn.GELU: (Activation.GELU, ("approximate",)),
    nn.SiLU: (Activation.SILU, ()),
    nn.Tanh: (Activation.TANH, ()),
    nn.Sigmoid: (Activation.SIGMOID, ()),
    nn.ELU: (Activation.ELU, ("alpha",)),
    Sine: (Activation.SINE, ("w0",)),
}
_ACTIVATION_CLASS = {code: cls for cls, (code, _) in _ACTIVATIONS.items()}

_POOLS = tuple(getattr(nn, f"{kind}{dim}d") for kind in
               ("AvgPool", "MaxPool", "AdaptiveAvgPool", "AdaptiveMaxPool") for dim in (1, 2, 3))
_POOL_ARGS = ("kernel_size", "stride", "padding", "dilation", "ceil_mode",
              "count_include_pad", "divisor_override", "output_size", "return_indices")
_DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)
_CONVS = {nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3}
_BATCHNORMS = {nn.BatchNorm1d: 1, nn.BatchNorm2d: 2, nn.BatchNorm3d: 3}

SUPPORTED = ("Linear, Conv1d/2d/3d (groups=1), BatchNorm1d/2d/3d, LayerNorm over the "
             "neurons, Flatten, Avg/Max/AdaptiveAvg/AdaptiveMax pooling, Dropout, and the "
             "activations " + ", ".join(cls.__name__ for cls in _ACTIVATIONS))


class UnsupportedModuleError(TypeError):
    """A module cannot be expressed as a neuron graph."""

    def __init__(self, name: str, module: Any, reason: str = ""):
        what = f"module '{name or '<root>'}' of type {type(module).__name__}"
        reason = f": {reason}" if reason else " is not supported"
        super().__init__(f"{what}{reason}. Supported: {SUPPORTED}.")


def _is_duck_sine(module: nn.Module) -> bool:
    """A third-party sine activation: a class called Sine with a frequency."""
    return type(module).__name__ == "Sine" and any(
        isinstance(getattr(module, attr, None), (int, float)) for attr in ("w0", "omega_0"))


def is_leaf(module: nn.Module) -> bool:
    """Whether :func:`describe` handles ``module`` as one step."""
    return (isinstance(module, (nn.Linear, nn.Flatten, nn.LayerNorm, *_CONVS, *_BATCHNORMS,
                                *_POOLS, *_DROPOUTS))
            or type(module) in _ACTIVATIONS or _is_duck_sine(module))


def _pair_tuple(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def describe(name: str, module: nn.Module) -> dict[str, Any]:
    """The layout step of a supported leaf module."""
    if isinstance(module, nn.Linear):
        return {"kind": "linear", "name": name, "in": module.in_features,
                "out": module.out_features, "bias": module.bias is not None}
    if type(module) in _CONVS:
        if module.groups != 1:
            raise UnsupportedModuleError(name, module, f"groups={module.groups}, only groups=1")
        if isinstance(module.padding, str):
            raise UnsupportedModuleError(name, module, f"padding='{module.padding}'; "
                                         "give the padding as integers")
        return {"kind": "conv", "name": name, "dim": _CONVS[type(module)],
                "in": module.in_channels, "out": module.out_channels,
                "bias": module.bias is not None, "kernel_size": list(module.kernel_size),
                "stride": list(module.stride), "padding": list(module.padding),
                "dilation": list(module.dilation), "padding_mode": module.padding_mode}
    if type(module) in _ACTIVATIONS or _is_duck_sine(module):
        if _is_duck_sine(module) and type(module) is not Sine:
            w0 = getattr(module, "w0", getattr(module, "omega_0", None))
            return {"kind": "act", "name": name, "act": Activation.SINE.name,
                    "params": {"w0": float(w0)}}
        code, keys = _ACTIVATIONS[type(module)]
        return {"kind": "act", "name": name, "act": code.name,
                "params": {key: getattr(module, key) for key in keys}}
    if type(module) in _BATCHNORMS:
        return {"kind": "batchnorm", "name": name, "dim": _BATCHNORMS[type(module)],
                "num_features": module.num_features, "eps": module.eps,
                "momentum": module.momentum, "affine": module.affine,
                "track_running_stats": module.track_running_stats,
                "num_batches_tracked": (int(module.num_batches_tracked)
                                        if module.track_running_stats else None)}
    if isinstance(module, nn.LayerNorm):
        if len(module.normalized_shape) != 1:
            raise UnsupportedModuleError(
                name, module, f"normalized_shape={tuple(module.normalized_shape)}; only a "
                "LayerNorm over the neurons of a Linear layer (one dimension) keeps one set "
                "of parameters per neuron")
        return {"kind": "layernorm", "name": name, "num_features": module.normalized_shape[0],
                "eps": module.eps, "affine": module.elementwise_affine,
                "bias": module.elementwise_affine and module.bias is not None}
    if isinstance(module, _POOLS):
        args = {key: _pair_tuple(getattr(module, key)) for key in _POOL_ARGS
                if hasattr(module, key)}
        if args.get("return_indices"):
            raise UnsupportedModuleError(name, module, "return_indices=True")
        return {"kind": "pool", "name": name, "type": type(module).__name__, "args": args}
    if isinstance(module, nn.Flatten):
        return {"kind": "flatten", "name": name, "start_dim": module.start_dim,
                "end_dim": module.end_dim}
    if isinstance(module, _DROPOUTS):
        return {"kind": "dropout", "name": name, "type": type(module).__name__, "p": module.p}
    raise UnsupportedModuleError(name, module)


def _build_conv(step: dict[str, Any]) -> nn.Module:
    cls = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[step["dim"]]
    return cls(step["in"], step["out"], tuple(step["kernel_size"]), stride=tuple(step["stride"]),
               padding=tuple(step["padding"]), dilation=tuple(step["dilation"]),
               bias=step["bias"], padding_mode=step["padding_mode"])


def _build_batchnorm(step: dict[str, Any]) -> nn.Module:
    cls = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[step["dim"]]
    return cls(step["num_features"], eps=step["eps"], momentum=step["momentum"],
               affine=step["affine"], track_running_stats=step["track_running_stats"])


def _build_pool(step: dict[str, Any]) -> nn.Module:
    args = {key: tuple(value) if isinstance(value, list) else value
            for key, value in step["args"].items()}
    return getattr(nn, step["type"])(**args)


_BUILDERS: dict[str, Callable[[dict[str, Any]], nn.Module]] = {
    "linear": lambda s: nn.Linear(s["in"], s["out"], bias=s["bias"]),
    "conv": _build_conv,
    "act": lambda s: _ACTIVATION_CLASS[Activation[s["act"]]](**s["params"]),
    "batchnorm": _build_batchnorm,
    "layernorm": lambda s: nn.LayerNorm(s["num_features"], eps=s["eps"],
                                        elementwise_affine=s["affine"], bias=s["bias"]),
    "pool": _build_pool,
    "flatten": lambda s: nn.Flatten(s["start_dim"], s["end_dim"]),
    "dropout": lambda s: getattr(nn, s["type"])(p=s["p"]),
}


def build(step: dict[str, Any]) -> nn.Module:
    """A fresh module for one layout step (parameters to be loaded)."""
    try:
        return _BUILDERS[step["kind"]](step)
    except KeyError:
        raise ValueError(f"layout step '{step.get('name')}': unknown kind "
                         f"'{step.get('kind')}'") from None


def activation_code(step: dict[str, Any]) -> Activation:
    return Activation[step["act"]]
