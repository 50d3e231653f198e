"""What every reader of a neuron graph asks, for a graph and a batch alike:
the graph of each node and which nodes are input (output) neurons.

``is_input_neuron`` is the project's one definition of the input-neuron mask:
``nft_pyg.nn``'s ``WeightGraphIndex.is_input`` is built from it once per
batch, and modules that get a graph instead of an index call it."""
from __future__ import annotations

import torch
from torch import Tensor

from .types import NodeRole


def batch_vector(graph, num_nodes: int | None = None,
                 device: torch.device | str | None = None) -> Tensor:
    """``[N]`` graph id of each node: ``graph.batch`` for a batch, zeros for
    a single graph (``num_nodes`` and ``device`` default to the graph's)."""
    batch = getattr(graph, "batch", None)
    if batch is not None:
        return batch
    if num_nodes is None:
        num_nodes = graph.num_nodes
    if device is None:
        device = graph.node_layer.device
    return torch.zeros(num_nodes, dtype=torch.long, device=device)


def is_input_neuron(graph) -> Tensor:
    """``[N]`` bool: the input neurons, which carry no parameters (no bias;
    ``node_role == NodeRole.INPUT``, the nodes of neuron layer 0)."""
    return graph.node_role == int(NodeRole.INPUT)


def is_output_neuron(graph) -> Tensor:
    """``[N]`` bool: the output neurons (``node_role == NodeRole.OUTPUT``, the
    nodes of a network's last neuron layer)."""
    return graph.node_role == int(NodeRole.OUTPUT)
