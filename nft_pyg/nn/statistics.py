"""Statistics of values grouped by an integer id: mean, variance and
quantiles, as StatNN (Unterthiner et al., 2020) reads them off each layer.
Shared by :class:`~nft_pyg.nn.models.baselines.StatNN` and
``NFN(append_stats=True)`` (:func:`layer_statistics` of the raw weights) and
:class:`~nft_pyg.nn.pool.np_stat_pool.NPStatPool` (of weight-space features)."""
from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import torch
from torch import Tensor
from torch_geometric.utils import scatter

from ..graph.layout import Layout
from .pointwise import graph_attr

#: quantiles of StatNN, after the mean and the variance
STAT_QUANTILES = (0.0, 0.25, 0.5, 0.75, 1.0)
#: statistics per group with the default quantiles: mean, variance, then the quantiles
NUM_STATS = 2 + len(STAT_QUANTILES)


def group_quantiles(values: Tensor, group: Tensor, num_groups: int,
                    quantiles: Sequence[float]) -> Tensor:
    """``[num_groups, Q]`` quantiles of ``values`` within each group id
    (linear interpolation, as ``torch.quantile``); zero for empty groups."""
    order = torch.argsort(values, stable=True)
    order = order[torch.argsort(group[order], stable=True)]     # by group, then value
    ranked = values[order]
    counts = torch.bincount(group, minlength=num_groups)
    starts = counts.cumsum(0) - counts
    q = torch.tensor(quantiles, dtype=values.dtype, device=values.device)
    position = starts.unsqueeze(1) + q * (counts - 1).clamp(min=0).unsqueeze(1)
    low = position.floor().long()
    high = position.ceil().long()
    frac = position - low
    last = max(ranked.numel() - 1, 0)
    padded = ranked if ranked.numel() else values.new_zeros(1)
    low, high = low.clamp(max=last), high.clamp(max=last)
    result = padded[low] + frac * (padded[high] - padded[low])
    return result * (counts > 0).unsqueeze(1)


def group_statistics(values: Tensor, group: Tensor, num_groups: int,
                     quantiles: Sequence[float] = STAT_QUANTILES) -> Tensor:
    """``[num_groups, 2 + Q]``: mean, (population) variance and the
    ``quantiles`` of ``values`` within each group id; zeros for empty groups."""
    mean = scatter(values, group, 0, dim_size=num_groups, reduce="mean")
    var = scatter((values - mean[group]) ** 2, group, 0, dim_size=num_groups, reduce="mean")
    ranked = group_quantiles(values, group, num_groups, quantiles)
    return torch.cat([mean.unsqueeze(1), var.unsqueeze(1), ranked], dim=1)


def channel_statistics(features: Tensor, group: Tensor, num_groups: int,
                       quantiles: Sequence[float] = STAT_QUANTILES) -> Tensor:
    """``[num_groups, C, 2 + Q]``: :func:`group_statistics` of every channel of
    ``features`` ``[R, C]`` over the rows of each group id ``group`` ``[R]``."""
    channels = features.size(1)
    ids = group.unsqueeze(1) * channels + torch.arange(channels, device=features.device)
    stats = group_statistics(features.reshape(-1), ids.reshape(-1), num_groups * channels,
                             quantiles)
    return stats.view(num_groups, channels, -1)


def batch_vector(graph, num_nodes: int, device) -> Tensor:
    """``[N]`` graph id of each node (zeros for a single graph)."""
    batch = getattr(graph, "batch", None)
    return batch if batch is not None else torch.zeros(num_nodes, dtype=torch.long,
                                                       device=device)


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
    has_bias = node_layer > 0
    node_group = batch[has_bias] * num_layers + node_layer[has_bias] - 1
    biases = group_statistics(x[has_bias, 0], node_group, num_groups)
    return torch.stack([weights, biases], dim=1).view(num_graphs, num_layers, 2, NUM_STATS)
