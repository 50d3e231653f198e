r"""A conditional VAE of winning-ticket masks, built from equivariant NF layers."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.utils import scatter

from ...graph.layout import Layout
from ..conv.hnp_conv import HNPConv
from ..conv.np_conv import NPConv
from ..conv.pointwise_conv import PointwiseConv
from ..pointwise import WeightSpaceActivation, WeightSpaceSequential, graph_attr
from ..structure import WeightGraphIndex
from .nfn import layout_kwargs

#: the NF layer of each mode (``"np"``: all neurons permutable; ``"hnp"``: hidden only)
TICKET_MODES = ("np", "hnp")


def layer_rms_features(x: Tensor, edge_attr: Tensor, graph, num_layers: int,
                       kernel_sizes: Sequence[int], eps: float = 1e-12
                       ) -> tuple[Tensor, Tensor]:
    r"""Raw weights as ``[w / r, |w| / r]`` features, :math:`r` the RMS of the
    weights (biases) of the same layer of the same network.

    Per-layer statistics are invariant to neuron permutations, so the map is
    equivariant; it makes the features of layers with different fan-in
    comparable and hands the NF layers the magnitude that pruning ranks by.
    Returns ``x [N, 2S]`` (bias in the first column of each half, input
    neurons zero) and ``edge_attr [E, 2S]`` (padded kernel entries zero).
    """
    where = "TicketVAE"
    structure = WeightGraphIndex.from_data(graph, where)
    width = edge_attr.size(1)
    group = structure.edge_batch * num_layers + structure.edge_layer - 1
    valid = (torch.arange(width, device=edge_attr.device)
             < torch.tensor(kernel_sizes, device=edge_attr.device)[structure.edge_layer - 1]
             .unsqueeze(1))
    count = scatter(valid.to(edge_attr.dtype).sum(1), group, 0,
                    dim_size=structure.num_graphs * num_layers, reduce="sum")
    power = scatter(edge_attr.pow(2).sum(1), group, 0,
                    dim_size=structure.num_graphs * num_layers, reduce="sum")
    edge_rms = (power / count.clamp(min=1)).sqrt().clamp(min=eps)[group].unsqueeze(1)
    node_group = structure.node_batch * num_layers + (structure.node_layer - 1).clamp(min=0)
    has_bias = (~structure.is_input).to(x.dtype).unsqueeze(1)
    node_power = scatter(x.pow(2) * has_bias, node_group, 0,
                         dim_size=structure.num_graphs * num_layers, reduce="mean")
    node_rms = node_power.sqrt().clamp(min=eps)[node_group]
    w, b = edge_attr / edge_rms, x * has_bias / node_rms
    pad = x.new_zeros(x.size(0), width - 1)
    return (torch.cat([b, pad, b.abs(), pad], dim=1), torch.cat([w, w.abs()], dim=1))


def topk_per_layer(scores: Tensor, valid: Tensor, group: Tensor, counts: Tensor) -> Tensor:
    """``[E, S]`` bool: in each group (graph, layer) the ``counts[group]`` highest
    ``scores`` among the ``valid`` entries (ties broken by entry order)."""
    num_edges, width = scores.shape
    flat = scores.masked_fill(~valid, float("-inf")).reshape(-1)
    entry_group = group.repeat_interleave(width)
    order = torch.argsort(flat, descending=True, stable=True)
    order = order[torch.argsort(entry_group[order], stable=True)]
    sorted_group = entry_group[order]
    sizes = torch.bincount(sorted_group, minlength=counts.numel())
    starts = sizes.cumsum(0) - sizes
    rank = torch.arange(flat.numel(), device=flat.device) - starts[sorted_group]
    keep = torch.zeros_like(flat, dtype=torch.bool)
    keep[order] = rank < counts[sorted_group]
    return keep.view(num_edges, width) & valid


class TicketVAE(nn.Module):
    r"""Conditional VAE that predicts a sparse "winning ticket" mask of a
    network from its initialisation.

    The winning-ticket model of "Permutation Equivariant Neural
    Functionals" (Zhou et al., NeurIPS 2023, arXiv 2302.14040, section 5):
    encoder and decoder are stacks of equivariant NF layers
    (:class:`~nft_pyg.nn.conv.np_conv.NPConv` or
    :class:`~nft_pyg.nn.conv.hnp_conv.HNPConv`) conditioned on the
    initialisation :math:`\theta_0`, with one latent vector per weight:

    .. math::
        (\boldsymbol{\mu}, \log\boldsymbol{\sigma}^2) = \mathrm{Enc}(\theta_0, M),
        \quad \mathbf{z}_e = \boldsymbol{\mu}_e + \boldsymbol{\sigma}_e \odot
        \boldsymbol{\epsilon}_e, \quad
        \boldsymbol{\ell} = \mathrm{Dec}(\theta_0, \mathbf{z}),

    trained on :math:`\mathrm{BCE}(\boldsymbol{\ell}, M) + \beta\,
    \mathrm{KL}(q(\mathbf{z} \mid \theta_0, M) \,\|\, \mathcal{N}(0, I))`
    (both averaged per weight). A mask is generated from the prior, by
    default on the deterministic path :math:`\mathbf{z} = \mathbf{0}` (the
    prior mean), and is the top-:math:`k` of the logits in each weight
    layer of each network (:math:`k` given, e.g. IMP's count).

    Each stack is a per-layer linear input map
    (:class:`~nft_pyg.nn.conv.pointwise_conv.PointwiseConv`), ``num_nf_layers``
    NF layers with ReLUs and a per-layer linear output map. Weights enter as
    ``[w / r, |w| / r]`` (:func:`layer_rms_features`); the encoder adds the
    mask, the decoder the latent (zero on neurons).

    Equivariance: permuting the hidden neurons of :math:`\theta_0` (and of
    :math:`M`, and of the noise :math:`\boldsymbol{\epsilon}` if given)
    permutes the logits and the generated mask the same way; exactly on the
    deterministic path, and for sampled masks when the noise is permuted
    with the edges (:meth:`sample_noise` draws i.i.d. noise per edge, so the
    distribution of sampled masks is equivariant too). ``"np"`` is also
    equivariant to input / output permutations; ``"hnp"`` sees input and
    output positions (which pixel a weight reads matters for pruning).

    Args:
        num_layers (int): :math:`L`, weight layers of the networks.
        hidden_channels (int): channels of the NF layers.
        latent_channels (int): size of each weight's latent vector.
        num_nf_layers (int): NF layers in each of encoder and decoder.
        mode (str): ``"hnp"`` (default) or ``"np"``.
        num_inputs, num_outputs (int, optional): needed by ``"hnp"``.
        kernel_width (int): :math:`S` of the raw graphs (1 for MLPs).
        kernel_sizes (list[int], optional): :math:`S_l` per layer (default
            ``kernel_width`` each).

    Shapes:
        - **input:** raw graph(s) ``x`` :math:`(N, 1)`, ``edge_attr``
          :math:`(E, S)`; masks :math:`(E, S)` (bool or 0 / 1).
        - **output:** logits :math:`(E, S)` (padded entries
          :math:`-\infty`); latents :math:`(E, \text{latent\_channels})`.
    """

    def __init__(self, num_layers: int, hidden_channels: int = 32, latent_channels: int = 4,
                 num_nf_layers: int = 2, mode: str = "hnp", num_inputs: int | None = None,
                 num_outputs: int | None = None, kernel_width: int = 1,
                 kernel_sizes: Sequence[int] | None = None):
        super().__init__()
        where = type(self).__name__
        if mode not in TICKET_MODES:
            raise ValueError(f"{where}: mode must be one of {TICKET_MODES}, got {mode!r}")
        if mode == "hnp" and (num_inputs is None or num_outputs is None):
            raise ValueError(f"{where}: mode='hnp' needs num_inputs and num_outputs")
        for name, value in (("num_layers", num_layers), ("hidden_channels", hidden_channels),
                            ("latent_channels", latent_channels),
                            ("num_nf_layers", num_nf_layers), ("kernel_width", kernel_width)):
            if int(value) < 1:
                raise ValueError(f"{where}: {name} must be >= 1, got {value}")
        self.num_layers, self.mode = int(num_layers), mode
        self.hidden_channels, self.latent_channels = int(hidden_channels), int(latent_channels)
        self.num_nf_layers, self.kernel_width = int(num_nf_layers), int(kernel_width)
        self.num_inputs, self.num_outputs = num_inputs, num_outputs
        sizes = [self.kernel_width] * self.num_layers if kernel_sizes is None \
            else [int(s) for s in kernel_sizes]
        if len(sizes) != self.num_layers or any(not 1 <= s <= self.kernel_width for s in sizes):
            raise ValueError(f"{where}: kernel_sizes {kernel_sizes} do not fit num_layers="
                             f"{num_layers} and kernel_width={kernel_width}")
        self.kernel_sizes = sizes
        S, Z = self.kernel_width, self.latent_channels
        self.encoder = self._stack(3 * S, 2 * Z)
        self.decoder = self._stack(2 * S + Z, S)

    @classmethod
    def for_layout(cls, layout: Layout | str, **kwargs) -> TicketVAE:
        """A model sized for the networks of ``layout``."""
        return cls(**layout_kwargs(layout, kwargs))

    def _stack(self, in_channels: int, out_channels: int) -> WeightSpaceSequential:
        C, L = self.hidden_channels, self.num_layers
        layers: list[nn.Module] = [PointwiseConv(in_channels, C, L)]
        for _ in range(self.num_nf_layers):
            if self.mode == "np":
                layers.append(NPConv(C, C, L))
            else:
                layers.append(HNPConv(C, C, L, int(self.num_inputs), int(self.num_outputs)))
            layers.append(WeightSpaceActivation("relu"))
        layers.append(PointwiseConv(C, out_channels, L))
        return WeightSpaceSequential(*layers)

    def reset_parameters(self) -> None:
        self.encoder.reset_parameters()
        self.decoder.reset_parameters()

    # --- pieces -----------------------------------------------------------------
    def _inputs(self, graph) -> tuple[Tensor, Tensor]:
        where = type(self).__name__
        x, edge_attr = graph_attr(graph, "x", where), graph_attr(graph, "edge_attr", where)
        if x.dim() != 2 or x.size(1) != 1 or edge_attr.dim() != 2 \
                or edge_attr.size(1) != self.kernel_width:
            raise ValueError(f"{where}: expects a raw graph, x [N, 1] and edge_attr "
                             f"[E, {self.kernel_width}], got x {tuple(x.shape)} and edge_attr "
                             f"{tuple(edge_attr.shape)}")
        return layer_rms_features(x, edge_attr, graph, self.num_layers, self.kernel_sizes)

    def valid_entries(self, graph) -> Tensor:
        """``[E, S]`` bool: the real (unpadded) kernel entries of each edge."""
        edge_layer = graph_attr(graph, "edge_layer", type(self).__name__)
        sizes = torch.tensor(self.kernel_sizes, device=edge_layer.device)
        return (torch.arange(self.kernel_width, device=edge_layer.device)
                < sizes[edge_layer - 1].unsqueeze(1))

    def _mask_features(self, graph, mask: Tensor) -> Tensor:
        mask = mask.to(graph.edge_attr.dtype)
        if mask.dim() == 1:
            mask = mask.unsqueeze(1)
        if tuple(mask.shape) != tuple(graph.edge_attr.shape):
            raise ValueError(f"TicketVAE: mask has shape {tuple(mask.shape)}, expected "
                             f"{tuple(graph.edge_attr.shape)} (one entry per kernel entry)")
        return mask

    def encode(self, graph, mask: Tensor) -> tuple[Tensor, Tensor]:
        """``(mu, logvar)`` ``[E, latent_channels]`` of the posterior."""
        x, edge_attr = self._inputs(graph)
        mask = self._mask_features(graph, mask)
        x = torch.cat([x, x.new_zeros(x.size(0), self.kernel_width)], dim=1)
        _, edge_out = self.encoder(x, torch.cat([edge_attr, mask], dim=1), graph)
        mu, logvar = edge_out.split(self.latent_channels, dim=1)
        return mu, logvar.clamp(-10.0, 10.0)

    def decode(self, graph, z: Tensor) -> Tensor:
        """Mask logits ``[E, S]`` (padded entries ``-inf``) given latents ``[E, Z]``."""
        x, edge_attr = self._inputs(graph)
        x = torch.cat([x, x.new_zeros(x.size(0), self.latent_channels)], dim=1)
        _, logits = self.decoder(x, torch.cat([edge_attr, z.to(edge_attr.dtype)], dim=1), graph)
        return logits.masked_fill(~self.valid_entries(graph), float("-inf"))

    def forward(self, graph, mask: Tensor, noise: Tensor | None = None
                ) -> tuple[Tensor, Tensor, Tensor]:
        """``(logits, mu, logvar)``; ``z = mu + sigma * noise`` (noise ``N(0, I)``
        drawn here if not given; ``torch.zeros`` gives the posterior mean)."""
        mu, logvar = self.encode(graph, mask)
        if noise is None:
            noise = torch.randn_like(mu)
        return self.decode(graph, mu + (0.5 * logvar).exp() * noise), mu, logvar

    def loss(self, graph, mask: Tensor, beta: float = 1.0,
             pos_weight: float | None = None) -> dict[str, Tensor]:
        """``{"loss", "bce", "kl"}``: the negative ELBO per weight (``beta``-weighted KL)."""
        target = self._mask_features(graph, mask)
        logits, mu, logvar = self(graph, target)
        valid = self.valid_entries(graph)
        weight = None if pos_weight is None else torch.tensor(pos_weight, dtype=logits.dtype)
        bce = F.binary_cross_entropy_with_logits(logits[valid], target[valid],
                                                 pos_weight=weight)
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(1).mean() / valid.sum(1) \
            .to(mu.dtype).mean()
        return {"loss": bce + beta * kl, "bce": bce, "kl": kl}

    # --- generation ----------------------------------------------------------------
    def sample_noise(self, graph, generator: torch.Generator | None = None) -> Tensor:
        """i.i.d. ``N(0, I)`` latents ``[E, latent_channels]`` for :meth:`sample_logits`."""
        edge_attr = graph_attr(graph, "edge_attr", type(self).__name__)
        return torch.randn(edge_attr.size(0), self.latent_channels, generator=generator,
                           dtype=edge_attr.dtype).to(edge_attr.device)

    def sample_logits(self, graph, noise: Tensor | None = None) -> Tensor:
        """Logits ``[E, S]`` from the prior: ``z = noise``, or ``z = 0`` (the
        deterministic path) when ``noise`` is ``None``."""
        if noise is None:
            noise = graph.edge_attr.new_zeros(graph.edge_attr.size(0), self.latent_channels)
        return self.decode(graph, noise)

    def keep_counts(self, graph, reference: Tensor) -> Tensor:
        """``[B * L]`` kept entries of ``reference`` (``[E, S]``) per (graph, layer)."""
        structure = WeightGraphIndex.from_data(graph, type(self).__name__)
        group = structure.edge_batch * self.num_layers + structure.edge_layer - 1
        reference = self._mask_features(graph, reference)
        return scatter(reference.sum(1), group, 0,
                       dim_size=structure.num_graphs * self.num_layers,
                       reduce="sum").round().long()

    def predict_mask(self, graph, counts: Tensor | None = None, noise: Tensor | None = None,
                     logits: Tensor | None = None) -> Tensor:
        """Generated mask ``[E, S]`` (bool): the top-``counts`` logits of each
        weight layer of each network.

        Args:
            graph: raw graph(s) of the initialisations.
            counts (Tensor, optional): ``[B, L]`` (or ``[B * L]``) entries to
                keep per (graph, layer); default: those of ``graph.ticket_mask``
                (the IMP ticket's counts).
            noise (Tensor, optional): prior latents ``[E, Z]``; default the
                deterministic path ``z = 0``.
            logits (Tensor, optional): precomputed :meth:`sample_logits`.
        """
        if counts is None:
            counts = self.keep_counts(graph, graph_attr(graph, "ticket_mask",
                                                        type(self).__name__))
        if logits is None:
            logits = self.sample_logits(graph, noise)
        structure = WeightGraphIndex.from_data(graph, type(self).__name__)
        group = structure.edge_batch * self.num_layers + structure.edge_layer - 1
        return topk_per_layer(logits, self.valid_entries(graph), group,
                              counts.reshape(-1).to(group.device))

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(mode={self.mode!r}, num_layers={self.num_layers}, "
                f"hidden_channels={self.hidden_channels}, "
                f"latent_channels={self.latent_channels}, num_nf_layers={self.num_nf_layers})")


__all__ = ["TicketVAE", "TICKET_MODES", "layer_rms_features", "topk_per_layer"]
