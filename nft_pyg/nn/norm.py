r"""Layer normalisation of weight-space features, entry by entry."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..tensor import pointwise_ops_dense as dense
from ..tensor.weight_space import WeightSpace
from .pointwise import check_features, zero_input_nodes


class WeightSpaceLayerNorm(nn.Module):
    r"""Layer norm over the channels of every weight and bias feature.

    The pre-norm of the NFT blocks (Zhou et al., "Neural Functional
    Transformers", NeurIPS 2023, arXiv 2305.13546): each edge (weight) and
    each non-input node (bias) is normalised on its own over its :math:`C`
    channels, with one shared affine map,

    .. math::
        \mathbf{h}'_e = \boldsymbol{\gamma} \odot
        \frac{\mathbf{h}_e - \mu(\mathbf{h}_e)}{\sqrt{\sigma^2(\mathbf{h}_e) + \epsilon}}
        + \boldsymbol{\beta},
        \qquad \mu(\mathbf{h}) = \tfrac{1}{C} \textstyle\sum_c h_c,\ \
        \sigma^2(\mathbf{h}) = \tfrac{1}{C} \textstyle\sum_c (h_c - \mu)^2,

    and the same for :math:`\mathbf{x}_v`; input neurons are set to zero.
    Being per entry, it commutes with every neuron permutation. For a
    folded CNN feature graph the :math:`C` channels are the ``C * S``
    folded channels (padded positions included).

    Args:
        channels (int): :math:`C`.
        eps (float): :math:`\epsilon` (default ``1e-5``).
        affine (bool): learn :math:`\boldsymbol{\gamma}, \boldsymbol{\beta}`
            (initialised to ones and zeros; default ``True``).

    Shapes:
        - **input:** node features :math:`(N, C)`, edge features
          :math:`(E, C)`, the graph (structure).
        - **output:** :math:`(N, C)`, :math:`(E, C)`.
    """

    def __init__(self, channels: int, eps: float = 1e-5, affine: bool = True):
        super().__init__()
        if int(channels) < 1:
            raise ValueError(f"WeightSpaceLayerNorm: channels must be positive, got {channels}")
        self.channels, self.eps, self.affine = int(channels), float(eps), bool(affine)
        if self.affine:
            self.weight = nn.Parameter(torch.empty(self.channels))
            self.bias = nn.Parameter(torch.empty(self.channels))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.affine:
            nn.init.ones_(self.weight)
            nn.init.zeros_(self.bias)

    def _norm(self, features: Tensor) -> Tensor:
        return nn.functional.layer_norm(features, (self.channels,), self.weight, self.bias,
                                        self.eps)

    def forward(self, x: Tensor, edge_attr: Tensor, graph) -> tuple[Tensor, Tensor]:
        where = type(self).__name__
        check_features(where, x, edge_attr, graph, self.channels)
        return zero_input_nodes(self._norm(x), graph, where), self._norm(edge_attr)

    def forward_dense(self, ws: WeightSpace) -> WeightSpace:
        """The same map on a folded :class:`WeightSpace` ``[B, C, n_i, n_{i-1}]``."""
        if ws.channels != self.channels:
            raise ValueError(f"WeightSpaceLayerNorm: built for {self.channels} channels, got "
                             f"a weight space with {ws.channels}")
        return dense.layer_norm_dense(ws, self.weight, self.bias, self.eps)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.channels}, eps={self.eps}, "
                f"affine={self.affine})")


class PoolNorm(nn.BatchNorm1d):
    r"""Batch norm of pooled invariant vectors ``[B, F]``: each feature is
    standardised over the networks of the batch,

    .. math::
        z'_{b,f} = \gamma_f \frac{z_{b,f} - \mu_f}{\sqrt{\sigma_f^2 + \epsilon}} + \beta_f,

    with batch statistics in training and running statistics in eval mode
    (:class:`torch.nn.BatchNorm1d`). A mean pool averages over hundreds of
    weights, so the pooled vectors of different networks can differ by a few
    percent of their size; standardised, the head sees those differences.
    A training batch of a single network has no spread: it is normalised
    with the running statistics instead of raising. The running averages lag
    behind weights that move; when the pooled features' spread across
    networks is small next to that lag, eval mode normalises them wrongly:
    recompute the statistics with the current weights before evaluating
    (:func:`~nft_pyg.tasks.engine.recalibrate_pool_norms`,
    ``TrainConfig.recalibrate_batches``).

    Under :mod:`torch.distributed` (initialised, more than one process) the
    training statistics are those of the **global** batch: every process's
    sums are all-reduced (differentiably, so gradients flow across ranks as
    in :class:`torch.nn.SyncBatchNorm`, which needs a GPU). Training on
    :math:`k` processes then gives the same outputs, running statistics and
    gradients as one process on the whole batch.

    Args:
        num_features (int): :math:`F`.
    """

    def forward(self, input: Tensor) -> Tensor:
        if self.training and input.dim() == 2 and _distributed():
            return self._global_batch_forward(input)
        if self.training and input.dim() == 2 and input.size(0) == 1:
            return self._running_forward(input)
        return super().forward(input)

    def _running_forward(self, input: Tensor) -> Tensor:
        return nn.functional.batch_norm(input, self.running_mean, self.running_var,
                                        self.weight, self.bias, False, 0.0, self.eps)

    def _global_batch_forward(self, input: Tensor) -> Tensor:
        from torch.distributed.nn.functional import all_reduce

        features = input.size(1)
        local = torch.cat([input.sum(0), input.pow(2).sum(0), input.new_full((1,), input.size(0))])
        sums = all_reduce(local)
        count = float(sums[-1])
        if count < 2:
            return self._running_forward(input)
        mean = sums[:features] / count
        var = sums[features:2 * features] / count - mean.pow(2)   # biased, as in training
        if self.track_running_stats:
            self._update_running_stats(mean.detach(), var.detach() * count / (count - 1))
        out = (input - mean) * torch.rsqrt(var + self.eps)
        return out * self.weight + self.bias if self.affine else out

    @torch.no_grad()
    def _update_running_stats(self, mean: Tensor, unbiased_var: Tensor) -> None:
        self.num_batches_tracked += 1
        factor = (1.0 / float(self.num_batches_tracked) if self.momentum is None
                  else self.momentum)
        self.running_mean.lerp_(mean, factor)
        self.running_var.lerp_(unbiased_var, factor)


def _distributed() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
