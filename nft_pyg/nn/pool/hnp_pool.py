r"""The HNP invariant pool: the mean of the features over each HNP type
(the typing lives in :mod:`nft_pyg.nn.summaries`, shared with :class:`HNPConv`)."""
from __future__ import annotations

from torch import Tensor, nn

from ...tensor.hnp_dense import hnp_num_types, hnp_pool_dense
from ...tensor.weight_space import WeightSpace
from ..structure import WeightGraphIndex, check_features
from ..summaries import check_hnp, hnp_summary


class HNPPool(nn.Module):
    r"""Invariant readout of the HNP neural functional: layer means, with the
    input and output neurons kept by position.

    From "Permutation Equivariant Neural Functionals" (Zhou et al., NeurIPS
    2023, arXiv 2302.14040), the invariant pooling of the HNP NFN (only
    hidden neurons permutable, as in DWSNets, Navon et al., ICML 2023). For
    ``L >= 2`` weight layers with :math:`n_0` inputs and :math:`n_L` outputs,

    .. math::
        \mathbf{g} = \Big[\big(\tfrac{1}{n_1}\textstyle\sum_i W_1[i, q]\big)_{q < n_0},\
        \big(\tfrac{1}{n_l n_{l-1}}\sum_{i,j} W_l[i, j]\big)_{1<l<L},\
        \big(\tfrac{1}{n_{L-1}}\sum_j W_L[p, j]\big)_{p < n_L},\
        \big(\tfrac{1}{n_l}\sum_i b_l[i]\big)_{1 \le l < L},\
        \big(b_L[p]\big)_{p < n_L}\Big]
        \in \mathbb{R}^{G C},

    with :math:`G = n_0 + 2 n_L + 2L - 3`. In graph form these are the
    out-edge means of the input neurons, the edge means of the hidden weight
    layers, the in-edge means of the output neurons, the node means of the
    hidden neuron layers and the output neurons' own features. For
    ``L = 1`` nothing is permutable and :math:`\mathbf{g}` is all of
    :math:`W_1` (row-major) and :math:`b_1`, :math:`G = n_1 n_0 + n_1`.
    Entry ``t * C + c`` is channel ``c`` of type ``t``.

    Residual networks are refused (a chain of weight layers only): the
    :class:`~nft_pyg.nn.WeightGraphIndex` names their first residual edge.

    Args:
        channels (int): feature channels ``C``.
        num_layers (int): weight layers ``L`` of every graph.
        num_inputs (int): input neurons :math:`n_0`.
        num_outputs (int): output neurons :math:`n_L`.

    Shapes:
        - **input:** node features :math:`(|\mathcal{V}|, C)`, edge features
          :math:`(|\mathcal{E}|, C)`, the index of the batch
        - **output:** :math:`(B, G C)`
    """

    def __init__(self, channels: int, num_layers: int, num_inputs: int, num_outputs: int):
        super().__init__()
        for name, value in (("channels", channels), ("num_layers", num_layers),
                            ("num_inputs", num_inputs), ("num_outputs", num_outputs)):
            if value < 1:
                raise ValueError(f"HNPPool: {name} must be >= 1, got {value}")
        self.channels = channels
        self.num_layers = num_layers
        self.num_inputs = num_inputs
        self.num_outputs = num_outputs
        self.num_types = sum(hnp_num_types(num_layers, num_inputs, num_outputs))

    @property
    def out_channels(self) -> int:
        """``G * C``: size of the pooled vector."""
        return self.num_types * self.channels

    def reset_parameters(self) -> None:
        """No parameters."""

    def forward(self, x: Tensor, edge_attr: Tensor, index: WeightGraphIndex) -> Tensor:
        """``[B, G C]``; ``index``: a :class:`~nft_pyg.nn.structure.WeightGraphIndex`
        (or the batch to build one from)."""
        index = WeightGraphIndex.coerce(index, "HNPPool")
        check_features("HNPPool", x, edge_attr, index, self.channels)
        typing = check_hnp("HNPPool", index, self.num_layers, self.num_inputs,
                           self.num_outputs)
        return hnp_summary(x, edge_attr, index, typing).flatten(1)

    def forward_dense(self, ws: WeightSpace) -> Tensor:
        """The same readout on a folded :class:`WeightSpace`: ``[B, G C]``."""
        return hnp_pool_dense(ws, self.channels, self.num_layers, self.num_inputs,
                              self.num_outputs, type(self).__name__)

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.channels}, num_layers={self.num_layers}, "
                f"num_inputs={self.num_inputs}, num_outputs={self.num_outputs})")
