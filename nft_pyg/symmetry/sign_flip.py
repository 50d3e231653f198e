r"""Sign flips: a weight-space symmetry beyond permutations.

If hidden neuron :math:`i` of layer :math:`l` is followed by an odd
activation :math:`\sigma(-z) = -\sigma(z)` (``tanh``, ``Sine``, identity),
negating its incoming weights and bias and its outgoing weights,

.. math::
    W_l[i, :] \to -W_l[i, :], \quad b_l[i] \to -b_l[i], \quad
    W_{l+1}[:, i] \to -W_{l+1}[:, i],

keeps the network's function. With one sign :math:`s_l[i] \in \{\pm 1\}`
per neuron (:math:`+1` on inputs and outputs) the action on the weight
space is :math:`W_l[i, j] \to s_l[i]\, W_l[i, j]\, s_{l-1}[j]`,
:math:`b_l[i] \to s_l[i]\, b_l[i]`: per neuron a copy of the group
:math:`C_2` (``escnn.group.cyclic_group(2)``) acting through its sign
representation (:func:`signs_from_group_elements`). On a neuron graph an
edge :math:`u \to v` is multiplied by :math:`s_u s_v` and a node by
:math:`s_v`; operator features (``C`` channels) transform the same way in
every channel, so an operator :math:`f` is sign-flip equivariant when
:math:`f(s \cdot u) = s \cdot f(u)` (:func:`check_sign_flip_equivariance`).
Which of our operators are is stated, and tested, in ``docs/escnn.md``.

Layers followed by a norm or by max pooling are not flippable
(``BatchNorm``/``LayerNorm`` and ``max`` do not commute with a sign), and
neither are layers with a non-odd activation (ReLU, GELU, ...).
"""
from __future__ import annotations

import copy
import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch_geometric.data import Data

from ..graph.convert import layout_of
from ..graph.layout import NORM_KINDS, WEIGHT_KINDS, Layout
from ..graph.types import Activation
from .equivariance import call_module
from .permutation import graph_layer_sizes

#: activations with sigma(-z) = -sigma(z)
ODD_ACTIVATIONS = (Activation.IDENTITY, Activation.TANH, Activation.SINE)


class SignFlip:
    """One sign (``+1`` / ``-1``) per neuron of every neuron layer ``0..L``.

    Args:
        layers (Sequence[Tensor | Sequence[int]]): ``layers[l]`` holds the
            ``n_l`` signs of neuron layer ``l``.
    """

    def __init__(self, layers: Sequence[Tensor | Sequence[int]]):
        if len(layers) < 2:
            raise ValueError(f"SignFlip: needs one sign vector per neuron layer (at least 2), "
                             f"got {len(layers)}")
        self.layers = [torch.as_tensor(s).reshape(-1).to(torch.long) for s in layers]
        for l, s in enumerate(self.layers):
            if not bool(((s == 1) | (s == -1)).all()):
                raise ValueError(f"SignFlip: layer {l} holds values other than +1 / -1: "
                                 f"{s.tolist()}")

    @property
    def sizes(self) -> list[int]:
        return [s.numel() for s in self.layers]

    def is_identity(self) -> bool:
        return all(bool((s == 1).all()) for s in self.layers)

    def __getitem__(self, layer: int) -> Tensor:
        return self.layers[layer]

    def __len__(self) -> int:
        return len(self.layers)

    def __repr__(self) -> str:
        return f"SignFlip({[s.tolist() for s in self.layers]})"


def flippable_layers(obj: nn.Module | Layout | str | list) -> list[int]:
    """Neuron layers whose neurons may be sign flipped without changing the function.

    A hidden layer ``l`` (``0 < l < L``) qualifies when every step between
    weight layer ``l`` and weight layer ``l + 1`` is an odd activation
    (``Tanh``, ``Sine``, ``Identity``), dropout, flatten, or average pooling
    (linear, so it commutes with signs).
    """
    layout = layout_of(obj) if isinstance(obj, nn.Module) else Layout.coerce(obj)
    L = layout.num_layers
    ok = {l: True for l in range(1, L)}
    for l, step in layout.steps_by_neuron_layer():
        if l not in ok or step["kind"] in WEIGHT_KINDS:
            continue
        if step["kind"] == "act":
            ok[l] &= Activation[step["act"]] in ODD_ACTIVATIONS
        elif step["kind"] in NORM_KINDS:
            ok[l] = False
        elif step["kind"] == "pool":
            ok[l] &= "Avg" in step["type"]
    return [l for l, flippable in ok.items() if flippable]


