r"""Dense twin of the pointwise ablation layer of NFN (Zhou et al., arXiv 2302.14040).

On a *folded* :class:`~nft_pyg.tensor.WeightSpace` (``weights[l-1]``
``[B, C, n_l, n_{l-1}]``, ``biases[l-1]`` ``[B, C, n_l]``), with einsums
only; :class:`~nft_pyg.nn.conv.pointwise_conv.PointwiseConv` must agree.
"""
from __future__ import annotations

import torch

from .np_dense import check_folded
from .weight_space import WeightSpace


def pointwise_layer_dense(conv, ws: WeightSpace) -> WeightSpace:
    r""":math:`W'_l = A_l W_l + a_l`, :math:`b'_l = E_l b_l + e_l`, the
    matrices of ``conv`` (a :class:`PointwiseConv`) acting on channels."""
    check_folded(ws, conv.in_channels, conv.num_layers, type(conv).__name__)
    weights, biases = [], []
    for i, (w, b) in enumerate(zip(ws.weights, ws.biases)):
        weight = torch.einsum("bcij,co->boij", w, conv.edge_weight[i])
        bias = torch.einsum("bci,co->boi", b, conv.node_weight[i])
        if conv.edge_bias is not None:
            weight = weight + conv.edge_bias[i][None, :, None, None]
            bias = bias + conv.node_bias[i][None, :, None]
        weights.append(weight)
        biases.append(bias)
    return WeightSpace(weights, biases, ws.layout)
