r"""The NP invariant pool: per-layer means of the weights and biases."""
from __future__ import annotations

from torch import Tensor, nn

from ...tensor.np_dense import np_pool_dense
from ...tensor.weight_space import WeightSpace
from ..structure import WeightGraphIndex, layer_inputs
from ..summaries import np_summary


class NPPool(nn.Module):
    r"""Invariant readout of the NP neural functional: the mean of every weight
    layer and of every bias layer.

    From "Permutation Equivariant Neural Functionals" (Zhou et al., NeurIPS
    2023, arXiv 2302.14040), the invariant pooling of the NP (all neurons
    permutable) NFN: for a graph with weight layers :math:`l = 1..L`,

    .. math::
        \mathbf{g} = \Big[\tfrac{1}{|\mathcal{E}_1|}\textstyle\sum_{e \in \mathcal{E}_1}
        \mathbf{h}_e, \ldots, \tfrac{1}{|\mathcal{E}_L|}\sum_{e \in \mathcal{E}_L}
        \mathbf{h}_e,\ \tfrac{1}{|\mathcal{V}_1|}\sum_{v \in \mathcal{V}_1}
        \mathbf{x}_v, \ldots, \tfrac{1}{|\mathcal{V}_L|}\sum_{v \in \mathcal{V}_L}
        \mathbf{x}_v\Big] \in \mathbb{R}^{2 L C},

    with :math:`\mathcal{E}_l` the edges of weight layer :math:`l` and
    :math:`\mathcal{V}_l` the neurons of neuron layer :math:`l` (input
    neurons carry no parameters and are left out). Entry
    ``(k * L + l - 1) * C + c`` is channel ``c`` of layer ``l``'s edge
    (``k = 0``) or node (``k = 1``) mean. A graph with fewer than ``L``
    layers gets zeros for the missing ones. Every term is a mean over a
    whole layer, so :math:`\mathbf{g}` is invariant to any relabelling of
    neurons, input and output neurons included.

    Residual networks are refused (a chain of weight layers only): the
    :class:`~nft_pyg.nn.WeightGraphIndex` names their first residual edge.

    Args:
        channels (int): :math:`C`, feature channels of ``x`` and ``edge_attr``.
        num_layers (int): :math:`L`, the most weight layers a graph may have.

    Shapes:
        - **input:** node features :math:`(N, C)`, edge features
          :math:`(E, C)`, the index of the batch (:class:`~nft_pyg.nn.structure.WeightGraphIndex`).
        - **output:** :math:`(B, 2 L C)`.
    """

    def __init__(self, channels: int, num_layers: int):
        super().__init__()
        if channels < 1 or num_layers < 1:
            raise ValueError(f"NPPool: channels and num_layers must be >= 1, got "
                             f"{channels} and {num_layers}")
        self.channels, self.num_layers = int(channels), int(num_layers)

    @property
    def out_channels(self) -> int:
        return 2 * self.num_layers * self.channels

    def reset_parameters(self) -> None:
        pass

    def forward(self, x: Tensor, edge_attr: Tensor, index: WeightGraphIndex) -> Tensor:
        """``[B, 2 L C]``; ``index``: a :class:`~nft_pyg.nn.structure.WeightGraphIndex`
        (or the batch to build one from)."""
        index = layer_inputs("NPPool", x, edge_attr, index, self.channels, self.num_layers)
        return np_summary(x, edge_attr, index, self.num_layers).reshape(index.num_graphs, -1)

    def forward_dense(self, ws: WeightSpace) -> Tensor:
        return np_pool_dense(ws, self.num_layers, self.channels, "NPPool")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.channels}, num_layers={self.num_layers})"
