"""Follow a module's forward pass as a chain of layers.

``nn.Sequential`` containers are walked directly. Any other module is
traced with ``torch.fx``, one module at a time (its submodules are calls
that are followed in turn, so an error names the submodule by its path in
the user's network). What a forward computes is matched against the forms
the neuron graph can hold:

- supported ``torch.nn`` layers (:func:`~nft_pyg.graph.modules.is_leaf`) and
  modules declared with :func:`~nft_pyg.graph.modules.register_activation`;
- element-wise activations by what they compute: ``torch.relu``,
  ``F.leaky_relu(x, 0.2)``, ``F.gelu(x, approximate=...)``, ``F.elu``,
  ``torch.sin(w0 * x)`` with ``w0`` a number, attribute, buffer or parameter
  holding one value, ...;
- shape and pooling calls: ``torch.flatten``, ``x.flatten(1)``,
  ``x.view(x.size(0), -1)``, ``x.reshape(x.shape[0], -1)``, ``F.max_pool*``,
  ``F.avg_pool*``, ``F.adaptive_*_pool*``;
- residual connections ``h + f(h)`` where ``h`` is the output of a layer of
  neurons (after its norm and activation) and ``f`` starts with a weight
  layer.

Anything else (a constant added, a product of two activations, a branch, a
second input, control flow on tensor values) raises
:class:`~nft_pyg.graph.modules.UnsupportedModuleError` naming the module and
saying what it computes.
"""
from __future__ import annotations

import numbers
import operator
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from .modules import (
    GraphNet,
    Residual,
    ResidualAdd,
    Sine,
    UnsupportedModuleError,
    check_hooks,
    is_leaf,
    registered_activation,
)


# --- values a traced forward passes around ----------------------------------
@dataclass(frozen=True)
class _Stream:
    """The network's activations after the first ``position`` chain entries."""

    position: int


@dataclass(frozen=True)
class _Scaled:
    """``scale * stream``: only a sine may consume it (``sin(w0 * x)``)."""

    position: int
    scale: float


@dataclass(frozen=True, eq=False)
class _Tensor:
    """A parameter or buffer of the traced module (for ``F.linear(x, self.weight)``)."""

    target: str
    value: torch.Tensor


@dataclass(frozen=True)
class _BatchSize:
    """``x.size(0)`` of the stream (for ``x.view(x.size(0), -1)``)."""


@dataclass(frozen=True)
class _Opaque:
    """Anything else (a tensor attribute, a shape tuple, ...): using it is refused."""

    what: str


def _number(value: Any) -> float | None:
    """``value`` as a float when it is a plain number or a one-element tensor."""
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1 and value.is_floating_point():
        return float(value.detach().reshape(()))
    return None


# --- functional forms -----------------------------------------------------------
def _act(cls, **fixed):
    return lambda args: cls(**fixed, **args)


#: functional activation -> (names of its positional arguments after x, the module)
_FUNCTIONAL_ACTS = {
    torch.relu: ((), nn.ReLU), F.relu: (("inplace",), nn.ReLU),
    torch.relu_: ((), nn.ReLU), F.relu_: ((), nn.ReLU),
    torch.tanh: ((), nn.Tanh), F.tanh: ((), nn.Tanh),
    torch.sigmoid: ((), nn.Sigmoid), F.sigmoid: ((), nn.Sigmoid),
    F.gelu: (("approximate",), nn.GELU), F.silu: (("inplace",), nn.SiLU),
    F.leaky_relu: (("negative_slope", "inplace"), nn.LeakyReLU),
    F.elu: (("alpha", "inplace"), nn.ELU),
}
_METHOD_ACTS = {"relu": nn.ReLU, "relu_": nn.ReLU, "tanh": nn.Tanh, "tanh_": nn.Tanh,
                "sigmoid": nn.Sigmoid, "sigmoid_": nn.Sigmoid}
_SINES = (torch.sin, torch.sin_)


def _pool_table() -> dict:
    table = {}
    for dim in (1, 2, 3):
        table[getattr(F, f"max_pool{dim}d")] = (
            ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"),
            getattr(nn, f"MaxPool{dim}d"))
        table[getattr(F, f"avg_pool{dim}d")] = (
            ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad",
             "divisor_override") if dim > 1 else
            ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad"),
            getattr(nn, f"AvgPool{dim}d"))
        table[getattr(F, f"adaptive_max_pool{dim}d")] = (
            ("output_size", "return_indices"), getattr(nn, f"AdaptiveMaxPool{dim}d"))
        table[getattr(F, f"adaptive_avg_pool{dim}d")] = (
            ("output_size",), getattr(nn, f"AdaptiveAvgPool{dim}d"))
    return table


