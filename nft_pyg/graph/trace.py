"""Follow a module's forward pass as a chain of leaf modules.

``nn.Sequential`` containers are walked directly. Any other container is
traced with ``torch.fx``; its forward must then be a plain chain (each call
consumes the previous call's output, nothing else), with only supported
leaf modules and a few functional calls (flatten and the activations).
Anything else raises :class:`~nft_pyg.graph.modules.UnsupportedModuleError`
naming the module.
"""
from __future__ import annotations

import operator

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from .modules import Sine, UnsupportedModuleError, is_leaf

# functional calls inside a traced forward -> the module that does the same
_FUNCTIONS = {
    torch.relu: nn.ReLU, F.relu: nn.ReLU, torch.tanh: nn.Tanh, F.tanh: nn.Tanh,
    torch.sigmoid: nn.Sigmoid, F.sigmoid: nn.Sigmoid, F.gelu: nn.GELU, F.silu: nn.SiLU,
}
_METHODS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}


class _LeafTracer(torch.fx.Tracer):
    def is_leaf_module(self, module: nn.Module, qualname: str) -> bool:
        return is_leaf(module) or isinstance(module, Sine) or super().is_leaf_module(
            module, qualname)


def module_chain(module: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """The leaf modules of ``module`` in the order its forward applies them.

    Returns ``(path, module)`` pairs; the path is the module's name in the
    root module (its state-dict prefix), or a generated ``"<call>"`` name for
    a functional call found by tracing.
    """
    if is_leaf(module):
        return [(prefix, module)]
    if type(module).__module__.startswith("torch.nn.") and not isinstance(module, nn.Sequential):
        raise UnsupportedModuleError(prefix, module)
    if isinstance(module, nn.Sequential):
        chain = []
        for name, child in module.named_children():
            chain += module_chain(child, f"{prefix}.{name}" if prefix else name)
        return chain
    return _traced_chain(module, prefix)


def _traced_chain(module: nn.Module, prefix: str) -> list[tuple[str, nn.Module]]:
    def full(name: str) -> str:
        return f"{prefix}.{name}" if prefix else name

    try:
        graph = _LeafTracer().trace(module)
    except Exception as err:  # fx raises many kinds for data-dependent control flow
        raise UnsupportedModuleError(prefix, module, "its forward cannot be followed as a "
                                     f"chain of modules (torch.fx: {err})") from None
    chain: list[tuple[str, nn.Module]] = []
    previous = None
    seen: set[str] = set()
    for node in graph.nodes:
        if node.op == "placeholder":
            if previous is not None:
                raise UnsupportedModuleError(prefix, module, "its forward takes more than "
                                             "one input")
            previous = node
            continue
        if node.op == "get_attr":
            raise UnsupportedModuleError(prefix, module, f"its forward reads the attribute "
                                         f"'{node.target}' directly")
        if node.op == "output":
            if node.args[0] is not previous:
                raise UnsupportedModuleError(prefix, module, "its output is not the last "
                                             "call of the chain")
            break
        inputs = [arg for arg in node.all_input_nodes]
        if inputs != [previous]:
            raise UnsupportedModuleError(
                prefix, module, f"the call '{node.name}' does not consume only the previous "
                "call's output (residual connections and branches are not supported)")
        chain += _node_modules(node, module, prefix, full, seen)
        previous = node
    return chain


def _node_modules(node, module, prefix, full, seen):
    if node.op == "call_module":
        submodule = module.get_submodule(node.target)
        stateful = any(True for _ in submodule.parameters()) or \
            any(True for _ in submodule.buffers())
        if node.target in seen and stateful:  # shared weights; a shared ReLU is fine
            raise UnsupportedModuleError(full(node.target), submodule,
                                         "the same module is applied twice")
        seen.add(node.target)
        return module_chain(submodule, full(node.target))
    if node.op == "call_function" and node.target in (torch.flatten,):
        start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
        end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
        return [(f"<{full(node.name)}>", nn.Flatten(start, end))]
    if node.op == "call_method" and node.target == "flatten":
        start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
        end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
        return [(f"<{full(node.name)}>", nn.Flatten(start, end))]
    if node.op == "call_function" and node.target in _FUNCTIONS and len(node.args) == 1:
        return [(f"<{full(node.name)}>", _FUNCTIONS[node.target]())]
    if node.op == "call_method" and node.target in _METHODS and len(node.args) == 1:
        return [(f"<{full(node.name)}>", _METHODS[node.target]())]
    what = node.target if node.op != "call_function" else getattr(
        node.target, "__name__", str(node.target))
    if node.target in (operator.add, operator.mul, torch.add, torch.mul):
        what = f"arithmetic '{what}'"
    raise UnsupportedModuleError(prefix, module, f"its forward calls {node.op} '{what}', "
                                 "which has no neuron-graph form")
