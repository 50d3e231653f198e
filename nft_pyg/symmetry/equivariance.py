r"""Numerical checks that an operator respects neuron permutations.

For a random neuron permutation :math:`\sigma` (hidden neurons only by
default), an equivariant operator :math:`f` on weight-space features
satisfies :math:`f(\sigma \cdot u) = \sigma \cdot f(u)` and an invariant one
:math:`f(\sigma \cdot u) = f(u)`. :func:`check_equivariance` measures the
largest violation over a few random permutations (one independent
permutation per graph of a batch).
"""
from __future__ import annotations

import copy
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch_geometric.data import Data

from ..nn.structure import WeightGraphIndex
from .permutation import NeuronPermutation, permute, permute_features, random_permutation

FEATURES, GRAPH, PYG = "features", "graph", "pyg"


@dataclass
class EquivarianceReport:
    """Outcome of :func:`check_equivariance`; truthy when it passed.

    Attributes:
        max_error (float): largest absolute deviation over all trials.
        trials (int): number of permutations tried.
        passed (bool): ``max_error <= atol`` (and finite).
        kind (str): ``"equivariance"`` or ``"invariance"``.
        nontrivial_trials (int): trials whose permutation was not the
            identity (0 means the check tested nothing, e.g. no hidden layer
            of more than one neuron).
        atol (float): the tolerance used.
    """

    max_error: float
    trials: int
    passed: bool
    kind: str = "equivariance"
    nontrivial_trials: int = 0
    atol: float = 0.0

    def __bool__(self) -> bool:
        return self.passed


def _call_mode(module: Callable) -> str:
    """``"pyg"`` for ``module(x, edge_index, edge_attr, index)`` (our operators, a
    ``torch_geometric.nn.Sequential`` of them), ``"features"`` if
    ``module(x, edge_attr, graph)`` binds, else ``"graph"``."""
    target = module.forward if isinstance(module, nn.Module) else module
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):  # builtins without a signature: try the operator form
        return FEATURES
    names = list(signature.parameters)
    # torch_geometric.nn.Sequential's forward takes *args: its inputs are in .signature
    declared = getattr(getattr(module, "signature", None), "param_dict", None)
    if isinstance(declared, dict):
        names = list(declared)
        if len(names) == 4 and names[1] == "edge_index":
            return PYG
        if len(names) == 3:
            return FEATURES
    if len(names) >= 4 and names[1] == "edge_index":
        return PYG

    def binds(*args) -> bool:
        try:
            signature.bind(*args)
            return True
        except TypeError:
            return False
    if binds(0, 0, 0):
        return FEATURES
    if binds(0, 0, 0, 0):
        return PYG
    if binds(0):
        return GRAPH
    raise TypeError(f"check_equivariance: {type(module).__name__} must be callable as "
                    "module(x, edge_index, edge_attr, index), module(x, edge_attr, graph) or "
                    f"module(graph); its signature is {signature}")


def call_module(module: Callable, x: Tensor, edge_attr: Tensor, graph: Data,
                mode: str | None = None) -> Any:
    """Run ``module`` on features of ``graph`` in its calling convention (see
    :func:`check_equivariance`)."""
    mode = _call_mode(module) if mode is None else mode
    if mode == PYG:
        return module(x, graph.edge_index, edge_attr, WeightGraphIndex.from_data(graph))
    if mode == FEATURES:
        return module(x, edge_attr, graph)
    return module(_with_features(graph, x, edge_attr))


def _with_features(graph: Data, x: Tensor, edge_attr: Tensor) -> Data:
    carried = copy.copy(graph)
    carried.x, carried.edge_attr = x, edge_attr
    return carried


def _split_output(output: Any, graph: Data, invariant: bool | None, where: str):
    """``(kind, node_part, edge_part, tensor_part)`` of a module's output."""
    if isinstance(output, Data):
        return "graph", getattr(output, "x", None), getattr(output, "edge_attr", None), None
    if isinstance(output, (tuple, list)) and len(output) == 2:
        return "pair", output[0], output[1], None
    if isinstance(output, Tensor):
        if invariant is False:
            if output.size(0) == graph.num_nodes and output.size(0) != graph.num_edges:
                return "nodes", output, None, None
            if output.size(0) == graph.num_edges and output.size(0) != graph.num_nodes:
                return "edges", None, output, None
            raise ValueError(f"{where}: invariant=False but the output {tuple(output.shape)} "
                             f"is neither node-level ({graph.num_nodes} rows) nor edge-level "
                             f"({graph.num_edges} rows), or it is ambiguous")
        return "tensor", None, None, output
    raise TypeError(f"{where}: the module returned {type(output).__name__}; expected "
                    "(x, edge_attr), a NeuronGraph / Batch, or a tensor")


def _deviation(a: Tensor | None, b: Tensor | None, what: str, where: str) -> float:
    if a is None and b is None:
        return 0.0
    if a is None or b is None or a.shape != b.shape:
        raise ValueError(f"{where}: the {what} output changed shape under the permutation: "
                         f"{None if a is None else tuple(a.shape)} vs "
                         f"{None if b is None else tuple(b.shape)}")
    if a.numel() == 0:
        return 0.0
    error = (a.detach() - b.detach()).abs().max()
    return float(error) if torch.isfinite(error) else math.inf