_FUNCTIONAL_POOLS = _pool_table()
_ADDS = (operator.add, operator.iadd, torch.add)
_MULS = (operator.mul, operator.imul, torch.mul)


def _callee(node: torch.fx.Node) -> str:
    """A readable name of what a traced call does (no tracing vocabulary)."""
    target = node.target
    if node.op == "call_method":
        return f"the tensor method .{target}()"
    if target in _ADDS:
        return "an addition"
    if target in _MULS:
        return "a multiplication"
    if target in (operator.sub, torch.sub):
        return "a subtraction"
    if target in (operator.truediv, torch.div):
        return "a division"
    name = getattr(target, "__name__", str(target))
    module = getattr(target, "__module__", None) or ""
    if "functional" in module:
        return f"F.{name}"
    if "torch" in module or isinstance(target, type(torch.sin)):
        return f"torch.{name}"
    return f"the function {name}"


# --- the walker --------------------------------------------------------------
class _Tracer(torch.fx.Tracer):
    """Traces one module's own forward; every submodule call stays one call."""

    def is_leaf_module(self, module: nn.Module, qualname: str) -> bool:
        return True


def module_chain(module: nn.Module, prefix: str = "") -> list[tuple[str, Any]]:
    """The layers of ``module`` in the order its forward applies them.

    Returns ``(path, module)`` pairs; the path is the module's name in the
    root module (its state-dict prefix), or a ``"<...>"`` name for a
    functional call. A residual connection is a
    :class:`~nft_pyg.graph.modules.ResidualAdd` entry whose ``source`` is the
    chain position of the added value.
    """
    walker = _Walker()
    out = walker.call(module, prefix, _Stream(0))
    if not isinstance(out, _Stream) or out.position != len(walker.chain):
        raise UnsupportedModuleError(prefix, module, "its output is not the result of its "
                                     "last layer")
    return walker.chain


