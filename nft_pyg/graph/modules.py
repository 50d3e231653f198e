"""One converter per supported module kind: module <-> layout step.

``describe(name, module)`` turns a leaf module into a layout step (a JSON
``dict``), ``build(step)`` makes a fresh module from a step. Parameters and
buffers are moved by :mod:`nft_pyg.graph.convert`; this file only knows the
hyper-parameters.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn.modules import module as module_globals
from torch.nn.utils.prune import BasePruningMethod
from torch.nn.utils.weight_norm import WeightNorm

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
}
#: the module that rebuilds each activation, and the hyper-parameters it takes
_ACTIVATION_CLASS = {code: cls for cls, (code, _) in _ACTIVATIONS.items()}
_ACTIVATION_CLASS[Activation.SINE] = Sine
_ACTIVATION_PARAMS = {code: keys for _, (code, keys) in _ACTIVATIONS.items()}
_ACTIVATION_PARAMS[Activation.SINE] = ("w0",)

_POOL_CLASSES = {f"{kind}{dim}d": getattr(nn, f"{kind}{dim}d") for kind in
                 ("AvgPool", "MaxPool", "AdaptiveAvgPool", "AdaptiveMaxPool") for dim in (1, 2, 3)}
_POOLS = tuple(_POOL_CLASSES.values())
_POOL_ARGS = ("kernel_size", "stride", "padding", "dilation", "ceil_mode",
              "count_include_pad", "divisor_override", "output_size", "return_indices")
_DROPOUT_CLASSES = {cls.__name__: cls for cls in
                    (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)}
_DROPOUTS = tuple(_DROPOUT_CLASSES.values())
_CONVS = {nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3}
_BATCHNORMS = {nn.BatchNorm1d: 1, nn.BatchNorm2d: 2, nn.BatchNorm3d: 3}

SUPPORTED = ("Linear, Conv1d/2d/3d (also grouped / depthwise), BatchNorm1d/2d/3d, LayerNorm "
             "over the neurons, Flatten (torch.flatten, x.view(x.size(0), -1)), Avg/Max/"
             "AdaptiveAvg/AdaptiveMax pooling (modules or F.*), Dropout, the activations "
             "ReLU, LeakyReLU, GELU, SiLU, Tanh, Sigmoid, ELU (modules or F.*) and "
             "sin(w0 * x), residual additions h + f(h), and activations declared with "
             "nft_pyg.graph.register_activation")


class UnsupportedModuleError(TypeError):
    """A module cannot be expressed as a neuron graph.

    The message names the module by its path in the user's network (``net.1``;
    "the network" for the root), what it computes and what is supported.
    """

    def __init__(self, name: str, module: Any, reason: str = ""):
        cls = type(module).__name__
        what = f"module {name} ({cls})" if name else f"the network ({cls})"
        reason = f": {reason}" if reason else " is not supported"
        super().__init__(f"{what}{reason}. Supported: {SUPPORTED}.")
        self.path = name


class ResidualAdd:
    """A residual addition in a module chain: adds the chain value after the
    first ``source`` entries (see :func:`nft_pyg.graph.trace.module_chain`);
    ``owner`` is the module whose forward adds (named in errors)."""

    def __init__(self, source: int, owner_path: str = "", owner: Any = None):
        self.source = source
        self.owner_path = owner_path
        self.owner = owner


# --- user-declared activations --------------------------------------------------
#: class -> (activation code, function of the instance giving its hyper-parameters)
_REGISTERED: dict[type, tuple[Activation, Callable[[nn.Module], dict]]] = {}


def register_activation(cls: type, activation: str | Activation,
                        params: Callable[[nn.Module], dict] | None = None) -> None:
    """Declare that the modules of class ``cls`` apply an element-wise activation.

    For activation modules whose forward cannot be followed by tracing (C
    extensions, data-dependent code). The claim is checked: each module is
    run on random inputs and compared with the declared activation before it
    is converted; a mismatch is an :class:`UnsupportedModuleError`.

    Args:
        cls (type): the module class.
        activation (str | Activation): ``"relu"``, ``"leaky_relu"``, ``"gelu"``,
            ``"silu"``, ``"tanh"``, ``"sigmoid"``, ``"elu"``, ``"sine"`` or
            ``"identity"``.
        params (callable, optional): the activation's hyper-parameters of a
            module, e.g. ``lambda m: {"w0": m.omega}`` for a sine
            (``negative_slope``, ``alpha``, ``approximate``, ``w0``).

    Example::

        register_activation(MySine, "sine", lambda m: {"w0": m.frequency})
    """
    if not isinstance(cls, type) or not issubclass(cls, nn.Module):
        raise TypeError(f"register_activation: expected an nn.Module class, got {cls!r}")
    code = activation if isinstance(activation, Activation) else _activation_named(activation)
    _REGISTERED[cls] = (code, params or (lambda module: {}))


def _activation_named(name: Any) -> Activation:
    try:
        return Activation[str(name).upper()]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; one of "
                         f"{', '.join(a.name.lower() for a in Activation)}") from None


def registered_activation(module: nn.Module):
    """``(code, params)`` of a module whose class was registered, else ``None``."""
    entry = _REGISTERED.get(type(module))
    return None if entry is None else entry


def _checked_registered(name: str, module: nn.Module) -> dict[str, Any]:
    code, params_of = _REGISTERED[type(module)]
    params = dict(params_of(module))
    try:
        reference = _ACTIVATION_CLASS[code](**params)
    except TypeError as err:
        raise UnsupportedModuleError(name, module, f"register_activation gave the parameters "
                                     f"{params} for {code.name.lower()} ({err})") from None
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(4, 257, generator=generator) * 3
    dtype = next((t.dtype for t in list(module.parameters()) + list(module.buffers())
                  if t.is_floating_point()), inputs.dtype)
    with torch.no_grad():
        got = module(inputs.to(dtype).clone()).to(torch.float64)
        want = reference(inputs.to(dtype).clone()).to(torch.float64)
    tolerance = 1e-5 if dtype != torch.float64 else 1e-12
    if got.shape != want.shape or not torch.allclose(got, want, rtol=tolerance, atol=tolerance):
        error = (got - want).abs().max() if got.shape == want.shape else "a different shape"
        raise UnsupportedModuleError(name, module, f"it was registered as "
                                     f"{code.name.lower()}{params or ''} but computes something "
                                     f"else on random inputs (largest difference {error})")
    return {"kind": "act", "name": name, "act": code.name, "params": params}


# --- hooks ----------------------------------------------------------------------------
def _hooks(module: nn.Module) -> tuple[dict, dict]:
    # torch has no public way to list a module's hooks; these dicts are where
    # register_forward_hook / register_forward_pre_hook put them
    return module._forward_hooks, module._forward_pre_hooks


def check_hooks(name: str, module: nn.Module) -> None:
    """Refuse modules whose forward hooks would change what they compute.

    The pre-hooks of the old-style ``torch.nn.utils.weight_norm`` and of
    ``torch.nn.utils.prune`` are allowed: the graph takes the weight they
    compute (:func:`effective_tensor`).
    """
    forward, pre = _hooks(module)
    pre = {key: hook for key, hook in pre.items()
           if not isinstance(hook, (WeightNorm, BasePruningMethod))}
    if forward or pre:
        kind = "forward hooks" if forward else "forward pre-hooks"
        raise UnsupportedModuleError(name, module, f"it has {kind}, which change what it "
                                     "computes and cannot be kept in a graph; remove them "
                                     "before converting")
    # the global hooks of register_module_forward_hook live here; torch has no public listing
    if module_globals._global_forward_hooks or module_globals._global_forward_pre_hooks:
        raise UnsupportedModuleError(name, module, "global forward hooks are registered "
                                     "(torch.nn.modules.module.register_module_forward_hook); "
                                     "remove them before converting")


_LEAF_CLASSES = (nn.Linear, nn.Flatten, nn.LayerNorm, nn.GroupNorm, *_CONVS, *_BATCHNORMS,
                 *_POOLS, *_DROPOUTS)


def is_leaf(module: nn.Module) -> bool:
    """Whether :func:`describe` handles ``module`` as one step: a ``torch.nn``
    layer (or a subclass that keeps its ``forward``, e.g. a parametrised
    layer) whose computation is fixed by the class."""
    if type(module) in _ACTIVATIONS or type(module) is Sine:
        return True
    for cls in _LEAF_CLASSES:
        if isinstance(module, cls):
            return type(module).forward is cls.forward  # a subclass's own forward is traced
    return False


def _pair_tuple(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _conv_padding(name: str, module: nn.Module) -> list[int]:
    padding = module.padding
    if padding == "valid":
        return [0] * len(module.kernel_size)
    if padding == "same":
        total = [d * (k - 1) for d, k in zip(module.dilation, module.kernel_size)]
        if any(t % 2 for t in total):
            raise UnsupportedModuleError(
                name, module, f"padding='same' with kernel_size={tuple(module.kernel_size)} "
                f"and dilation={tuple(module.dilation)} pads unevenly (more on one side), "
                "which integer padding cannot express")
        return [t // 2 for t in total]
    return list(padding)


def effective_tensor(module: nn.Module, name: str = "weight") -> torch.Tensor | None:
    """The tensor ``name`` a layer's forward uses: for a weight-normalised
    layer the normalised weight, for a layer pruned with
    ``torch.nn.utils.prune`` the masked one (both recomputed by their forward
    pre-hooks, so the attribute itself may be stale), for a parametrised
    layer the parametrisation's output; else the attribute."""
    for hook in _hooks(module)[1].values():
        if isinstance(hook, WeightNorm) and hook.name == name:
            return hook.compute_weight(module)
        # _tensor_name: the pruned tensor's name; torch offers no public accessor
        if isinstance(hook, BasePruningMethod) and hook._tensor_name == name:
            return hook.apply_mask(module)  # <name>_orig * <name>_mask
    value = getattr(module, name, None)
    return value if isinstance(value, torch.Tensor) else None


