r"""The sparse (pruned) groups of :class:`~nft_pyg.nn.conv.nft_attention.NFTAttention`,
computed neuron by neuron.

The cross-term logit of a token pair is a sum over the neurons :math:`v`
where both tokens have an entry, and the output at an entry a sum over the
tokens with an entry at the same :math:`v`. Gathering the rows of every
two-hop path ``(query entry, v, key entry)`` (``P = \sum_v c_v^2`` rows for
``c_v`` entries at ``v``) makes each step a few ``[P, C]`` gathers and
scatters, hundreds of MB on a pruned MLP. Instead, the ``c_v`` entries of
each neuron are gathered once into a small dense block (neurons with a
similar ``c_v`` share one padded ``[V, c, ...]`` tensor), the ``c_v x c_v``
products per head are batched products, and only the logits and weights,
one number per path and head, move between paths and token pairs.

Those are kept head-major, ``[H, P]`` and ``[H, S]`` (``S`` token pairs):
the batched products produce that layout without a copy, and the
scatter / gather between paths and pairs then works on rows of ``S``
numbers, which stay in the cache (on ``[S, H]`` rows, 3-5x slower on a
pruned MLP).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class NeuronBuckets:
    """The entries of the sparse groups, by neuron ``v``, in padded buckets.

    Bucket ``b`` holds ``V_b`` neurons with up to ``counts[b]`` entries each
    (padding: feature row ``F``, the zero row; entry ``num_entries``, whose
    output is dropped; pair ``S``, a column that is dropped); ``rows`` /
    ``entries`` are ``[sum_b V_b * c_b]``, ``pairs`` ``[sum_b V_b * c_b *
    c_b]`` (row-major per neuron: query slot, key slot), bucket after bucket.
    """

    counts: list[int]
    sizes: list[int]          # V_b
    scales: list[Tensor]      # [V_b] 1 / sqrt(|V_i|) of each neuron's layer (float64)
    rows: Tensor              # feature row of each slot
    entries: Tensor           # entry of each slot
    pairs: Tensor             # sparse pair of each (query slot, key slot)
    gather_pairs: Tensor      # the same with padding at pair 0 (any pair will do)
    num_paths: int            # real (unpadded) paths

    def split_slots(self, tensor: Tensor, dim: int = 0) -> list[Tensor]:
        return list(tensor.split([v * c for v, c in zip(self.sizes, self.counts)], dim))

    def split_pairs(self, tensor: Tensor, dim: int = 0) -> list[Tensor]:
        return list(tensor.split([v * c * c for v, c in zip(self.sizes, self.counts)], dim))


def padded_count(count: Tensor) -> Tensor:
    """Round entry counts up to a few sizes (exact up to 8, then at most ~25 %
    more): ``c`` in ``[2^k, 2^{k+1})`` goes to a multiple of ``2^{k-2}``."""
    step = torch.ones_like(count)
    large = count > 8
    step[large] = 2 ** (torch.log2(count[large].double()).floor().long() - 2)
    return (count + step - 1) // step * step


def neuron_buckets(entries: Tensor, position: Tensor, num_positions: int):
    """Group ``entries`` (ids) by their ``position`` (the neuron ``v``).

    Returns ``(buckets, counts)``: per bucket a ``[V_b, c_b]`` entry id
    (``-1`` where padded) and mask, and the padded counts ``c_b``.
    """
    order = entries[torch.argsort(position, stable=True)]
    count = torch.bincount(position, minlength=num_positions)
    start = count.cumsum(0) - count
    neurons = count.nonzero().view(-1)
    padded = padded_count(count[neurons])
    buckets = []
    for size in padded.unique().tolist():
        members = neurons[padded == size]
        slot = torch.arange(size, device=entries.device)
        valid = slot < count[members].unsqueeze(1)
        index = (start[members].unsqueeze(1) + slot).clamp(max=max(order.numel() - 1, 0))
        buckets.append((torch.where(valid, order[index], -1), valid))
    return buckets, padded.unique().tolist()


def bucket_logits(qkv: Tensor, buckets: NeuronBuckets, heads: int, num_pairs: int):
    r"""The logits of the sparse token pairs, summed neuron by neuron.

    ``qkv`` is ``[F + 1, 3C]`` (last row zero). Returns ``(logits, values)``:
    ``[H, num_pairs]`` sums of :math:`\langle q, k \rangle / \sqrt{d\,|V_i|}`
    over the paths of each pair, and per bucket the values ``[H, V_b, c_b, d]``.
    (All paths at a neuron share the scale: applied to its ``c`` queries.)
    """
    channels = qkv.size(1) // 3
    dim = channels // heads
    # the last column collects padding; each bucket adds into it in place (no cat)
    logits = qkv.new_zeros(heads, num_pairs + 1)
    values = []
    # one gather for all buckets: its backward is one scatter, not one per bucket
    slots = buckets.split_slots(qkv.index_select(0, buckets.rows))
    for tokens, count, scale, pairs in zip(slots, buckets.counts, buckets.scales,
                                           buckets.split_pairs(buckets.pairs)):
        query, key, value = tokens.view(-1, count, 3, heads, dim).permute(
            2, 3, 0, 1, 4).unbind(0)                                    # [H, V, c, d]
        query = query * (scale / math.sqrt(dim)).to(query.dtype).view(1, -1, 1, 1)
        products = torch.matmul(query, key.transpose(-1, -2))           # [H, V, c, c]
        logits = logits.index_add_(1, pairs, products.view(heads, -1))
        values.append(value)
    return logits[:, :num_pairs], values


def bucket_messages(weights: Tensor, values: list[Tensor], buckets: NeuronBuckets,
                    out: Tensor) -> Tensor:
    """Add to ``out`` (rows: entries) per slot the weighted sum of the values at
    its neuron, from the ``[H, P_pad]`` weights of every (query slot, key slot)."""
    heads = weights.size(0)
    for part, value, count, entries in zip(buckets.split_pairs(weights, 1), values,
                                           buckets.counts, buckets.split_slots(buckets.entries)):
        alpha = part.view(heads, -1, count, count)                        # [H, V, c, c]
        message = torch.matmul(alpha, value)                               # [H, V, c, d]
        out = out.index_add_(0, entries, message.permute(1, 2, 0, 3).reshape(
            -1, heads * value.size(-1)))
    return out


class SegmentSoftmax(torch.autograd.Function):
    """Softmax along the last axis over consecutive segments (``lengths``
    entries each), with sequential segment reductions instead of scatters."""

    @staticmethod
    def forward(ctx, logits: Tensor, lengths: Tensor) -> Tensor:
        axis, size = logits.dim() - 1, logits.size(-1)
        # segment_reduce wants one lengths row per leading index
        lengths_nd = lengths.expand(*logits.shape[:-1], -1).contiguous()
        top = torch.segment_reduce(logits, "max", lengths=lengths_nd, axis=axis)
        exp = (logits - top.repeat_interleave(lengths, dim=axis, output_size=size)).exp_()
        total = torch.segment_reduce(exp, "sum", lengths=lengths_nd, axis=axis)
        alpha = exp.div_(total.repeat_interleave(lengths, dim=axis, output_size=size))
        ctx.save_for_backward(alpha, lengths, lengths_nd)
        return alpha

    @staticmethod
    def backward(ctx, grad: Tensor):
        alpha, lengths, lengths_nd = ctx.saved_tensors
        axis, size = alpha.dim() - 1, alpha.size(-1)
        weighted = torch.segment_reduce(grad * alpha, "sum", lengths=lengths_nd, axis=axis)
        return alpha * (grad - weighted.repeat_interleave(lengths, dim=axis,
                                                          output_size=size)), None
