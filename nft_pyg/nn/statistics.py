"""Statistics of values grouped by an integer id: mean, variance and
quantiles, as StatNN (Unterthiner et al., 2020) reads them off each layer.
Shared by :class:`~nft_pyg.nn.models.baselines.StatNN` (raw weights) and
:class:`~nft_pyg.nn.pool.np_stat_pool.NPStatPool` (weight-space features)."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor
from torch_geometric.utils import scatter

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
