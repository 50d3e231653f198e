r"""Dense twins of the HNP layer and the HNP pool (Zhou et al., arXiv 2302.14040).

Written on a *folded* :class:`~nft_pyg.tensor.WeightSpace` (``weights[l-1]``
``[B, C, n_l, n_{l-1}]``, ``biases[l-1]`` ``[B, C, n_l]``; kernel positions
moved into channels by :meth:`WeightSpace.fold_kernels`) with einsums and
means over tensor dimensions only: no scatter, no graph. The graph operators
:class:`~nft_pyg.nn.conv.hnp_conv.HNPConv` and
:class:`~nft_pyg.nn.pool.hnp_pool.HNPPool` must agree with these functions;
see :class:`HNPConv` for the term list. The operators hand their parameters
over explicitly (:class:`HNPWeights`): this module knows nothing of them.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .weight_space import WeightSpace, masked_mean, require_folded


def hnp_num_types(num_layers: int, num_inputs: int, num_outputs: int) -> tuple[int, int]:
    """``(T_E, T_N)``: number of weight and bias types (see ``HNPPool``)."""
    if num_layers == 1:
        return num_outputs * num_inputs, num_outputs
    return num_inputs + num_layers - 2 + num_outputs, num_layers - 1 + num_outputs


def check_hnp_folded(ws: WeightSpace, channels: int, num_layers: int, num_inputs: int,
                     num_outputs: int, where: str) -> None:
    """Raise a ``ValueError`` naming ``where`` if ``ws`` does not fit the operator."""
    require_folded(ws, where)
    sizes = ws.neuron_layer_sizes
    for name, found, expected in (("channels", ws.channels, channels),
                                  ("num_layers", ws.num_layers, num_layers),
                                  ("num_inputs", sizes[0], num_inputs),
                                  ("num_outputs", sizes[-1], num_outputs)):
        if found != expected:
            raise ValueError(f"{where}.forward_dense: expected {name}={expected}, "
                             f"the weight space has {found}")


def _masked(weights: list[Tensor], mask: list[Tensor] | None) -> list[Tensor]:
    """The weights with absent entries zeroed (``mask[l]`` ``[B, n_l, n_{l-1}]``)."""
    if mask is None:
        return list(weights)
    return [w * m.unsqueeze(1).to(w.dtype) for w, m in zip(weights, mask)]


def hnp_summary_dense(ws: WeightSpace, mask: list[Tensor] | None = None) -> Tensor:
    r"""``[B, G, C]``: the mean of every HNP type (the order of ``HNPPool``).

    With ``mask`` (per weight layer ``[B, n_l, n_{l-1}]``, true where the
    weight exists: a pruned graph) means run over the present weights only,
    as on the graph."""
    weights, biases = _masked(ws.weights, mask), ws.biases
    masks = mask if mask is not None else [None] * len(weights)
    if ws.num_layers == 1:
        return torch.cat([weights[0].permute(0, 2, 3, 1).flatten(1, 2),
                          biases[0].transpose(1, 2)], dim=1)
    parts = [masked_mean(weights[0], masks[0], 2).transpose(1, 2)]               # W_1 columns
    parts += [masked_mean(w, m, (2, 3)).unsqueeze(1)                               # hidden W_l
              for w, m in zip(weights[1:-1], masks[1:-1])]
    parts += [masked_mean(weights[-1], masks[-1], 3).transpose(1, 2)]             # W_L rows
    parts += [b.mean(dim=2).unsqueeze(1) for b in biases[:-1]]             # hidden b_l
    parts += [biases[-1].transpose(1, 2)]                                   # b_L
    return torch.cat(parts, dim=1)


def hnp_pool_dense(ws: WeightSpace, channels: int, num_layers: int, num_inputs: int,
                   num_outputs: int, where: str = "HNPPool") -> Tensor:
    """Dense twin of ``HNPPool``: ``[B, G C]``."""
    check_hnp_folded(ws, channels, num_layers, num_inputs, num_outputs, where)
    return hnp_summary_dense(ws).flatten(1)


def hidden_summary_dense(ws: WeightSpace, layer: int,
                         mask: list[Tensor] | None = None) -> Tensor:
    r"""``[B, n_h, (i_h + 1 + o_h) C]``: the summary :math:`s(v)` of every
    neuron of hidden layer ``h``: its in-edges (all of them by input position
    if ``h = 1``, else their mean), its own feature, its out-edges (all of
    them by output position if ``h = L - 1``, else their mean). With ``mask``
    (see :func:`hnp_summary_dense`) absent weights are zero and means run over
    the present ones."""
    weights, bias = _masked(ws.weights, mask), ws.biases[layer - 1]
    masks = mask if mask is not None else [None] * len(weights)
    into, out_of = weights[layer - 1], weights[layer]       # [B, C, n_h, .], [B, C, ., n_h]
    if layer == 1:
        incoming = into.permute(0, 2, 3, 1).flatten(2)       # [B, n_1, n_0 C]
    else:
        incoming = masked_mean(into, masks[layer - 1], 3).transpose(1, 2)
    if layer == ws.num_layers - 1:
        outgoing = out_of.permute(0, 3, 2, 1).flatten(2)     # [B, n_(L-1), n_L C]
    else:
        outgoing = masked_mean(out_of, masks[layer], 2).transpose(1, 2)
    return torch.cat([incoming, bias.transpose(1, 2), outgoing], dim=2)


@dataclass
class HNPWeights:
    """The parameters of an HNP layer, as the dense twin reads them: the sizes it
    is typed by and one ``[out, in]`` matrix per map (see ``HNPConv``).

    ``global_weight`` ``[G C', G C]`` / ``global_bias`` ``[G C']`` or ``None``;
    ``node_maps[h - 1]`` (:math:`E_h`, hidden layers ``h = 1..L-1``);
    ``pointwise[l - 2]``, ``src_maps[l - 2]``, ``dst_maps[l - 2]``
    (:math:`A_l, B_l, C_l`, hidden weight layers ``l = 2..L-1``); ``first_edge``
    ``[n_0 C', .]`` / ``last_edge`` ``[n_L C', .]`` (``None`` for ``L = 1``).
    """

    in_channels: int
    out_channels: int
    num_layers: int
    num_inputs: int
    num_outputs: int
    global_weight: Tensor
    global_bias: Tensor | None
    node_maps: list[Tensor]
    pointwise: list[Tensor]
    src_maps: list[Tensor]
    dst_maps: list[Tensor]
    first_edge: Tensor | None
    last_edge: Tensor | None


def _linear(weight: Tensor, features: Tensor, bias: Tensor | None = None) -> Tensor:
    out = torch.einsum("...i,oi->...o", features, weight)
    return out if bias is None else out + bias


def hnp_layer_dense(params: HNPWeights, ws: WeightSpace, mask: list[Tensor] | None = None,
                    where: str = "HNPConv") -> WeightSpace:
    """Dense twin of ``HNPConv``: the same map with the parameters ``params``.

    ``mask`` (per weight layer ``[B, n_l, n_{l-1}]``, true where the weight
    exists) makes it the twin of ``HNPConv`` on a pruned graph: absent weights
    are absent from every mean (as missing edges on the graph) and get a zero
    output."""
    L, n_in = params.num_layers, params.num_inputs
    check_hnp_folded(ws, params.in_channels, L, n_in, params.num_outputs, where)
    batch, d = ws.batch_size, params.out_channels
    num_edge_types, _ = hnp_num_types(L, n_in, params.num_outputs)
    glob = _linear(params.global_weight, hnp_summary_dense(ws, mask).flatten(1),
                   params.global_bias).view(batch, -1, d)
    glob = glob.transpose(1, 2)                                           # [B, d, G]
    weight_glob, bias_glob = glob[:, :, :num_edge_types], glob[:, :, num_edge_types:]
    sizes = ws.neuron_layer_sizes
    if L == 1:
        return WeightSpace(_masked([weight_glob.reshape(batch, d, sizes[1], n_in)], mask),
                           [bias_glob], ws.layout)

    summaries = {h: hidden_summary_dense(ws, h, mask) for h in range(1, L)}
    # W_1: the map from s(v) of the row's hidden neuron, typed by the input column
    first = _linear(params.first_edge, summaries[1]).view(batch, sizes[1], n_in, d)
    weights = [first.permute(0, 3, 1, 2) + weight_glob[:, :, None, :n_in]]
    for layer in range(2, L):
        w = ws.weights[layer - 1] if mask is None else _masked(ws.weights, mask)[layer - 1]
        k = layer - 2
        from_weight = torch.einsum("bcij,dc->bdij", w, params.pointwise[k])
        from_src = _linear(params.src_maps[k], summaries[layer - 1]).transpose(1, 2)
        from_dst = _linear(params.dst_maps[k], summaries[layer]).transpose(1, 2)
        weights.append(from_weight + from_src[:, :, None, :] + from_dst[:, :, :, None]
                       + weight_glob[:, :, n_in + k, None, None])
    # W_L: the map from s(u) of the column's hidden neuron, typed by the output row
    last = _linear(params.last_edge, summaries[L - 1]).view(batch, sizes[L - 1], -1, d)
    weights.append(last.permute(0, 3, 2, 1) + weight_glob[:, :, n_in + L - 2:, None])

    biases = [_linear(params.node_maps[h - 1], summaries[h]).transpose(1, 2)
              + bias_glob[:, :, h - 1, None] for h in range(1, L)]
    biases.append(bias_glob[:, :, L - 1:])
    return WeightSpace(_masked(weights, mask), biases, ws.layout)