def describe(name: str, module: nn.Module) -> dict[str, Any]:
    """The layout step of a supported leaf module."""
    if isinstance(module, nn.Linear):
        return {"kind": "linear", "name": name, "in": module.in_features,
                "out": module.out_features, "bias": module.bias is not None}
    if isinstance(module, tuple(_CONVS)):
        step = {"kind": "conv", "name": name, "dim": _CONVS[_conv_class(module)],
                "in": module.in_channels, "out": module.out_channels,
                "bias": module.bias is not None, "kernel_size": list(module.kernel_size),
                "stride": list(module.stride), "padding": _conv_padding(name, module),
                "dilation": list(module.dilation), "padding_mode": module.padding_mode}
        if module.groups != 1:
            step["groups"] = module.groups
        return step
    if type(module) in _ACTIVATIONS:
        code, keys = _ACTIVATIONS[type(module)]
        return {"kind": "act", "name": name, "act": code.name,
                "params": {key: getattr(module, key) for key in keys}}
    if type(module) is Sine:  # made by the tracer from sin(w0 * x), or ours traced
        return {"kind": "act", "name": name, "act": Activation.SINE.name,
                "params": {"w0": module.w0}}
    if type(module) in _REGISTERED:
        return _checked_registered(name, module)
    if type(module) in _BATCHNORMS:
        return {"kind": "batchnorm", "name": name, "dim": _BATCHNORMS[type(module)],
                "num_features": module.num_features, "eps": module.eps,
                "momentum": module.momentum, "affine": module.affine,
                "track_running_stats": module.track_running_stats,
                "num_batches_tracked": (int(module.num_batches_tracked)
                                        if module.track_running_stats else None)}
    if isinstance(module, nn.GroupNorm):
        raise UnsupportedModuleError(
            name, module, f"GroupNorm({module.num_groups}, {module.num_channels}) normalises "
            "each channel with statistics over its group and the spatial positions, which "
            "per-neuron norm parameters (BatchNorm, LayerNorm over a Linear layer) cannot hold")
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
        return {"kind": "pool", "name": name, "type": _first_class(module, _POOLS).__name__,
                "args": args}
    if isinstance(module, nn.Flatten):
        return {"kind": "flatten", "name": name, "start_dim": module.start_dim,
                "end_dim": module.end_dim}
    if isinstance(module, _DROPOUTS):
        return {"kind": "dropout", "name": name,
                "type": _first_class(module, _DROPOUTS[::-1]).__name__, "p": module.p}
    raise UnsupportedModuleError(name, module)