class _Walker:
    def __init__(self):
        self.chain: list[tuple[str, Any]] = []
        self.applied: dict[int, str] = {}  # id of a module with weights -> its path

    # a call of a module on the stream
    def call(self, module: nn.Module, path: str, value: Any) -> Any:
        check_hooks(path, module)
        stream = self.expect_stream(value, path, module)
        if is_leaf(module) or registered_activation(module) is not None:
            self.append_leaf(path, module, stream)
            return _Stream(len(self.chain))
        if isinstance(module, GraphNet):  # a network rebuilt by to_module
            starts = {}
            for index, (name, child) in enumerate(module.named_children()):
                starts[index] = self.expect_stream(value, path, module).position
                child_path = f"{path}.{name}" if path else name
                if isinstance(child, Residual):
                    self.chain.append((child_path, ResidualAdd(starts[child.source], path,
                                                               module)))
                    value = _Stream(len(self.chain))
                else:
                    value = self.call(child, child_path, value)
            return value
        if isinstance(module, nn.Sequential):
            for name, child in module.named_children():
                value = self.call(child, f"{path}.{name}" if path else name, value)
            return value
        if type(module).__module__.startswith("torch.nn."):
            raise UnsupportedModuleError(path, module)
        return self.trace(module, path, stream)

    def append_leaf(self, path: str, module: nn.Module, stream: _Stream) -> None:
        if stream.position != len(self.chain):
            self.branch(path, module)
        other = self.applied.get(id(module))
        if other is not None and (next(module.parameters(), None) is not None
                                  or next(module.buffers(), None) is not None):
            also = f" (also as {other})" if other != path else ""
            raise UnsupportedModuleError(path, module, "the same layer (with weights) is "
                                         f"applied twice{also}; shared weights have no "
                                         "neuron-graph form")
        self.applied[id(module)] = path  # a shared parameter-free activation is fine
        self.chain.append((path, module))

    def append(self, path: str, module: nn.Module, stream: _Stream, owner, owner_path) -> Any:
        if stream.position != len(self.chain):
            self.branch(owner_path, owner)
        self.chain.append((path, module))
        return _Stream(len(self.chain))

    def branch(self, path: str, module: nn.Module):
        raise UnsupportedModuleError(path, module, "its forward branches: a layer reads a "
                                     "value other than the previous layer's output (only "
                                     "residual additions h + f(h) with an identity shortcut "
                                     "can join two branches; a projection shortcut is not "
                                     "supported)")

    def expect_stream(self, value: Any, path: str, module: nn.Module) -> _Stream:
        if isinstance(value, _Stream):
            return value
        if isinstance(value, _Scaled):
            raise UnsupportedModuleError(path, module, f"it receives {value.scale:g} * x; a "
                                         "product with a constant is supported only inside a "
                                         "sine, sin(w0 * x)")
        raise UnsupportedModuleError(path, module, "its input is not the network's "
                                     "activations")

    # tracing a user module's forward
    def trace(self, module: nn.Module, path: str, stream: _Stream) -> Any:
        try:
            graph = _Tracer().trace(module)
        except Exception as err:  # noqa: BLE001 - fx raises many kinds
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            if "control flow" in reason or "iterate" in reason or "bool" in reason:
                reason = "its forward has Python control flow (if / for / while) that " \
                    "depends on tensor values"
            else:
                detail = "" if "Proxy" in reason or "symbolic" in reason or "traced" in reason \
                    else f" (error: {reason})"
                reason = "its forward uses tensor values or shapes in Python code (e.g. " \
                    "len(x), int(x.shape[1]), a numpy call), which cannot be followed " \
                    f"without running it{detail}; register_activation can declare an activation"
            raise UnsupportedModuleError(path, module, reason) from None
        values: dict[torch.fx.Node, Any] = {}
        inputs = 0
        for node in graph.nodes:
            if node.op == "placeholder":
                inputs += 1
                if inputs > 1:
                    if node.args:  # an argument with a default the caller does not pass
                        values[node] = _Opaque(f"the argument '{node.target}'")
                        continue
                    raise UnsupportedModuleError(path, module, "its forward takes more than "
                                                 "one input")
                values[node] = stream
            elif node.op == "output":
                result = node.args[0]
                if isinstance(result, (tuple, list)):
                    raise UnsupportedModuleError(path, module, f"its forward returns "
                                                 f"{len(result)} values; a network for a neuron "
                                                 "graph returns one tensor")
                value = values.get(result, _Opaque("a constant")) \
                    if isinstance(result, torch.fx.Node) else _Opaque(repr(result))
                if isinstance(value, _Scaled):
                    raise UnsupportedModuleError(path, module, f"it returns its activations "
                                                 f"times {value.scale:g}; a product with a "
                                                 "constant is supported only inside a sine, "
                                                 "sin(w0 * x)")
                if not isinstance(value, _Stream):
                    raise UnsupportedModuleError(path, module, "it does not return the "
                                                 "network's activations")
                return value
            else:
                values[node] = self.node(node, values, module, path)
        raise UnsupportedModuleError(path, module, "its forward returns nothing")

    def node(self, node: torch.fx.Node, values: dict, module: nn.Module, path: str) -> Any:
        def full(name: str) -> str:
            return f"{path}.{name}" if path else name

        def arg(value: Any) -> Any:
            return values[value] if isinstance(value, torch.fx.Node) else value

        args = [arg(a) for a in node.args]
        kwargs = {key: arg(value) for key, value in node.kwargs.items()}
        fname = f"<{full(node.name)}>"

        if node.op == "get_attr":
            attribute = _get_attr(module, str(node.target))
            number = _number(attribute)
            if number is not None:
                return number
            if isinstance(attribute, torch.Tensor):
                return _Tensor(str(node.target), attribute)
            return _Opaque(f"the attribute '{node.target}'")
        if node.op == "call_module":
            submodule = module.get_submodule(str(node.target))
            if len(args) != 1 or kwargs:
                raise UnsupportedModuleError(full(str(node.target)), submodule,
                                             "it is called with more than one input")
            if isinstance(args[0], (_Stream, _Scaled)) and args[0].position != len(self.chain):
                if _is_noop(submodule):  # e.g. the empty nn.Sequential() of an identity shortcut
                    check_hooks(full(str(node.target)), submodule)
                    return args[0]
                self.branch(path, module)
            return self.call(submodule, full(str(node.target)), args[0])

        target = node.target
        streams = [a for a in args if isinstance(a, (_Stream, _Scaled))]
        # element-wise activations
        act = None
        if node.op == "call_function" and target in _FUNCTIONAL_ACTS:
            names, cls = _FUNCTIONAL_ACTS[target]
            act = (cls, _bind(names, args[1:], kwargs, node, module, path))
        elif node.op == "call_method" and target in _METHOD_ACTS and len(args) == 1 \
                and not kwargs:
            act = (_METHOD_ACTS[target], {})
        if act is not None:
            cls, params = act
            params.pop("inplace", None)
            stream = self.expect_stream(args[0], path, module)
            return self.append(fname, cls(**params), stream, module, path)
        if (node.op == "call_function" and target in _SINES) or \
                (node.op == "call_method" and target in ("sin", "sin_")):
            if len(args) != 1 or kwargs:
                raise UnsupportedModuleError(path, module, "it calls torch.sin with extra "
                                             "arguments")
            value = args[0]
            if isinstance(value, _Scaled):
                return self.append(fname, Sine(value.scale), _Stream(value.position),
                                   module, path)
            return self.append(fname, Sine(1.0), self.expect_stream(value, path, module),
                               module, path)
        # products with a constant: only as sin(w0 * x)
        if (node.op == "call_function" and target in _MULS) or \
                (node.op == "call_method" and target in ("mul", "mul_")):
            if len(args) == 2 and not kwargs:
                a, b = args
                if isinstance(a, _Stream) and isinstance(b, float):
                    return _Scaled(a.position, b)
                if isinstance(b, _Stream) and isinstance(a, float):
                    return _Scaled(b.position, a)
                if isinstance(a, _Stream) and isinstance(b, numbers.Real):
                    return _Scaled(a.position, float(b))
                if isinstance(b, _Stream) and isinstance(a, numbers.Real):
                    return _Scaled(b.position, float(a))
            if len(streams) >= 2:
                raise UnsupportedModuleError(path, module, "it multiplies two activations "
                                             "(a gate), which no neuron graph can hold")
            raise UnsupportedModuleError(path, module, "it multiplies its activations by "
                                         "something that is not one number")
        # residual connections
        if (node.op == "call_function" and target in _ADDS) or \
                (node.op == "call_method" and target in ("add", "add_")):
            return self.add(args, kwargs, fname, module, path)
        # flatten / view / reshape
        flatten = _flatten_of(node, args, kwargs)
        if flatten is not None:
            stream = self.expect_stream(args[0], path, module)
            return self.append(fname, nn.Flatten(*flatten), stream, module, path)
        if node.op == "call_method" and target == "size" and isinstance(args[0], _Stream):
            if len(args) == 2 and args[1] == 0 or kwargs.get("dim") == 0:
                return _BatchSize()
            return _Opaque("the size of the activations")
        if node.op == "call_function" and target is getattr and len(args) == 2 \
                and isinstance(args[0], _Stream) and args[1] == "shape":
            return _Opaque("shape")
        if node.op == "call_function" and target is operator.getitem and len(args) == 2 \
                and isinstance(args[0], _Opaque) and args[0].what in ("shape", "size") \
                and args[1] == 0:
            return _BatchSize()
        if node.op == "call_method" and target == "size" and len(args) == 1:
            return _Opaque("size")
        if node.op == "call_function" and target in _FUNCTIONAL_POOLS:
            names, cls = _FUNCTIONAL_POOLS[target]
            params = _bind(names, args[1:], kwargs, node, module, path)
            params = {key: value for key, value in params.items()
                      if not (key == "stride" and value is None)}
            stream = self.expect_stream(args[0], path, module)
            return self.append(fname, cls(**params), stream, module, path)
        if node.op == "call_function" and target in (F.dropout, F.dropout1d, F.dropout2d,
                                                     F.dropout3d):
            raise UnsupportedModuleError(path, module, f"it calls {_callee(node)}; use the "
                                         "module nn.Dropout (its train / eval mode is kept)")
        if node.op == "call_function" and target is F.linear:
            return self.functional_linear(args, kwargs, module, path)
        if node.op == "call_method" and target in ("contiguous", "clone", "detach") \
                and len(args) == 1 and not kwargs:
            return args[0]
        if node.op == "call_function" and target in (operator.sub, torch.sub, operator.truediv,
                                                     torch.div) and streams:
            what = "subtracts" if target in (operator.sub, torch.sub) else "divides"
            raise UnsupportedModuleError(path, module, f"it {what} its activations "
                                         f"({_callee(node)}), which is not a layer, an "
                                         "activation or a residual addition")
        raise UnsupportedModuleError(path, module, f"it calls {_callee(node)}, which has no "
                                     "neuron-graph form")

    def functional_linear(self, args, kwargs, module, path):
        """``F.linear(x, self.weight, self.bias)``: a Linear layer made of the
        module's own parameters, named as in its state dict."""
        params = dict(zip(("input", "weight", "bias"), args))
        params.update(kwargs)
        weight, bias = params.get("weight"), params.get("bias")
        if not isinstance(weight, _Tensor) or weight.value.dim() != 2 or \
                not (bias is None or isinstance(bias, _Tensor)):
            raise UnsupportedModuleError(path, module, "it calls F.linear with weights that "
                                         "are not parameters of the module")
        prefix, _, suffix = weight.target.rpartition(".")
        if suffix != "weight" or (bias is not None and bias.target != (
                f"{prefix}.bias" if prefix else "bias")):
            raise UnsupportedModuleError(path, module, "it calls F.linear with parameters not "
                                         "named weight and bias (their state-dict names "
                                         "could not be kept)")
        out_features, in_features = weight.value.shape
        linear = nn.Linear(in_features, out_features, bias=bias is not None)
        linear.weight = weight.value if isinstance(weight.value, nn.Parameter) \
            else nn.Parameter(weight.value, requires_grad=False)
        if bias is not None:
            linear.bias = bias.value if isinstance(bias.value, nn.Parameter) \
                else nn.Parameter(bias.value, requires_grad=False)
        name = f"{path}.{prefix}" if path and prefix else path or prefix
        stream = self.expect_stream(params.get("input"), path, module)
        if stream.position != len(self.chain):
            self.branch(path, module)
        self.chain.append((name, linear))
        return _Stream(len(self.chain))

    def add(self, args, kwargs, name, module, path):
        if len(args) != 2 or kwargs:
            raise UnsupportedModuleError(path, module, "it adds with extra arguments "
                                         "(alpha=...)")
        a, b = args
        if isinstance(a, (int, float)) or isinstance(b, (int, float)):
            raise UnsupportedModuleError(path, module, "it adds a constant to its "
                                         "activations, which is not an element-wise "
                                         "activation the graph knows")
        if not (isinstance(a, _Stream) and isinstance(b, _Stream)):
            raise UnsupportedModuleError(path, module, "it adds something that is not an "
                                         "activation of the network (only residual "
                                         "additions h + f(h) are supported)")
        if a.position == b.position:
            raise UnsupportedModuleError(path, module, "it adds a value to itself")
        late, early = (a, b) if a.position > b.position else (b, a)
        if late.position != len(self.chain):
            self.branch(path, module)
        self.chain.append((name, ResidualAdd(early.position, path, module)))
        return _Stream(len(self.chain))


