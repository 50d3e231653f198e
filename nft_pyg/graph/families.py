"""Network families that :func:`~nft_pyg.graph.convert.from_module` hands on.

A plain PyTorch module is converted by :mod:`.convert`; an escnn network goes
to :func:`nft_pyg.graph.escnn.from_escnn`, which exports it to plain PyTorch
and converts that with :mod:`.convert`. The escnn converter therefore sits
above the plain one: instead of being imported by :mod:`.convert`, it
registers itself here when :mod:`nft_pyg.graph` is imported (which any import
of a ``nft_pyg.graph`` module does first).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

_escnn_converter: Callable[..., Any] | None = None


def is_escnn_module(module: Any) -> bool:
    """Whether ``module`` is an escnn ``EquivariantModule`` (escnn is not imported)."""
    return isinstance(module, nn.Module) and any(
        cls.__module__.split(".")[0] == "escnn" for cls in type(module).__mro__)


def register_escnn_converter(converter: Callable[..., Any]) -> None:
    """Make ``converter(module, view, **options)`` the converter of escnn networks."""
    global _escnn_converter
    _escnn_converter = converter


def convert_escnn(module: nn.Module, view: str = "channel", **options: Any) -> Any:
    """Convert an escnn network with the registered converter."""
    if _escnn_converter is None:  # only while nft_pyg.graph is half imported
        raise RuntimeError("the escnn converter is not registered: import nft_pyg.graph first")
    return _escnn_converter(module, view, **options)
