"""Field permutations of escnn networks.

A field graph (:func:`nft_pyg.graph.escnn.from_escnn` with ``view="field"``)
has one node per field; exchanging hidden fields of the same type, with all
their channels, keeps the network's function and its equivariance. See
``docs/escnn.md``.
"""
from __future__ import annotations

import torch

from ..graph.escnn import field_layout_of, field_offsets, neuron_fields
from ..graph.neuron_graph import NeuronGraph
from .permutation import NeuronPermutation


def random_field_permutation(graph: NeuronGraph, generator: torch.Generator | None = None
                             ) -> NeuronPermutation:
    """A random permutation of the hidden fields of a single field graph that
    only exchanges fields of the same type (it keeps the network's function)."""
    field_layout_of(graph)  # a clear error for channel graphs
    layers = []
    depth = int(graph.node_layer.max())
    for l in range(depth + 1):
        nodes = (graph.node_layer == l).nonzero().view(-1)
        nodes = nodes[torch.argsort(graph.node_pos[nodes])]
        perm = torch.arange(nodes.numel())
        if 0 < l < depth:
            types = graph.node_field_type[nodes]
            for t in types.unique():
                slots = (types == t).nonzero().view(-1)
                perm[slots] = slots[torch.randperm(slots.numel(), generator=generator)]
        layers.append(perm)
    return NeuronPermutation(layers)


def field_to_channel_permutation(graph: NeuronGraph, perm: NeuronPermutation
                                 ) -> NeuronPermutation:
    """The channel permutation of the exported network that moves whole fields
    as ``perm`` moves the nodes of the field graph ``graph``."""
    layout = field_layout_of(graph)
    fields = neuron_fields(layout["layers"])
    if [len(f) for f in fields] != perm.sizes:
        raise ValueError(f"field_to_channel_permutation: the permutation has layer sizes "
                         f"{perm.sizes}, the graph {[len(f) for f in fields]} fields")
    channels = []
    for layer_fields, p in zip(fields, perm.layers):
        start = field_offsets([size for _, size in layer_fields])
        channels.append(torch.cat([torch.arange(start[f], start[f + 1]) for f in p.tolist()]))
    return NeuronPermutation(channels)
