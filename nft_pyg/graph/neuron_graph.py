"""The neuron graph: a network as a PyG ``Data`` of neurons and weights."""
from __future__ import annotations

import weakref
from typing import Any

from torch_geometric.data import Data

from .layout import Layout

#: per-node integer vectors (never shifted by batching)
NODE_IDS = ("node_layer", "node_role", "node_pos", "node_act")
#: per-edge integer vectors (never shifted by batching)
EDGE_IDS = ("edge_layer", "edge_kind")
#: default per-neuron normalisation parameters (weight, bias, running mean, running var)
NORM_IDENTITY = (1.0, 0.0, 0.0, 1.0)


def _blank_state(cls: type) -> "tuple[dict[str, Any], type] | bool":
    """What ``cls()`` puts in a fresh graph's ``__dict__`` besides its store,
    and the store class; ``False`` unless the graph holds exactly a store
    with an empty ``_mapping`` and a weak ``_parent`` (PyG 2.x)."""
    graph = cls()
    state = dict(graph.__dict__)
    store = state.pop("_store", None)
    if cls.__new__ is not object.__new__ or store is None \
            or set(store.__dict__) != {"_mapping", "_parent"} or store.__dict__["_mapping"] \
            or store.__dict__["_parent"]() is not graph or list(graph.__dict__)[-1] != "_store" \
            or type(store).__new__ is not object.__new__:
        return False
    return state, type(store)


#: graph class -> its blank state (see _blank_state)
_BLANKS: dict[type, Any] = {}


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

    def __inc__(self, key: str, value: Any, *args, **kwargs) -> Any:
        if key in NODE_IDS or key in EDGE_IDS or key == "kernel_width":
            return 0
        return super().__inc__(key, value, *args, **kwargs)

    @classmethod
    def from_attributes(cls, **attributes: Any) -> "NeuronGraph":
        """A graph holding ``attributes`` (``None`` values skipped), built fast.

        Equivalent to ``NeuronGraph(**attributes)`` but fills PyG's attribute
        store directly: ``Data.__setattr__`` costs ~15 us per attribute (a
        cache lookup that raises internally), more than the rest of
        :func:`~nft_pyg.from_module` on a small network; and ``Data.__init__``
        is replaced by a copy of what it sets up (checked once per class
        against a graph built the normal way). No checks are done.
        """
        mapping = {key: value for key, value in attributes.items() if value is not None}
        blank = _BLANKS.get(cls)
        if blank is None:
            blank = _BLANKS[cls] = _blank_state(cls)
        if blank is False:  # not the PyG storage layout we know
            return cls(**mapping)
        graph_state, store_cls = blank
        graph = cls.__new__(cls)
        store = store_cls.__new__(store_cls)
        store.__dict__["_mapping"] = mapping
        store.__dict__["_parent"] = weakref.ref(graph)
        graph.__dict__.update(graph_state)
        graph.__dict__["_store"] = store
        return graph

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
