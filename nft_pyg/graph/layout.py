"""The layout of a network: what a neuron graph needs to rebuild its module.

A :class:`Layout` is the ordered chain of steps the network applies
(weight layers, activations, norms, pooling, flatten, dropout), each a plain
JSON-serialisable ``dict``. It is stored on every :class:`NeuronGraph` as a
JSON string (``graph.layout``) so that it survives PyG batching, saving and
loading unchanged.

Step kinds and their keys (all steps have ``kind`` and ``name``, the module
path in the original network, used for state-dict names):

- ``linear``: ``in``, ``out``, ``bias``; ``positions`` (> 1 when the layer
  follows a ``Flatten`` of a feature map that kept ``positions`` spatial
  entries per channel).
- ``conv``: ``dim`` (1, 2, 3), ``in``, ``out``, ``bias``, ``kernel_size``,
  ``stride``, ``padding``, ``dilation``, ``padding_mode``.
- ``act``: ``act`` (an :class:`~nft_pyg.graph.types.Activation` name) and
  ``params`` (e.g. ``negative_slope``, ``w0``).
- ``batchnorm``: ``dim``, ``num_features``, ``eps``, ``momentum``,
  ``affine``, ``track_running_stats``, ``num_batches_tracked``.
- ``layernorm``: ``num_features``, ``eps``, ``affine``, ``bias``.
- ``pool``: ``type`` (the ``torch.nn`` class name) and ``args``.
- ``flatten``: ``start_dim``, ``end_dim``.
- ``dropout``: ``type`` and ``p``.
- ``conv`` may have ``groups`` (absent when 1): a grouped / depthwise conv.
- ``residual``: ``source``, the neuron layer whose output is added to the
  neurons of the current layer (a residual connection ``h + f(h)``).
"""
from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

WEIGHT_KINDS = ("linear", "conv")


def state_key(name: str, suffix: str) -> str:
    """State-dict key of a step's tensor (a root leaf module has the name '')."""
    return f"{name}.{suffix}" if name else suffix
NORM_KINDS = ("batchnorm", "layernorm")


