"""Statistics of values grouped by an integer id: mean, variance and
quantiles, as StatNN (Unterthiner et al., 2020) reads them off each layer.
Shared by :class:`~nft_pyg.nn.models.baselines.StatNN` and
``NFN(append_stats=True)`` (:func:`layer_statistics` of the raw weights) and
:class:`~nft_pyg.nn.pool.np_stat_pool.NPStatPool` (of weight-space features)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import Tensor
from torch_geometric.utils import scatter

from ..graph.accessors import batch_vector, is_input_neuron
from ..graph.layout import Layout
from .pointwise import graph_attr

#: quantiles of StatNN, after the mean and the variance
STAT_QUANTILES = (0.0, 0.25, 0.5, 0.75, 1.0)
#: statistics per group with the default quantiles: mean, variance, then the quantiles
NUM_STATS = 2 + len(STAT_QUANTILES)


@dataclass
class GroupSlots:
    """Where each row of a grouping sits in the padded ``[num_groups, width]``
    block that :func:`grouped_quantiles` sorts. It depends on the group ids
    alone, so a pool builds it once per index and its forward has no shape
    that depends on the data (one graph under ``torch.compile``).

    ``counts``: rows per group; ``order``: the rows sorted by group (stable);
    ``group`` / ``slot``: the group of each row in that order and its place
    in the group; ``width``: the largest group (at least 1).
    """

    num_groups: int
    width: int
    counts: Tensor
    order: Tensor
    group: Tensor
    slot: Tensor

    @classmethod
    def of(cls, group: Tensor, num_groups: int) -> GroupSlots:
        counts = torch.bincount(group, minlength=num_groups)
        width = max(int(counts.max()), 1) if group.numel() else 1
        order = torch.argsort(group, stable=True)
        ranked = group[order]
        slot = torch.arange(group.numel(), device=group.device) - \
            (counts.cumsum(0) - counts)[ranked]
        return cls(num_groups, width, counts, order, ranked, slot)


def grouped_quantiles(features: Tensor, group: Tensor, num_groups: int,
                      quantiles: Sequence[float], slots: GroupSlots | None = None) -> Tensor:
    """``[num_groups, Q, C]`` quantiles of every channel of ``features``
    ``[R, C]`` over the rows of each group id (linear interpolation, as
    ``torch.quantile``); zero for empty groups. ``slots``: the grouping's
    :class:`GroupSlots`, if already built.

    The rows are scattered into a ``[num_groups, C, largest group]`` block
    padded with the dtype's largest value and sorted along its last dimension
    in one call, so the cost is one batched sort, whatever the number of groups and
    channels (memory: the block, so groups of very unequal sizes pad a lot).
    """
    slots = GroupSlots.of(group, num_groups) if slots is None else slots
    channels, counts = features.size(1), slots.counts
    # [G, C, W]: each (group, channel) a contiguous row, sorted in one call
    block = features.new_full((num_groups, channels, slots.width),
                              torch.finfo(features.dtype).max)
    block[slots.group, :, slots.slot] = features.index_select(0, slots.order)
    block = block.sort(dim=-1).values
    q = torch.tensor(quantiles, dtype=features.dtype, device=features.device)
    position = q.unsqueeze(0) * (counts - 1).clamp(min=0).unsqueeze(1)        # [G, Q]
    low, high = position.floor().long(), position.ceil().long()
    below, above = (block.gather(2, index.unsqueeze(1).expand(-1, channels, -1))
                    for index in (low, high))                                 # [G, C, Q]
    result = below + (position - low).unsqueeze(1) * (above - below)
    result = torch.where((counts > 0).view(-1, 1, 1), result, torch.zeros_like(result))
    return result.transpose(1, 2)


def group_quantiles(values: Tensor, group: Tensor, num_groups: int,
                    quantiles: Sequence[float]) -> Tensor:
    """``[num_groups, Q]`` quantiles of ``values`` ``[R]`` within each group id
    (linear interpolation, as ``torch.quantile``); zero for empty groups."""
    return grouped_quantiles(values.unsqueeze(1), group, num_groups, quantiles)[..., 0]


def group_statistics(values: Tensor, group: Tensor, num_groups: int,
                     quantiles: Sequence[float] = STAT_QUANTILES) -> Tensor:
    """``[num_groups, 2 + Q]``: mean, (population) variance and the
    ``quantiles`` of ``values`` ``[R]`` within each group id; zeros for empty
    groups."""
    return channel_statistics(values.unsqueeze(1), group, num_groups, quantiles)[:, 0]


def channel_statistics(features: Tensor, group: Tensor, num_groups: int,
                       quantiles: Sequence[float] = STAT_QUANTILES,
                       slots: GroupSlots | None = None) -> Tensor:
    """``[num_groups, C, 2 + Q]``: :func:`group_statistics` of every channel of
    ``features`` ``[R, C]`` over the rows of each group id ``group`` ``[R]``
    (``slots``: the grouping's :class:`GroupSlots`, if already built)."""
    mean = scatter(features, group, 0, dim_size=num_groups, reduce="mean")
    var = scatter((features - mean[group]) ** 2, group, 0, dim_size=num_groups,
                  reduce="mean")
    ranked = grouped_quantiles(features, group, num_groups, quantiles, slots)   # [G, Q, C]
    return torch.cat([mean.unsqueeze(-1), var.unsqueeze(-1), ranked.transpose(1, 2)], dim=-1)


def graph_layouts(graph) -> list[str] | None:
    """The layout of each graph of a graph or batch, ``None`` without layouts."""
    layout = getattr(graph, "layout", None)
    if layout is None:
        return None
    return list(layout) if isinstance(layout, (list, tuple)) else [layout]


@lru_cache(maxsize=256)
def _layer_positions(layout: str) -> tuple[int, ...]:
    """``(0, S_1, ..., S_L)``: kernel positions of each weight layer."""
    return (0, *[layer.positions for layer in Layout.coerce(layout).weight_layers()])


def layer_statistics(graph, num_layers: int, where: str = "layer_statistics") -> Tensor:
    """``[B, L, 2, 7]``: per network and weight layer, the statistics of
    :func:`group_statistics` of its weights (``[..., 0, :]``, the kernel
    positions each layer really has) and of its biases (``[..., 1, :]``).
    Layers a network does not have (up to ``num_layers``) give zeros."""
    x, edge_attr = graph_attr(graph, "x", where), graph_attr(graph, "edge_attr", where)
    edge_index = graph_attr(graph, "edge_index", where)
    node_layer = graph_attr(graph, "node_layer", where)
    edge_layer = graph_attr(graph, "edge_layer", where)
    if x.dim() != 2 or x.size(1) != 1 or edge_attr.dim() != 2:
        raise ValueError(f"{where}: expects a raw graph, x [N, 1] and edge_attr [E, S], got "
                         f"x {tuple(x.shape)} and edge_attr {tuple(edge_attr.shape)}")
    deepest = int(edge_layer.max()) if edge_layer.numel() else 0
    if deepest > num_layers:
        raise ValueError(f"{where}: built for num_layers={num_layers}, the graph has "
                         f"{deepest} weight layers")
    batch = batch_vector(graph, x.size(0), x.device)
    num_graphs = int(batch.max()) + 1 if batch.numel() else 0
    edge_batch = batch[edge_index[0]]
    width = edge_attr.size(1)
    layouts = graph_layouts(graph)
    if layouts is None:           # without a layout every position counts
        positions = torch.full((edge_attr.size(0),), width, device=x.device)
    else:
        table = torch.zeros(num_graphs, num_layers + 1, dtype=torch.long)
        for b, text in enumerate(layouts):
            sizes = _layer_positions(text)
            table[b, :len(sizes)] = torch.tensor(sizes)
        positions = table.to(x.device)[edge_batch, edge_layer]
    real = torch.arange(width, device=x.device) < positions.unsqueeze(1)
    edge_group = (edge_batch * num_layers + edge_layer - 1).unsqueeze(1).expand(-1, width)
    num_groups = num_graphs * num_layers
    weights = group_statistics(edge_attr[real], edge_group[real], num_groups)
    graph_attr(graph, "node_role", where)   # a clear error if it is missing
    has_bias = ~is_input_neuron(graph)
    node_group = batch[has_bias] * num_layers + node_layer[has_bias] - 1
    biases = group_statistics(x[has_bias, 0], node_group, num_groups)
    return torch.stack([weights, biases], dim=1).view(num_graphs, num_layers, 2, NUM_STATS)