def _conv_class(module: nn.Module) -> type:
    return _first_class(module, tuple(_CONVS))


def _first_class(module: nn.Module, classes: tuple) -> type:
    return next(cls for cls in classes if isinstance(module, cls))


# --- layout step -> module ---------------------------------------------------------
class StepError(ValueError):
    """A layout step that does not describe a module this package builds."""

    def __init__(self, step: Any, message: str):
        name = step.get("name") if isinstance(step, dict) else None
        super().__init__(f"layout step {name!r}: {message}")


def _build_conv(step: dict[str, Any]) -> nn.Module:
    cls = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[step["dim"]]
    return cls(step["in"], step["out"], tuple(step["kernel_size"]), stride=tuple(step["stride"]),
               padding=tuple(step["padding"]), dilation=tuple(step["dilation"]),
               groups=step.get("groups", 1), bias=step["bias"],
               padding_mode=step["padding_mode"])


def _build_batchnorm(step: dict[str, Any]) -> nn.Module:
    cls = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[step["dim"]]
    return cls(step["num_features"], eps=step["eps"], momentum=step["momentum"],
               affine=step["affine"], track_running_stats=step["track_running_stats"])


def _build_pool(step: dict[str, Any]) -> nn.Module:
    cls = _POOL_CLASSES.get(step.get("type"))
    if cls is None:
        raise StepError(step, f"pool type {step.get('type')!r} is not one of "
                        f"{', '.join(_POOL_CLASSES)}")
    args = {key: tuple(value) if isinstance(value, list) else value
            for key, value in step["args"].items()}
    unknown = set(args) - set(_POOL_ARGS)
    if unknown or args.get("return_indices"):
        raise StepError(step, f"pool arguments {sorted(unknown) or ['return_indices']} are "
                        "not supported")
    return cls(**args)