@dataclass(frozen=True)
class WeightLayer:
    """One weight layer ``l`` (1-based) of a layout, as the graph sees it."""

    index: int
    name: str
    kind: str
    in_neurons: int
    out_neurons: int
    kernel_shape: tuple[int, ...]
    bias: bool
    groups: int = 1

    @property
    def weight_shape(self) -> tuple[int, ...]:
        """Shape of the layer's ``weight`` in its state dict."""
        if self.kind == "conv":
            return (self.out_neurons, self.in_neurons // self.groups, *self.kernel_shape)
        return (self.out_neurons, self.in_neurons * self.positions)

    @property
    def positions(self) -> int:
        """Number of weights an edge of this layer carries (``S_l``)."""
        return math.prod(self.kernel_shape)

    @property
    def num_edges(self) -> int:
        """One edge per (input, output) neuron pair of a group."""
        return self.out_neurons * (self.in_neurons // self.groups)


class Layout:
    """An ordered chain of network steps (see the module docstring)."""

    def __init__(self, steps: list[dict[str, Any]]):
        self.steps = [dict(step) for step in steps]
        self._check()

    # --- construction and serialisation -------------------------------
    @classmethod
    def coerce(cls, layout: Layout | str | list | None, where: str = "layout") -> Layout:
        """Accept a :class:`Layout`, its JSON string or its list of steps."""
        if isinstance(layout, Layout):
            return layout
        if isinstance(layout, str):
            try:
                return cls(json.loads(layout))
            except json.JSONDecodeError as err:
                raise ValueError(f"{where}: not a valid layout JSON string ({err})") from None
        if isinstance(layout, (list, tuple)):
            return cls(list(layout))
        raise TypeError(f"{where}: expected a Layout, its JSON string or a list of steps, "
                        f"got {type(layout).__name__}")

    def to_json(self) -> str:
        return json.dumps(self.steps, separators=(",", ":"), sort_keys=True)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Layout) and self.to_json() == other.to_json()

    def __hash__(self) -> int:
        return hash(self.to_json())

    def __repr__(self) -> str:
        sizes = "-".join(str(n) for n in self.neuron_layer_sizes)
        return f"Layout({sizes}, {len(self.steps)} steps)"

    def _check(self) -> None:
        if not any(step.get("kind") in WEIGHT_KINDS for step in self.steps):
            raise ValueError("layout: a network needs at least one Linear or Conv layer")
        previous = None
        for layer in self.weight_layers():
            if previous is not None and layer.in_neurons != previous.out_neurons:
                raise ValueError(
                    f"layout: layer '{layer.name}' takes {layer.in_neurons} input neurons but "
                    f"'{previous.name}' gives {previous.out_neurons}")
            previous = layer
        sizes = self.neuron_layer_sizes
        seen = set()
        for layer, step in self.steps_by_neuron_layer():
            if step.get("kind") != "residual":
                continue
            source = step.get("source")
            if not isinstance(source, int) or isinstance(source, bool) \
                    or not 0 <= source < layer:
                raise ValueError(f"layout: residual step '{step.get('name')}' on neuron layer "
                                 f"{layer} needs a source layer in 0..{layer - 1}, got {source!r}")
            if sizes[source] != sizes[layer]:
                raise ValueError(f"layout: residual step '{step.get('name')}' adds the "
                                 f"{sizes[source]} neurons of layer {source} to the "
                                 f"{sizes[layer]} neurons of layer {layer}")
            if (source, layer) in seen:
                raise ValueError(f"layout: residual step '{step.get('name')}' repeats the "
                                 f"connection from layer {source} to layer {layer}")
            seen.add((source, layer))

    # --- derived views -------------------------------------------------
    def weight_layers(self) -> list[WeightLayer]:
        layers = []
        for step in self.steps:
            if step["kind"] == "linear":
                positions = step.get("positions", 1)
                if step["in"] % positions:
                    raise ValueError(f"layout: layer '{step['name']}' has {step['in']} inputs, "
                                     f"not a multiple of its {positions} flatten positions")
                layers.append(WeightLayer(len(layers) + 1, step["name"], "linear",
                                          step["in"] // positions, step["out"],
                                          (positions,) if positions > 1 else (), step["bias"]))
            elif step["kind"] == "conv":
                groups = step.get("groups", 1)
                if not isinstance(groups, int) or groups < 1 or step["in"] % groups \
                        or step["out"] % groups:
                    raise ValueError(f"layout: conv '{step['name']}' has groups={groups!r}, "
                                     f"which must divide its {step['in']} inputs and "
                                     f"{step['out']} outputs")
                layers.append(WeightLayer(len(layers) + 1, step["name"], "conv", step["in"],
                                          step["out"], tuple(step["kernel_size"]), step["bias"],
                                          groups))
        return layers

    @property
    def num_layers(self) -> int:
        """``L``, the number of weight layers."""
        return len(self.weight_layers())

    @property
    def neuron_layer_sizes(self) -> list[int]:
        """``[n_0, ..., n_L]``: input neurons, then each weight layer's outputs."""
        layers = self.weight_layers()
        return [layers[0].in_neurons] + [layer.out_neurons for layer in layers]

    @property
    def kernel_width(self) -> int:
        """``max_l S_l``: the width of a raw graph's ``edge_attr``."""
        return max(layer.positions for layer in self.weight_layers())

    def steps_by_neuron_layer(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """Yield ``(l, step)``: the neuron layer each step acts on.

        A non-weight step acts on the neurons produced by the last weight
        layer before it (layer 0, the inputs, before the first one).
        """
        layer = 0
        for step in self.steps:
            if step["kind"] in WEIGHT_KINDS:
                layer += 1
            yield layer, step

    @property
    def signature(self) -> tuple:
        """What the tensor formulation sees: each weight layer's kind, shape, bias."""
        return tuple((layer.kind, layer.weight_shape, layer.kernel_shape, layer.bias)
                     for layer in self.weight_layers()) + tuple(self.residuals())

    def residuals(self) -> list[tuple[int, int]]:
        """``(source, target)`` neuron layers of each residual connection, in step order."""
        return [(step["source"], layer) for layer, step in self.steps_by_neuron_layer()
                if step["kind"] == "residual"]

    @property
    def has_norms(self) -> bool:
        return any(step["kind"] in NORM_KINDS for step in self.steps)