def check_equivariance(module: Callable, graph: Data, x: Tensor | None = None,
                       edge_attr: Tensor | None = None,
                       perm: NeuronPermutation | list[NeuronPermutation] | None = None,
                       generator: torch.Generator | None = None, trials: int = 3,
                       atol: float = 1e-6, invariant: bool | None = None,
                       permute_io: bool = False) -> EquivarianceReport:
    """Check numerically that ``module`` is permutation equivariant (or invariant).

    The module's calling convention is read from its signature:

    - ``module(x, edge_index, edge_attr, index)`` (the operators ``NPConv``,
      ``HNPConv``, ..., and a ``torch_geometric.nn.Sequential`` with the
      signature ``'x, edge_index, edge_attr, index'``) when its second
      parameter is ``edge_index`` or only four positional arguments bind;
      ``index`` is the :class:`~nft_pyg.nn.structure.WeightGraphIndex` of
      the (permuted) graph.
    - ``module(x, edge_attr, graph)`` (pointwise modules, norms, pools) when
      three positional arguments bind. ``x`` / ``edge_attr`` default to
      ``graph.x`` / ``graph.edge_attr``; on the permuted side the module gets
      the permuted features and the permuted graph.
    - ``module(graph)`` otherwise; the graph it gets carries ``x`` and
      ``edge_attr`` when they are given.

    The output decides what is checked:

    - ``(x_out, edge_out)`` or a ``NeuronGraph`` / ``Batch`` (its ``x`` and
      ``edge_attr``): equivariance, i.e. the output on the permuted graph
      equals :func:`permute_features` of the output on the original graph;
    - a tensor (``[B, F]`` or ``[F]``, e.g. a readout): invariance, i.e. it
      is unchanged. With ``invariant=False`` a tensor of ``N`` (or ``E``)
      rows is instead taken as node (edge) features and checked for
      equivariance; with ``invariant=True`` every output must be unchanged.

    The module is run under ``torch.no_grad()`` in whatever mode it is in
    (put it in eval mode first if it has dropout).

    Args:
        module (callable): the operator (usually an ``nn.Module``).
        graph (NeuronGraph | Batch): the structure (and default features).
        x (Tensor, optional): node features ``[N, C]``.
        edge_attr (Tensor, optional): edge features ``[E, C]``.
        perm (NeuronPermutation | list, optional): test this permutation (one
            per graph of a batch, or one for all) instead of random ones.
        generator (torch.Generator, optional): randomness for the permutations.
        trials (int): random permutations to try (ignored when ``perm`` is given).
        atol (float): largest absolute error that passes.
        invariant (bool, optional): force the kind of check (see above).
        permute_io (bool): also permute input and output neurons (the NP
            symmetry group).

    Returns:
        EquivarianceReport: ``max_error``, ``trials``, ``passed`` (truthy).
    """
    where = "check_equivariance"
    x = graph.x if x is None else x
    edge_attr = graph.edge_attr if edge_attr is None else edge_attr
    mode = _call_mode(module)
    carried = _with_features(graph, x, edge_attr)

    def run(features_graph: Data) -> Any:
        if mode == GRAPH:
            return module(features_graph)
        return call_module(module, features_graph.x, features_graph.edge_attr, features_graph,
                           mode)

    if perm is not None:
        perms = [perm]
    else:
        if trials < 1:
            raise ValueError(f"{where}: trials must be at least 1, got {trials}")
        perms = [random_permutation(graph, generator=generator, permute_io=permute_io)
                 for _ in range(trials)]

    max_error, nontrivial = 0.0, 0
    with torch.no_grad():
        kind, ref_x, ref_edges, ref_tensor = _split_output(run(carried), graph, invariant, where)
        check = "invariance" if kind == "tensor" or invariant else "equivariance"
        for p in perms:
            nontrivial += not all(q.is_identity() for q in _as_list(p))
            permuted = permute(carried, p)
            _, out_x, out_edges, out_tensor = _split_output(run(permuted), graph, invariant,
                                                            where)
            if check == "invariance":
                expected_x, expected_edges = ref_x, ref_edges
            else:
                expected_x, expected_edges = permute_features(graph, ref_x, ref_edges, p)
            error = max(_deviation(out_x, expected_x, "node", where),
                        _deviation(out_edges, expected_edges, "edge", where),
                        _deviation(out_tensor, ref_tensor, "tensor", where))
            max_error = max(max_error, error)
    passed = math.isfinite(max_error) and max_error <= atol
    return EquivarianceReport(max_error, len(perms), passed, check, nontrivial, atol)


def _as_list(perm) -> list[NeuronPermutation]:
    return [perm] if isinstance(perm, NeuronPermutation) else list(perm)


def assert_equivariant(module: Callable, graph: Data, *args, **kwargs) -> EquivarianceReport:
    """:func:`check_equivariance`, raising ``AssertionError`` when it fails.

    Takes the same arguments; returns the report when it passes.
    """
    report = check_equivariance(module, graph, *args, **kwargs)
    if not report.passed:
        raise AssertionError(
            f"{type(module).__name__} is not permutation-{report.kind[:-4]}ant: max error "
            f"{report.max_error:.3e} > atol {report.atol:.1e} over {report.trials} "
            f"permutation(s)")
    return report
