"""Neuron graphs as networkx graphs, and type-preserving isomorphism.

Two networks are the same up to neuron permutation exactly when their
neuron graphs are isomorphic by a map that keeps every neuron in its layer
with its role and activation, keeps input and output neurons at their
positions (they are not permutable), and keeps every weight in its layer
and kind. :func:`is_type_preserving_isomorphic` decides this with
networkx's VF2 matcher; it is an independent check of
:func:`~nft_pyg.symmetry.permute` (and, with ``check_features=False``, of
architecture equality up to hidden-neuron order).
"""
from __future__ import annotations

from typing import Any

import networkx as nx
import torch
from torch_geometric.data import Data
from torch_geometric.utils import to_networkx as _pyg_to_networkx

from ..graph.types import NodeRole

#: node attributes that type a neuron (``io_pos``: position of an input /
#: output neuron, -1 for hidden neurons, which are permutable)
NODE_TYPES = ("node_layer", "node_role", "io_pos", "node_act")
NODE_FEATURES = ("x", "node_norm")
EDGE_TYPES = ("edge_layer", "edge_kind")
EDGE_FEATURES = ("edge_attr",)


def to_networkx(graph: Data) -> nx.DiGraph:
    """A ``networkx.DiGraph`` of a neuron graph (or a batch, as one disjoint union).

    Nodes keep ``node_layer``, ``node_role``, ``node_act``, ``io_pos``
    (``node_pos`` of input and output neurons, -1 for hidden ones), and the
    features ``x`` and ``node_norm`` (as lists); edges keep ``edge_layer``,
    ``edge_kind`` and ``edge_attr``. Attributes the graph lacks are skipped.
    """
    for key in ("edge_index", "node_layer", "node_role", "node_pos"):
        if getattr(graph, key, None) is None:
            raise ValueError(f"to_networkx: the graph has no {key}; build it with "
                             "nft_pyg.from_module")
    hidden = graph.node_role == int(NodeRole.HIDDEN)
    plain = Data(edge_index=graph.edge_index, num_nodes=graph.num_nodes,
                 io_pos=torch.where(hidden, torch.full_like(graph.node_pos, -1),
                                    graph.node_pos))
    node_attrs, edge_attrs = ["io_pos"], []
    for key in ("node_layer", "node_role", "node_act", *NODE_FEATURES):
        if getattr(graph, key, None) is not None:
            plain[key] = graph[key]
            node_attrs.append(key)
    for key in (*EDGE_TYPES, *EDGE_FEATURES):
        if getattr(graph, key, None) is not None:
            plain[key] = graph[key]
            edge_attrs.append(key)
    return _pyg_to_networkx(plain, node_attrs=node_attrs, edge_attrs=edge_attrs)


def _matcher(keys: tuple[str, ...]):
    def match(a: dict[str, Any], b: dict[str, Any]) -> bool:
        return all(a.get(key) == b.get(key) for key in keys)
    return match


def is_type_preserving_isomorphic(g1: Data, g2: Data, check_features: bool = True) -> bool:
    """Whether two neuron graphs are the same network up to hidden-neuron order.

    Args:
        g1, g2 (NeuronGraph): the graphs (raw or with features).
        check_features (bool): also require equal node features (``x``,
            ``node_norm``) and edge features (``edge_attr``), compared exactly.
            With ``False`` only the typed structure is compared.
    """
    n1, n2 = to_networkx(g1), to_networkx(g2)
    if n1.number_of_nodes() != n2.number_of_nodes() or \
            n1.number_of_edges() != n2.number_of_edges():
        return False
    node_keys = NODE_TYPES + (NODE_FEATURES if check_features else ())
    edge_keys = EDGE_TYPES + (EDGE_FEATURES if check_features else ())
    matcher = nx.algorithms.isomorphism.DiGraphMatcher(
        n1, n2, node_match=_matcher(node_keys), edge_match=_matcher(edge_keys))
    return matcher.is_isomorphic()
