r"""Dense twins of the HNP layer and the HNP pool (Zhou et al., arXiv 2302.14040).

Written on a *folded* :class:`~nft_pyg.tensor.WeightSpace` (``weights[l-1]``
``[B, C, n_l, n_{l-1}]``, ``biases[l-1]`` ``[B, C, n_l]``; kernel positions
moved into channels by :meth:`WeightSpace.fold_kernels`) with einsums and
means over tensor dimensions only: no scatter, no graph. The graph operators
:class:`~nft_pyg.nn.conv.hnp_conv.HNPConv` and
:class:`~nft_pyg.nn.pool.hnp_pool.HNPPool` must agree with these functions;
see :class:`HNPConv` for the term list.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .weight_space import WeightSpace, require_folded


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


def hnp_summary_dense(ws: WeightSpace) -> Tensor:
    r"""``[B, G, C]``: the mean of every HNP type (the order of ``HNPPool``)."""
    weights, biases = ws.weights, ws.biases
    if ws.num_layers == 1:
        return torch.cat([weights[0].permute(0, 2, 3, 1).flatten(1, 2),
                          biases[0].transpose(1, 2)], dim=1)
    parts = [weights[0].mean(dim=2).transpose(1, 2)]                     # W_1 columns
    parts += [w.mean(dim=(2, 3)).unsqueeze(1) for w in weights[1:-1]]    # hidden W_l
    parts += [weights[-1].mean(dim=3).transpose(1, 2)]                   # W_L rows
    parts += [b.mean(dim=2).unsqueeze(1) for b in biases[:-1]]          # hidden b_l
    parts += [biases[-1].transpose(1, 2)]                                # b_L
    return torch.cat(parts, dim=1)


def hnp_pool_dense(pool, ws: WeightSpace) -> Tensor:
    """Dense twin of ``HNPPool``: ``[B, G C]``."""
    check_hnp_folded(ws, pool.channels, pool.num_layers, pool.num_inputs, pool.num_outputs,
                     "HNPPool")
    return hnp_summary_dense(ws).flatten(1)


def hidden_summary_dense(ws: WeightSpace, layer: int) -> Tensor:
    r"""``[B, n_h, (i_h + 1 + o_h) C]``: the summary :math:`s(v)` of every
    neuron of hidden layer ``h``: its in-edges (all of them by input position
    if ``h = 1``, else their mean), its own feature, its out-edges (all of
    them by output position if ``h = L - 1``, else their mean)."""
    weights, bias = ws.weights, ws.biases[layer - 1]
    into, out_of = weights[layer - 1], weights[layer]       # [B, C, n_h, .], [B, C, ., n_h]
    if layer == 1:
        incoming = into.permute(0, 2, 3, 1).flatten(2)       # [B, n_1, n_0 C]
    else:
        incoming = into.mean(dim=3).transpose(1, 2)
    if layer == ws.num_layers - 1:
        outgoing = out_of.permute(0, 3, 2, 1).flatten(2)     # [B, n_(L-1), n_L C]
    else:
        outgoing = out_of.mean(dim=2).transpose(1, 2)
    return torch.cat([incoming, bias.transpose(1, 2), outgoing], dim=2)


def _linear(module: nn.Linear, features: Tensor) -> Tensor:
    out = torch.einsum("...i,oi->...o", features, module.weight)
    return out if module.bias is None else out + module.bias


def hnp_layer_dense(conv, ws: WeightSpace) -> WeightSpace:
    """Dense twin of ``HNPConv``: the same map with the same parameters."""
    L, n_in = conv.num_layers, conv.num_inputs
    check_hnp_folded(ws, conv.in_channels, L, n_in, conv.num_outputs, "HNPConv")
    batch, d = ws.batch_size, conv.out_channels
    num_edge_types, _ = hnp_num_types(L, n_in, conv.num_outputs)
    glob = _linear(conv.global_map, hnp_summary_dense(ws).flatten(1)).view(batch, -1, d)
    glob = glob.transpose(1, 2)                                           # [B, d, G]
    weight_glob, bias_glob = glob[:, :, :num_edge_types], glob[:, :, num_edge_types:]
    sizes = ws.neuron_layer_sizes
    if L == 1:
        return WeightSpace([weight_glob.reshape(batch, d, sizes[1], n_in)], [bias_glob],
                           ws.layout)

    summaries = {h: hidden_summary_dense(ws, h) for h in range(1, L)}
    # W_1: the map from s(v) of the row's hidden neuron, typed by the input column
    first = _linear(conv.first_edge, summaries[1]).view(batch, sizes[1], n_in, d)
    weights = [first.permute(0, 3, 1, 2) + weight_glob[:, :, None, :n_in]]
    for layer in range(2, L):
        w = ws.weights[layer - 1]
        k = layer - 2
        from_weight = torch.einsum("bcij,dc->bdij", w, conv.pointwise[k].weight)
        from_src = _linear(conv.src_maps[k], summaries[layer - 1]).transpose(1, 2)
        from_dst = _linear(conv.dst_maps[k], summaries[layer]).transpose(1, 2)
        weights.append(from_weight + from_src[:, :, None, :] + from_dst[:, :, :, None]
                       + weight_glob[:, :, n_in + k, None, None])
    # W_L: the map from s(u) of the column's hidden neuron, typed by the output row
    last = _linear(conv.last_edge, summaries[L - 1]).view(batch, sizes[L - 1], -1, d)
    weights.append(last.permute(0, 3, 2, 1) + weight_glob[:, :, n_in + L - 2:, None])

    biases = [_linear(conv.node_maps[h - 1], summaries[h]).transpose(1, 2)
              + bias_glob[:, :, h - 1, None] for h in range(1, L)]
    biases.append(bias_glob[:, :, L - 1:])
    return WeightSpace(weights, biases, ws.layout)
