"""Per-layer standardisation of raw weights with statistics of a dataset."""
from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch_geometric.transforms import BaseTransform

from ..graph.accessors import is_input_neuron
from ..graph.layout import Layout
from ..utils.io import CorruptFileError, atomic_save, safe_load

_KEYS = ("weight_mean", "weight_std", "bias_mean", "bias_std", "weight_count", "bias_count")


def _own_positions(data: Any, where: str) -> Tensor:
    """``[E, S]`` bool: the kernel entries that belong to each edge's layer (not padding)."""
    width = data.edge_attr.size(-1)
    layout = getattr(data, "layout", None)
    if layout is None or isinstance(layout, (list, tuple)):
        return torch.ones_like(data.edge_attr, dtype=torch.bool)
    positions = torch.tensor([0] + [layer.positions for layer in
                                    Layout.coerce(layout, where).weight_layers()])
    own = positions[data.edge_layer].unsqueeze(-1)
    return torch.arange(width).unsqueeze(0) < own


def _with_layer_zero(values: Tensor, fill: float) -> Tensor:
    """``[L + 1]``: ``fill`` for layer 0 (inputs; no weight layer 0), then ``values``."""
    return torch.cat([values.new_full((1,), fill), values])


def _check_raw(data: Any, where: str) -> None:
    for key in ("x", "edge_attr", "edge_layer", "node_layer"):
        if getattr(data, key, None) is None:
            raise ValueError(f"{where}: the graph has no {key}; expected a raw NeuronGraph")
    width = int(data.kernel_width.reshape(-1)[0]) if getattr(data, "kernel_width", None) \
        is not None else data.edge_attr.size(-1)
    if data.x.size(-1) != 1 or data.edge_attr.size(-1) != width:
        raise ValueError(f"{where}: expects a raw graph (x [N, 1], edge_attr [E, kernel_width])"
                         f", got x {tuple(data.x.shape)} and edge_attr "
                         f"{tuple(data.edge_attr.shape)}")