def _is_noop(module: nn.Module) -> bool:
    """An ``nn.Identity`` or an ``nn.Sequential`` of no-ops (the identity shortcut
    ``self.shortcut = nn.Sequential()`` of many ResNets)."""
    if type(module) is nn.Identity:
        return True
    return type(module) is nn.Sequential and all(_is_noop(child) for child in module.children())


def _get_attr(module: nn.Module, target: str) -> Any:
    value: Any = module
    for part in target.split("."):
        value = getattr(value, part)
    return value


def _bind(names, args, kwargs, node, module, path) -> dict:
    if len(args) > len(names):
        raise UnsupportedModuleError(path, module, f"it calls {_callee(node)} with "
                                     "unexpected arguments")
    params = dict(zip(names, args))
    for key, value in kwargs.items():
        if key not in names:
            raise UnsupportedModuleError(path, module, f"it calls {_callee(node)} with the "
                                         f"argument {key}, which is not supported")
        params[key] = value
    for key, value in params.items():
        if isinstance(value, (_Stream, _Scaled, _BatchSize, _Opaque, _Tensor)):
            raise UnsupportedModuleError(path, module, f"it calls {_callee(node)} with "
                                         f"{key} computed from its input")
    return params


def _flatten_of(node: torch.fx.Node, args, kwargs) -> tuple[int, int] | None:
    """``(start_dim, end_dim)`` when the call flattens the stream."""
    if not args or not isinstance(args[0], _Stream):
        return None
    target = node.target
    if (node.op == "call_function" and target is torch.flatten) or \
            (node.op == "call_method" and target == "flatten"):
        names = ("start_dim", "end_dim")
        params = dict(zip(names, args[1:]))
        params.update(kwargs)
        start = params.get("start_dim", 0 if node.op == "call_function" else 0)
        end = params.get("end_dim", -1)
        if isinstance(start, int) and isinstance(end, int):
            return start, end
        return None
    if (node.op == "call_method" and target in ("view", "reshape")) or \
            (node.op == "call_function" and target is torch.reshape):
        shape = list(args[1:]) if len(args) > 2 or not isinstance(
            args[1] if len(args) > 1 else None, (tuple, list)) else list(args[1])
        if kwargs.get("shape") is not None:
            shape = list(kwargs["shape"])
        if len(shape) == 2 and isinstance(shape[0], _BatchSize) and shape[1] == -1:
            return 1, -1
    return None