def random_sign_flip(obj: Any, generator: torch.Generator | None = None,
                     return_flip: bool = False):
    """A random function-preserving sign flip of a network.

    Every neuron of every flippable hidden layer (:func:`flippable_layers`)
    gets an independent random sign.

    Args:
        obj: an ``nn.Module`` (returns a flipped deep copy) or a single raw
            :class:`~nft_pyg.NeuronGraph` (returns the flipped graph).
        generator (torch.Generator, optional): source of randomness.
        return_flip (bool): also return the :class:`SignFlip` used.
    """
    flip = random_sign_flip_of(obj, generator)
    flipped = sign_flip(obj, flip)
    return (flipped, flip) if return_flip else flipped


def random_sign_flip_of(obj: Any, generator: torch.Generator | None = None) -> SignFlip:
    """The random :class:`SignFlip` :func:`random_sign_flip` would apply to ``obj``."""
    if isinstance(obj, nn.Module):
        layout = layout_of(obj)
    elif isinstance(obj, Data):
        layout = Layout.coerce(obj.layout, "random_sign_flip")
    else:
        raise TypeError(f"random_sign_flip: expected an nn.Module or a NeuronGraph, got "
                        f"{type(obj).__name__}")
    flippable = set(flippable_layers(layout))
    layers = []
    for l, n in enumerate(layout.neuron_layer_sizes):
        if l in flippable:
            layers.append(1 - 2 * torch.randint(0, 2, (n,), generator=generator))
        else:
            layers.append(torch.ones(n, dtype=torch.long))
    return SignFlip(layers)


def sign_flip(obj: Any, flip: SignFlip):
    """Apply a :class:`SignFlip` to a module (deep copy) or a raw / feature graph.

    On a graph every edge ``u -> v`` is multiplied by ``s_u * s_v`` and every
    node by ``s_v`` (all channels); this is the action on operator features
    too. No check that the flip keeps the function: see
    :func:`flippable_layers`.
    """
    if isinstance(obj, nn.Module):
        return _flip_module(obj, flip)
    if isinstance(obj, Data):
        out = copy.copy(obj)
        out.__dict__.pop("_nft_structure", None)
        out.x, out.edge_attr = flip_features(obj, obj.x, obj.edge_attr, flip)
        return out
    raise TypeError(f"sign_flip: expected an nn.Module or a NeuronGraph, got "
                    f"{type(obj).__name__}")


def _flip_module(module: nn.Module, flip: SignFlip) -> nn.Module:
    layout = layout_of(module)
    if layout.neuron_layer_sizes != flip.sizes:
        raise ValueError(f"sign_flip: the flip has layer sizes {flip.sizes}, the network "
                         f"{layout.neuron_layer_sizes}")
    state = OrderedDict(module.state_dict())
    for layer in layout.weight_layers():
        key = f"{layer.name}.weight"
        weight = state[key]
        rows = flip[layer.index].to(weight)
        cols = flip[layer.index - 1].to(weight)
        kernels = weight.reshape(layer.out_neurons, layer.in_neurons, layer.positions)
        kernels = kernels * rows.view(-1, 1, 1) * cols.view(1, -1, 1)
        state[key] = kernels.reshape(weight.shape).clone()
        if layer.bias:
            state[f"{layer.name}.bias"] = state[f"{layer.name}.bias"] * rows
    flipped = copy.deepcopy(module)
    flipped.load_state_dict(state)
    return flipped