@dataclass
class WeightStatistics:
    """Mean and standard deviation of the weights and of the biases of each layer.

    All attributes are ``[L]`` float64 tensors, index ``l - 1`` for layer ``l``:

    - ``weight_mean``, ``weight_std``: over every kernel entry of weight layer
      ``l`` (padding excluded) of every network;
    - ``bias_mean``, ``bias_std``: over the biases of neuron layer ``l``;
    - ``weight_count``, ``bias_count``: how many numbers each statistic saw.
    """

    weight_mean: Tensor
    weight_std: Tensor
    bias_mean: Tensor
    bias_std: Tensor
    weight_count: Tensor
    bias_count: Tensor

    @property
    def num_layers(self) -> int:
        return self.weight_mean.numel()

    @classmethod
    def from_dataset(cls, dataset: Iterable[Any], min_std: float = 1e-8) -> WeightStatistics:
        """Accumulate the statistics over raw graphs (float64, one pass).

        Args:
            dataset: any iterable of raw :class:`~nft_pyg.NeuronGraph`\\ s
                (a PyG dataset, a list).
            min_std (float): floor of the standard deviations (a constant
                layer would otherwise divide by zero).
        """
        where = "WeightStatistics.from_dataset"
        sums: dict[str, list[float]] = {k: [] for k in ("w", "w2", "wn", "b", "b2", "bn")}

        def grow(depth: int) -> None:
            for values in sums.values():
                values.extend([0.0] * (depth - len(values)))

        seen = 0
        for data in dataset:
            _check_raw(data, where)
            seen += 1
            depth = int(data.edge_layer.max())
            grow(depth)
            own = _own_positions(data, where)
            edges = data.edge_attr.to(torch.float64)
            nodes = data.x[:, 0].to(torch.float64)
            for l in range(1, depth + 1):
                entries = edges[data.edge_layer == l][own[data.edge_layer == l]]
                sums["w"][l - 1] += float(entries.sum())
                sums["w2"][l - 1] += float((entries ** 2).sum())
                sums["wn"][l - 1] += entries.numel()
                biases = nodes[data.node_layer == l]
                sums["b"][l - 1] += float(biases.sum())
                sums["b2"][l - 1] += float((biases ** 2).sum())
                sums["bn"][l - 1] += biases.numel()
        if not seen:
            raise ValueError(f"{where}: the dataset is empty")
        t = {k: torch.tensor(v, dtype=torch.float64) for k, v in sums.items()}

        def moments(total, squares, count):
            mean = total / count.clamp(min=1)
            var = (squares / count.clamp(min=1) - mean ** 2).clamp(min=0)
            return mean, var.sqrt().clamp(min=min_std)

        weight_mean, weight_std = moments(t["w"], t["w2"], t["wn"])
        bias_mean, bias_std = moments(t["b"], t["b2"], t["bn"])
        return cls(weight_mean, weight_std, bias_mean, bias_std, t["wn"], t["bn"])

    def to_dict(self) -> dict[str, Tensor]:
        return {key: getattr(self, key) for key in _KEYS}

    @classmethod
    def from_dict(cls, state: dict[str, Tensor]) -> WeightStatistics:
        missing = [key for key in _KEYS if key not in state]
        if missing:
            raise CorruptFileError(f"WeightStatistics: missing entries {missing}")
        return cls(**{key: state[key].to(torch.float64) for key in _KEYS})

    def save(self, path: str | os.PathLike) -> None:
        """Write atomically (:func:`nft_pyg.utils.io.atomic_save`)."""
        atomic_save(self.to_dict(), path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> WeightStatistics:
        """Read a file written by :meth:`save` (weights-only ``torch.load``)."""
        return cls.from_dict(safe_load(path, dict))


class NormalizeWeights(BaseTransform):
    r"""Standardise the raw weights and biases of each layer.

    .. math::
        w \to \frac{w - \mu^W_l}{\sigma^W_l}, \qquad
        b \to \frac{b - \mu^b_l}{\sigma^b_l}

    for every kernel entry :math:`w` of weight layer :math:`l` (zero padding
    stays zero) and every bias :math:`b` of neuron layer :math:`l \ge 1`
    (input neurons stay zero). The statistics come from a dataset
    (:meth:`WeightStatistics.from_dataset`), usually its training split.
    The per-layer constants commute with neuron permutations, so the
    transform keeps every permutation symmetry; it does not keep sign-flip
    symmetry unless the means are zero. :meth:`inverse` undoes it.

    Args:
        stats (WeightStatistics): per-layer statistics.
    """

    def __init__(self, stats: WeightStatistics):
        if not isinstance(stats, WeightStatistics):
            raise TypeError(f"NormalizeWeights: expected WeightStatistics, got "
                            f"{type(stats).__name__}")
        self.stats = stats

    def _affine(self, data: Any, where: str) -> tuple[Tensor, ...]:
        _check_raw(data, where)
        depth = int(data.edge_layer.max())
        if depth > self.stats.num_layers:
            raise ValueError(f"{where}: the graph has {depth} weight layers, the statistics "
                             f"{self.stats.num_layers}")
        s = self.stats
        return (_with_layer_zero(s.weight_mean, 0.0), _with_layer_zero(s.weight_std, 1.0),
                _with_layer_zero(s.bias_mean, 0.0), _with_layer_zero(s.bias_std, 1.0))

    def forward(self, data: Any) -> Any:
        w_mean, w_std, b_mean, b_std = self._affine(data, type(self).__name__)
        return self._apply(data, w_mean, w_std, b_mean, b_std, invert=False)

    def inverse(self, data: Any) -> Any:
        """Map normalised weights back to the original scale."""
        w_mean, w_std, b_mean, b_std = self._affine(data, f"{type(self).__name__}.inverse")
        return self._apply(data, w_mean, w_std, b_mean, b_std, invert=True)

    def _apply(self, data, w_mean, w_std, b_mean, b_std, invert: bool) -> Any:
        own = _own_positions(data, type(self).__name__)
        dtype = data.edge_attr.dtype
        em, es = (w_mean[data.edge_layer].to(dtype).unsqueeze(-1),
                  w_std[data.edge_layer].to(dtype).unsqueeze(-1))
        nm, ns = (b_mean[data.node_layer].to(dtype).unsqueeze(-1),
                  b_std[data.node_layer].to(dtype).unsqueeze(-1))
        if invert:
            edges, nodes = data.edge_attr * es + em, data.x * ns + nm
        else:
            edges, nodes = (data.edge_attr - em) / es, (data.x - nm) / ns
        data.edge_attr = torch.where(own, edges, torch.zeros_like(edges))
        data.x = torch.where(~is_input_neuron(data).unsqueeze(-1), nodes, torch.zeros_like(nodes))
        return data

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_layers={self.stats.num_layers})"
