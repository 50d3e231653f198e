"""The neuron graph: a network as a PyG ``Data`` of neurons and weights."""
from __future__ import annotations

import threading
from typing import Any

from torch import Tensor
from torch_geometric.data import Data

from .layout import Layout

#: per-node integer vectors (never shifted by batching)
NODE_IDS = ("node_layer", "node_role", "node_pos", "node_act")
#: per-edge integer vectors (never shifted by batching)
EDGE_IDS = ("edge_layer", "edge_kind")
#: default per-neuron normalisation parameters (weight, bias, running mean, running var)
NORM_IDENTITY = (1.0, 0.0, 0.0, 1.0)


#: the kernel width of the first graph of the collation in progress (this thread)
_FIRST_EDGE_WIDTH = threading.local()


def _edge_width(graph: Any, value: Any) -> int | None:
    """The ``kernel_width`` of a graph with 2-d edge features, or None."""
    width = getattr(graph, "kernel_width", None)
    if not isinstance(width, Tensor) or width.numel() != 1 or not isinstance(value, Tensor) \
            or value.dim() != 2:
        return None
    return int(width)


class NeuronGraph(Data):
    r"""A neural network as a graph of neurons (nodes) and weights (edges).

    See ``docs/graph_format.md`` for the full format. In short, with ``N``
    neurons, ``E`` weights (one edge per input-output neuron pair of a weight
    layer) and ``S`` the graph's kernel width:

    - ``x`` ``[N, C]``: neuron features; in a raw graph ``C = 1`` and the
      feature is the bias (0 for input neurons and bias-free layers).
    - ``edge_index`` ``[2, E]``: source neuron (layer ``l-1``) to target
      neuron (layer ``l``).
    - ``edge_attr`` ``[E, C * S]``: weight features, channel-major; in a raw
      graph ``C = 1`` and the ``S`` entries are the edge's kernel (zero
      padded past the layer's own kernel size).
    - ``node_layer``, ``node_role``, ``node_pos``, ``node_act`` ``[N]`` and
      ``edge_layer``, ``edge_kind`` ``[E]``: typed ids (``torch.long``).
    - ``node_norm`` ``[N, 4]``: per-neuron normalisation parameters.
    - ``kernel_width`` ``[1]`` and ``layout`` (a JSON string): graph level.

    None of the id names contains ``index`` or ``batch``, so PyG batching
    keeps them unshifted; ``edge_index`` is shifted as usual.
    """

    def __cat_dim__(self, key: str, value: Any, *args, **kwargs) -> Any:
        if key == "edge_attr":  # PyG's collate asks the first graph, then each __inc__
            _FIRST_EDGE_WIDTH.value = _edge_width(self, value)
        return super().__cat_dim__(key, value, *args, **kwargs)

    def __inc__(self, key: str, value: Any, *args, **kwargs) -> Any:
        if key in NODE_IDS or key in EDGE_IDS or key == "kernel_width":
            return 0
        if key == "edge_attr":
            first, mine = getattr(_FIRST_EDGE_WIDTH, "value", None), _edge_width(self, value)
            if first is not None and mine is not None and first != mine:
                _FIRST_EDGE_WIDTH.value = None
                raise ValueError(
                    f"graphs of kernel widths {min(first, mine)} and {max(first, mine)} "
                    "cannot be batched as they are: use nft_pyg.GraphLoader (or "
                    "collate_graphs), which pads each batch to its widest kernel, or pad every "
                    "graph to the widest kernel of your data first with "
                    f"nft_pyg.transforms.PadKernels(width) (width >= {max(first, mine)}), e.g. "
                    "as the dataset's transform")
        return super().__inc__(key, value, *args, **kwargs)

    @property
    def layout_obj(self) -> Layout:
        """The parsed :class:`Layout` of a single (unbatched) graph."""
        layout = self.layout
        if isinstance(layout, (list, tuple)):
            raise ValueError("layout_obj: this is a batch of graphs; use "
                             "to_data_list() and read each graph's layout")
        return Layout.coerce(layout, "graph.layout")

    @property
    def num_weight_layers(self) -> int:
        """``L``: the largest ``edge_layer`` (the deepest network in a batch)."""
        return int(self.edge_layer.max()) if self.edge_layer.numel() else 0

    @property
    def channels(self) -> int:
        """``C``: feature channels per kernel position."""
        width = int(self.kernel_width.reshape(-1)[0])
        return self.edge_attr.size(-1) // width
