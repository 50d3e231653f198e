r"""Dense twins of the NP layer and the NP pool (Zhou et al., arXiv 2302.14040).

Written on a *folded* :class:`~nft_pyg.tensor.WeightSpace` (``weights[l-1]``
``[B, C, n_l, n_{l-1}]``, ``biases[l-1]`` ``[B, C, n_l]``; kernel positions
moved into channels by :meth:`WeightSpace.fold_kernels`) with einsums and
means over tensor dimensions only: no scatter, no graph. The graph
operators :class:`~nft_pyg.nn.conv.np_conv.NPConv` and
:class:`~nft_pyg.nn.pool.np_pool.NPPool` must agree with these functions;
they hand their parameters over explicitly (:class:`NPWeights`), so this
module knows nothing of the operators.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .weight_space import WeightSpace, masked_mean, require_folded


def check_folded(ws: WeightSpace, channels: int, num_layers: int, where: str) -> None:
    """Raise a ``ValueError`` naming ``where`` if ``ws`` does not fit the operator."""
    require_folded(ws, where)
    if ws.channels != channels:
        raise ValueError(f"{where}.forward_dense: expected in_channels={channels} channels, "
                         f"got {ws.channels}")
    if ws.num_layers > num_layers:
        raise ValueError(f"{where}.forward_dense: the weight space has {ws.num_layers} weight "
                         f"layers but the operator was built for num_layers={num_layers}")


def _masked(weights: list[Tensor], mask: list[Tensor] | None) -> list[Tensor]:
    """The weights with absent entries zeroed (``mask[l]`` ``[B, n_l, n_{l-1}]``)."""
    if mask is None:
        return list(weights)
    return [w * m.unsqueeze(1).to(w.dtype) for w, m in zip(weights, mask)]


def np_pool_dense(ws: WeightSpace, num_layers: int, channels: int | None = None,
                  where: str = "np_pool_dense", mask: list[Tensor] | None = None) -> Tensor:
    r"""``[B, 2 L C]``: the mean of every weight matrix, then of every bias
    vector, each ``[B, C]``, zeros for layers past ``ws.num_layers``. With
    ``mask`` (per weight layer ``[B, n_l, n_{l-1}]``, true where the weight
    exists: a pruned graph) weight means run over the present weights only."""
    check_folded(ws, ws.channels if channels is None else channels, num_layers, where)
    zeros = [ws.weights[0].new_zeros(ws.batch_size, ws.channels)] * \
        (num_layers - ws.num_layers)
    masks = mask if mask is not None else [None] * ws.num_layers
    weight_means = [masked_mean(w, m, (2, 3)) for w, m in zip(_masked(ws.weights, mask), masks)]
    bias_means = [b.mean(dim=2) for b in ws.biases] + zeros
    return torch.cat(weight_means + zeros + bias_means, dim=1)


def _statistics(values: Tensor, quantiles: Tensor) -> Tensor:
    """``[B, C, 2 + Q]``: mean, population variance and quantiles over the last
    dimension of ``values`` ``[B, C, M]``."""
    ranked = torch.quantile(values, quantiles, dim=-1).permute(1, 2, 0)
    return torch.cat([values.mean(-1, keepdim=True),
                      values.var(-1, unbiased=False, keepdim=True), ranked], dim=-1)


def np_stat_pool_dense(ws: WeightSpace, num_layers: int, quantiles, channels: int | None = None,
                       where: str = "np_stat_pool_dense") -> Tensor:
    r"""``[B, 2 L C (2 + Q)]``: the mean, variance and ``quantiles`` of every
    channel of every weight matrix, then of every bias vector, zeros for
    layers past ``ws.num_layers`` (the dense twin of
    :class:`~nft_pyg.nn.pool.np_stat_pool.NPStatPool`)."""
    check_folded(ws, ws.channels if channels is None else channels, num_layers, where)
    q = torch.tensor(quantiles, dtype=ws.weights[0].dtype, device=ws.weights[0].device)
    out = ws.weights[0].new_zeros(ws.batch_size, 2, num_layers, ws.channels, 2 + len(q))
    for layer, (weight, bias) in enumerate(zip(ws.weights, ws.biases)):
        out[:, 0, layer] = _statistics(weight.flatten(2), q)
        out[:, 1, layer] = _statistics(bias, q)
    return out.reshape(ws.batch_size, -1)


@dataclass
class NPWeights:
    """The parameters of an NP layer, as the dense twin reads them.

    ``edge_self`` ``[L, C, C']`` (:math:`A`), ``edge_src`` / ``edge_dst`` /
    ``node_self`` ``[L, 3C, C']`` (:math:`B, C, E`, rows ``[in, x, out]``),
    ``edge_global`` / ``node_global`` ``[L, 2LC, C']`` (:math:`D, F`),
    ``edge_bias`` / ``node_bias`` ``[L, C']`` or ``None``; with IO embeddings
    ``input_embedding`` ``[n_in, C]``, ``output_embedding`` /
    ``output_bias_embedding`` ``[n_out, C]``.
    """

    edge_self: Tensor
    edge_src: Tensor
    edge_dst: Tensor
    edge_global: Tensor
    node_self: Tensor
    node_global: Tensor
    edge_bias: Tensor | None = None
    node_bias: Tensor | None = None
    input_embedding: Tensor | None = None
    output_embedding: Tensor | None = None
    output_bias_embedding: Tensor | None = None


def embed_io_dense(weights_: NPWeights, ws: WeightSpace, where: str) -> WeightSpace:
    """Add the learned input / output position embeddings (see NPConv)."""
    weights, biases = list(ws.weights), list(ws.biases)
    n_in, n_out = ws.neuron_layer_sizes[0], ws.neuron_layer_sizes[-1]
    for name, n, limit in (("input", n_in, weights_.input_embedding.size(0)),
                           ("output", n_out, weights_.output_embedding.size(0))):
        if n > limit:
            raise ValueError(f"{where}.forward_dense: the weight space has {n} "
                             f"{name} neurons but the IO embedding was built for "
                             f"num_{name}s={limit}")
    # [n, C] -> channels first, broadcast over the other neuron axis
    weights[0] = weights[0] + weights_.input_embedding[:n_in].t()[None, :, None, :]
    weights[-1] = weights[-1] + weights_.output_embedding[:n_out].t()[None, :, :, None]
    biases[-1] = biases[-1] + weights_.output_bias_embedding[:n_out].t()[None]
    return WeightSpace(weights, biases, ws.layout)


def neuron_summaries(ws: WeightSpace, mask: list[Tensor] | None = None) -> list[Tensor]:
    r"""``s_k`` ``[B, 3C, n_k]`` for neuron layers ``k = 0..L``: the mean of the
    weights into each neuron (row means of ``W_k``), its bias ``b_k`` and the
    mean of the weights out of it (column means of ``W_{k+1}``); absent parts
    (into / bias of inputs, out of outputs) are zeros. With ``mask`` (see
    :func:`np_pool_dense`) the means run over the present weights only."""
    weights, biases = _masked(ws.weights, mask), ws.biases
    masks = mask if mask is not None else [None] * ws.num_layers
    sizes = ws.neuron_layer_sizes
    summaries = []
    for k, n in enumerate(sizes):
        zero = weights[0].new_zeros(ws.batch_size, ws.channels, n)
        into = masked_mean(weights[k - 1], masks[k - 1], 3) if k > 0 else zero
        bias = biases[k - 1] if k > 0 else zero
        out_of = masked_mean(weights[k], masks[k], 2) if k < ws.num_layers else zero
        summaries.append(torch.cat([into, bias, out_of], dim=1))
    return summaries


def np_layer_dense(params: NPWeights, ws: WeightSpace, mask: list[Tensor] | None = None,
                   where: str = "NPConv") -> WeightSpace:
    r"""The NP layer with parameters ``params`` on a folded weight space.

    For weight layer ``l`` (parameters at index ``l - 1``):

    .. math::
        W'_l = A_l W_l + B_l s_{l-1} \mathbf{1}^\top_{\text{rows}}
        + C_l s_l \mathbf{1}^\top_{\text{cols}} + D_l g + a_l, \qquad
        b'_l = E_l s_l + F_l g + e_l,

    every matrix acting on the channel dimension. ``mask`` (per weight layer
    ``[B, n_l, n_{l-1}]``, true where the weight exists) gives the map of
    ``NPConv`` on the pruned graph: absent weights are absent from every mean
    (as missing edges are on the graph) and get a zero output.
    """
    num_layers, channels = params.edge_self.size(0), params.edge_self.size(1)
    check_folded(ws, channels, num_layers, where)
    if params.input_embedding is not None:
        ws = embed_io_dense(params, ws, where)
    ws = WeightSpace(_masked(ws.weights, mask), ws.biases, ws.layout)
    summaries = neuron_summaries(ws, mask)
    glob = np_pool_dense(ws, num_layers, mask=mask)                       # [B, 2LC]
    edge_glob = torch.einsum("bf,lfo->blo", glob, params.edge_global)     # [B, L, C']
    node_glob = torch.einsum("bf,lfo->blo", glob, params.node_global)
    if params.edge_bias is not None:
        edge_glob = edge_glob + params.edge_bias
        node_glob = node_glob + params.node_bias
    weights, biases = [], []
    for i, w in enumerate(ws.weights):          # weight layer l = i + 1
        src, dst = summaries[i], summaries[i + 1]
        weight = torch.einsum("bcij,co->boij", w, params.edge_self[i])
        weight = weight + torch.einsum("bcj,co->boj", src, params.edge_src[i])[:, :, None, :]
        weight = weight + torch.einsum("bci,co->boi", dst, params.edge_dst[i])[:, :, :, None]
        weights.append(weight + edge_glob[:, i, :, None, None])
        bias = torch.einsum("bci,co->boi", dst, params.node_self[i])
        biases.append(bias + node_glob[:, i, :, None])
    return WeightSpace(_masked(weights, mask), biases, ws.layout)