def node_signs(graph: Data, flip: SignFlip | list[SignFlip]) -> Tensor:
    """``[N]`` sign of every node of a graph or batch (one flip per graph, or one for all)."""
    sizes = graph_layer_sizes(graph)
    flips = [flip] * len(sizes) if isinstance(flip, SignFlip) else list(flip)
    if len(flips) != len(sizes):
        raise ValueError(f"sign flip: got {len(flips)} flips for {len(sizes)} graphs")
    batch = getattr(graph, "batch", None)
    if batch is None:
        batch = torch.zeros(graph.num_nodes, dtype=torch.long)
    signs = torch.empty(graph.num_nodes, dtype=torch.long)
    for b, (graph_sizes, f) in enumerate(zip(sizes, flips)):
        if f.sizes != graph_sizes:
            raise ValueError(f"sign flip: the flip has layer sizes {f.sizes}, the graph "
                             f"{graph_sizes}")
        nodes = (batch == b).nonzero().view(-1)
        layer, pos = graph.node_layer[nodes], graph.node_pos[nodes]
        table = torch.cat(f.layers)
        start = torch.tensor([0] + graph_sizes).cumsum(0)
        signs[nodes] = table[start[layer] + pos]
    return signs


def flip_features(graph: Data, x: Tensor | None, edge_attr: Tensor | None,
                  flip: SignFlip | list[SignFlip]) -> tuple[Tensor | None, Tensor | None]:
    """``(s_v x_v, s_u s_v h_{u->v})``: features moved by a sign flip."""
    signs = node_signs(graph, flip)
    src, dst = graph.edge_index
    if x is not None:
        x = x * signs.to(x).unsqueeze(-1)
    if edge_attr is not None:
        edge_attr = edge_attr * (signs[src] * signs[dst]).to(edge_attr).unsqueeze(-1)
    return x, edge_attr


@dataclass
class SignFlipReport:
    """Outcome of :func:`check_sign_flip_equivariance`; truthy when it passed."""

    max_error: float
    trials: int
    passed: bool
    kind: str
    atol: float

    def __bool__(self) -> bool:
        return self.passed


def check_sign_flip_equivariance(module: Callable, graph: Data, x: Tensor | None = None,
                                 edge_attr: Tensor | None = None,
                                 generator: torch.Generator | None = None, trials: int = 3,
                                 atol: float = 1e-6) -> SignFlipReport:
    """Check numerically ``f(s . u) == s . f(u)`` (or ``f(s . u) == f(u)`` for a
    tensor output) over random sign flips of all hidden neurons.

    ``module(x, edge_attr, graph)`` (or an operator's ``module(x, edge_index,
    edge_attr, index)``) returns ``(x_out, edge_out)`` (equivariance)
    or a tensor (invariance). Every hidden neuron is flipped at random,
    whatever the network's activations: the check is about the operator,
    not about which flips keep a network's function.
    """
    x = graph.x if x is None else x
    edge_attr = graph.edge_attr if edge_attr is None else edge_attr
    max_error, kind = 0.0, "equivariance"
    with torch.no_grad():
        reference = call_module(module, x, edge_attr, graph)
        for _ in range(trials):
            flips = [SignFlip([1 - 2 * torch.randint(0, 2, (n,), generator=generator)
                               if 0 < l < len(sizes) - 1 else torch.ones(n, dtype=torch.long)
                               for l, n in enumerate(sizes)])
                     for sizes in graph_layer_sizes(graph)]
            fx, fe = flip_features(graph, x, edge_attr, flips)
            out = call_module(module, fx, fe, graph)
            if isinstance(out, Tensor):
                kind = "invariance"
                error = (out - reference).abs().max()
            else:
                expected = flip_features(graph, reference[0], reference[1], flips)
                error = max((out[0] - expected[0]).abs().max(), (out[1] - expected[1]).abs().max())
            error = float(error)
            max_error = max(max_error, error if math.isfinite(error) else math.inf)
    return SignFlipReport(max_error, trials, math.isfinite(max_error) and max_error <= atol,
                          kind, atol)


def sign_flip_group():
    """``escnn.group.cyclic_group(2)``: the group acting on each neuron."""
    from escnn.group import cyclic_group
    return cyclic_group(2)


def signs_from_group_elements(elements: Sequence[Any]) -> Tensor:
    """Signs ``[n]`` of ``C_2`` elements through the sign representation
    (identity -> ``+1``, the rotation by pi -> ``-1``)."""
    group = sign_flip_group()
    sign = group.irrep(1)
    return torch.tensor([int(round(float(sign(g)[0, 0]))) for g in elements],
                        dtype=torch.long)