def _build_dropout(step: dict[str, Any]) -> nn.Module:
    cls = _DROPOUT_CLASSES.get(step.get("type"))
    if cls is None:
        raise StepError(step, f"dropout type {step.get('type')!r} is not one of "
                        f"{', '.join(_DROPOUT_CLASSES)}")
    return cls(p=step["p"])


def _build_act(step: dict[str, Any]) -> nn.Module:
    code = activation_code(step)
    params = step.get("params", {})
    allowed = _ACTIVATION_PARAMS[code]
    if not isinstance(params, dict) or set(params) - set(allowed):
        raise StepError(step, f"activation {code.name} takes the parameters "
                        f"{list(allowed) or 'none'}, got {params!r}")
    return _ACTIVATION_CLASS[code](**params)


class Residual(nn.Module):
    """``x + saved``: a rebuilt residual connection.

    ``saved`` is the input of the child ``source`` of the enclosing
    :class:`~nft_pyg.graph.convert.GraphNet` (the output of a neuron layer).

    Args:
        source (int): index of the child whose input is added.
    """

    def __init__(self, source: int):
        super().__init__()
        self.source = source

    def forward(self, x: torch.Tensor, saved: torch.Tensor) -> torch.Tensor:
        return x + saved

    def extra_repr(self) -> str:
        return f"source={self.source}"


class GraphNet(nn.Sequential):
    """A rebuilt network with residual connections: an ``nn.Sequential`` whose
    :class:`Residual` children add the input of an earlier child
    (``Residual.source``) to their input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sources = {child.source for child in self if isinstance(child, Residual)}
        saved = {}
        for index, child in enumerate(self):
            if index in sources:
                saved[index] = x
            x = child(x, saved[child.source]) if isinstance(child, Residual) else child(x)
        return x


_BUILDERS: dict[str, Callable[[dict[str, Any]], nn.Module]] = {
    "linear": lambda s: nn.Linear(s["in"], s["out"], bias=s["bias"]),
    "conv": _build_conv,
    "act": _build_act,
    "batchnorm": _build_batchnorm,
    "layernorm": lambda s: nn.LayerNorm(s["num_features"], eps=s["eps"],
                                        elementwise_affine=s["affine"], bias=s["bias"]),
    "pool": _build_pool,
    "flatten": lambda s: nn.Flatten(s["start_dim"], s["end_dim"]),
    "dropout": _build_dropout,
}


def build(step: dict[str, Any]) -> nn.Module:
    """A fresh module for one layout step (parameters to be loaded).

    Only the module kinds :func:`describe` produces are built (a ``pool`` or
    ``dropout`` step names one of the known classes, an ``act`` step a known
    activation with its own hyper-parameters); anything else is a
    :class:`ValueError` naming the step. (``residual`` steps are built by
    :func:`~nft_pyg.graph.convert.to_module`.)
    """
    kind = step.get("kind") if isinstance(step, dict) else None
    builder = _BUILDERS.get(kind)
    if builder is None:
        raise StepError(step, f"unknown step kind {kind!r}; one of "
                        f"{', '.join(_BUILDERS)}, residual")
    try:
        return builder(step)
    except StepError:
        raise
    except (KeyError, TypeError, ValueError) as err:
        raise StepError(step, f"cannot build a {kind} from it ({type(err).__name__}: "
                        f"{err})") from None


def activation_code(step: dict[str, Any]) -> Activation:
    try:
        return Activation[step["act"]]
    except (KeyError, TypeError):
        raise StepError(step, f"unknown activation {step.get('act')!r}; one of "
                        f"{', '.join(a.name for a in Activation)}") from None
