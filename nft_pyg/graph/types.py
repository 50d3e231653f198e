"""Integer codes of the typed vectors stored on a :class:`NeuronGraph`.

The codes are part of the graph format (``docs/graph_format.md``): they are
stored in saved datasets, so a code is never renumbered, only appended.
"""
from enum import IntEnum


class NodeRole(IntEnum):
    """``node_role``: where a neuron sits in the network."""

    INPUT = 0
    HIDDEN = 1
    OUTPUT = 2


class Activation(IntEnum):
    """``node_act``: the non-linearity applied after a neuron."""

    IDENTITY = 0
    RELU = 1
    LEAKY_RELU = 2
    GELU = 3
    SILU = 4
    TANH = 5
    SIGMOID = 6
    ELU = 7
    SINE = 8


class EdgeKind(IntEnum):
    """``edge_kind``: which kind of weight an edge carries.

    ``LINEAR``: one scalar of a ``Linear`` weight (one kernel position).
    ``CONV``: the kernel of one (input channel, output channel) pair.
    ``FLATTEN``: the ``H*W`` weights joining one channel of a flattened
    feature map to one neuron of the following ``Linear``.
    ``RESIDUAL``: a residual connection from neuron ``p`` of an earlier layer
    to neuron ``p`` of a later one; it carries no parameter (raw feature: 1
    at kernel position 0, zeros after).
    """

    LINEAR = 0
    CONV = 1
    FLATTEN = 2
    RESIDUAL = 3
