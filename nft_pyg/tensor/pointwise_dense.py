r"""Dense twin of the pointwise ablation layer of NFN (Zhou et al., arXiv 2302.14040).

On a *folded* :class:`~nft_pyg.tensor.WeightSpace` (``weights[l-1]``
``[B, C, n_l, n_{l-1}]``, ``biases[l-1]`` ``[B, C, n_l]``), with einsums
only; :class:`~nft_pyg.nn.conv.pointwise_conv.PointwiseConv` must agree.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .np_dense import check_folded
from .weight_space import WeightSpace


def pointwise_layer_dense(ws: WeightSpace, edge_weight: Tensor, node_weight: Tensor,
                          edge_bias: Tensor | None = None, node_bias: Tensor | None = None,
                          where: str = "PointwiseConv") -> WeightSpace:
    r""":math:`W'_l = A_l W_l + a_l`, :math:`b'_l = E_l b_l + e_l`: ``edge_weight`` /
    ``node_weight`` ``[L, C, C']`` (:math:`A, E`) and the biases ``[L, C']``
    (:math:`a, e`) acting on channels."""
    check_folded(ws, edge_weight.size(1), edge_weight.size(0), where)
    weights, biases = [], []
    for i, (w, b) in enumerate(zip(ws.weights, ws.biases)):
        weight = torch.einsum("bcij,co->boij", w, edge_weight[i])
        bias = torch.einsum("bci,co->boi", b, node_weight[i])
        if edge_bias is not None:
            weight = weight + edge_bias[i][None, :, None, None]
            bias = bias + node_bias[i][None, :, None]
        weights.append(weight)
        biases.append(bias)
    return WeightSpace(weights, biases, ws.layout)
