r"""Neural functional networks (NFN): invariant models and equivariant editors
of raw neuron graphs, built from the NP, HNP and pointwise layers."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ...graph.layout import Layout
from ..conv.hnp_conv import HNPConv
from ..conv.np_conv import NPConv
from ..conv.pointwise_conv import PointwiseConv
from ..encodings import GaussianFourierFeatures, IOPositionEncoding
from ..kernel_projection import KernelProjection, KernelReadout
from ..norm import PoolNorm
from ..pointwise import WeightSpaceActivation, WeightSpaceDropout, WeightSpaceSequential, graph_attr
from ..pool.hnp_pool import HNPPool
from ..pool.np_pool import NPPool
from ..pool.np_stat_pool import NPStatPool
from ..statistics import NUM_STATS, layer_statistics
from ..structure import WeightGraphIndex

#: the NF layer of each mode: all neurons permutable, hidden ones only, pointwise ablation
MODES = ("np", "hnp", "pt")
#: invariant pools of modes "np" / "pt": layer means, or layer means, variances and quantiles
POOLS = ("mean", "stats")


def mlp_head(in_channels: int, hidden: Sequence[int], out_channels: int,
             dropout: float = 0.0) -> nn.Sequential:
    """``Linear -> ReLU -> Dropout`` per hidden width, then a last ``Linear``."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_channels, width), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        in_channels = width
    layers.append(nn.Linear(in_channels, out_channels))
    return nn.Sequential(*layers)


def hidden_widths(value: int | Sequence[int], where: str) -> list[int]:
    """``value`` (one width or several) as a list of positive widths."""
    widths = [int(value)] if isinstance(value, int) else [int(v) for v in value]
    if any(w < 1 for w in widths):
        raise ValueError(f"{where}: hidden widths must be positive, got {value}")
    return widths


def fold_bias(x: Tensor, width: int) -> Tensor:
    """Raw biases ``[N, 1]`` as ``[N, S]`` features: bias in column 0, zeros after."""
    return torch.cat([x, x.new_zeros(x.size(0), width - 1)], dim=1)


class _NFNBody(nn.Module):
    """Encoder and NF layers shared by :class:`NFN` and :class:`NFNEditor`."""

    def __init__(self, where: str, mode: str, num_layers: int, hidden_channels: int,
                 num_nf_layers: int, num_inputs: int | None, num_outputs: int | None,
                 kernel_width: int, kernel_sizes: Sequence[int] | None,
                 io_embedding: bool, fourier_features: int | None, fourier_sigma: float,
                 dropout: float, final_activation: bool):
        super().__init__()
        self.where = where
        if mode not in MODES:
            raise ValueError(f"{where}: mode must be one of {MODES}, got {mode!r}")
        for name, value in (("num_layers", num_layers), ("hidden_channels", hidden_channels),
                            ("num_nf_layers", num_nf_layers), ("kernel_width", kernel_width)):
            if int(value) < 1:
                raise ValueError(f"{where}: {name} must be >= 1, got {value}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"{where}: dropout must be in [0, 1), got {dropout}")
        needs_io = mode == "hnp" or io_embedding
        if needs_io and (num_inputs is None or num_outputs is None):
            raise ValueError(f"{where}: mode={mode!r}"
                             f"{' with io_embedding=True' if io_embedding else ''} needs "
                             f"num_inputs and num_outputs (got {num_inputs}, {num_outputs})")
        if io_embedding and mode == "hnp":
            raise ValueError(f"{where}: io_embedding is for modes 'np' and 'pt'; 'hnp' "
                             "already tells input and output neurons apart")
        self.mode, self.num_layers = mode, int(num_layers)
        self.hidden_channels, self.kernel_width = int(hidden_channels), int(kernel_width)
        self.num_inputs = None if num_inputs is None else int(num_inputs)
        self.num_outputs = None if num_outputs is None else int(num_outputs)
        self.io_embedding, self.fourier_features = bool(io_embedding), fourier_features
        sizes = list(kernel_sizes) if kernel_sizes is not None else self.num_layers
        if kernel_sizes is not None and len(kernel_sizes) != self.num_layers:
            raise ValueError(f"{where}: {len(kernel_sizes)} kernel_sizes for "
                             f"num_layers={self.num_layers}")
        L, C = self.num_layers, self.hidden_channels

        encoder: list[nn.Module] = []
        if fourier_features is None:
            encoder.append(KernelProjection(sizes, self.kernel_width, C))
        else:
            fourier = GaussianFourierFeatures(self.kernel_width, int(fourier_features),
                                              sigma=fourier_sigma)
            encoder += [fourier, PointwiseConv(fourier.out_channels, C, L)]
        if io_embedding:
            encoder.append(IOPositionEncoding(C, self.num_inputs, self.num_outputs))
        self.encoder = WeightSpaceSequential(*encoder)

        layers: list[nn.Module] = []
        for index in range(int(num_nf_layers)):
            layers.append(self._nf_layer(C, C))
            if final_activation or index < num_nf_layers - 1:
                layers.append(WeightSpaceActivation("relu"))
                if dropout > 0:
                    layers.append(WeightSpaceDropout(dropout))
        self.layers = WeightSpaceSequential(*layers)

    def _nf_layer(self, in_channels: int, out_channels: int) -> nn.Module:
        if self.mode == "np":
            return NPConv(in_channels, out_channels, self.num_layers)
        if self.mode == "hnp":
            return HNPConv(in_channels, out_channels, self.num_layers, self.num_inputs,
                           self.num_outputs)
        return PointwiseConv(in_channels, out_channels, self.num_layers)

    def forward(self, graph, index: WeightGraphIndex | None = None) -> tuple[Tensor, Tensor]:
        where = self.where
        if index is None:
            index = WeightGraphIndex.from_data(graph, where)
        x, edge_attr = graph_attr(graph, "x", where), graph_attr(graph, "edge_attr", where)
        if self.fourier_features is not None:
            # the Fourier map acts per channel: biases get the kernel's S columns
            if x.dim() != 2 or x.size(1) != 1 or edge_attr.dim() != 2 \
                    or edge_attr.size(1) != self.kernel_width:
                raise ValueError(f"{where}: expects a raw graph, x [N, 1] and edge_attr "
                                 f"[E, {self.kernel_width}] (kernel_width="
                                 f"{self.kernel_width}), got x {tuple(x.shape)} and "
                                 f"edge_attr {tuple(edge_attr.shape)}")
            x = fold_bias(x, self.kernel_width)
        x, edge_attr = self.encoder(x, edge_attr, index)
        return self.layers(x, edge_attr, index)


def layout_kwargs(layout: Layout | str, kwargs: dict) -> dict:
    """Sizes a weight-space model needs, read from ``layout``; ``kwargs`` win."""
    layout = Layout.coerce(layout)
    sizes = layout.neuron_layer_sizes
    filled = dict(num_layers=layout.num_layers, kernel_width=layout.kernel_width,
                  kernel_sizes=[layer.positions for layer in layout.weight_layers()],
                  num_inputs=sizes[0], num_outputs=sizes[-1])
    filled.update(kwargs)
    return filled


class NFN(nn.Module):
    r"""An invariant neural functional: raw neuron graphs in, one vector per
    network out.

    The invariant NFN of "Permutation Equivariant Neural Functionals" (Zhou
    et al., NeurIPS 2023, arXiv 2302.14040): an encoder of the raw weights,
    a stack of equivariant weight-space layers with ReLUs, an invariant pool
    and an MLP,

    .. math::
        f(\mathcal{G}) = \mathrm{MLP}\Big(\mathrm{Pool}\big(\sigma \circ
        \Phi_K \circ \cdots \circ \sigma \circ \Phi_1 \circ
        \mathrm{Enc}(\mathbf{X}, \mathbf{H})\big)\Big).

    - :math:`\mathrm{Enc}`: :class:`~nft_pyg.nn.kernel_projection.KernelProjection`
      (a linear map per weight layer from the raw kernel :math:`\mathbb{R}^{S_l}`
      and the raw bias to ``hidden_channels``), or with ``fourier_features=F``
      :class:`~nft_pyg.nn.encodings.GaussianFourierFeatures` of every raw entry
      (the bias zero padded to the kernel width) then a per-layer linear map
      (:class:`~nft_pyg.nn.conv.pointwise_conv.PointwiseConv`). With
      ``io_embedding=True`` (modes ``"np"``, ``"pt"``) learned input /
      output position embeddings are added
      (:class:`~nft_pyg.nn.encodings.IOPositionEncoding`, the paper's
      "NP + IO encoding").
    - :math:`\Phi_k`: :class:`~nft_pyg.nn.conv.np_conv.NPConv` (``mode="np"``),
      :class:`~nft_pyg.nn.conv.hnp_conv.HNPConv` (``"hnp"``) or
      :class:`~nft_pyg.nn.conv.pointwise_conv.PointwiseConv` (``"pt"``, the
      paper's pointwise ablation: no coupling between weights); ReLU on edge
      and node features after each, then optional dropout.
    - :math:`\mathrm{Pool}`: :class:`~nft_pyg.nn.pool.np_pool.NPPool` (np, pt;
      ``pool="mean"``), :class:`~nft_pyg.nn.pool.np_stat_pool.NPStatPool`
      (np, pt; ``pool="stats"``: per-layer mean, variance and quantiles of
      every channel) or :class:`~nft_pyg.nn.pool.hnp_pool.HNPPool` (hnp).

    Symmetry of :math:`f`: ``"np"`` and ``"pt"`` are invariant to every
    relabelling of the neurons of every layer (inputs and outputs included)
    unless ``io_embedding=True``, which keeps only the hidden-neuron
    invariance; ``"hnp"`` is invariant to hidden-neuron permutations and
    sees input / output positions. ``"np"`` and ``"pt"`` take batches mixing
    architectures (up to ``num_layers`` weight layers); ``"hnp"`` needs every
    network to have exactly ``num_layers`` weight layers, ``num_inputs``
    inputs and ``num_outputs`` outputs (hidden widths are free).

    Args:
        mode (str): ``"np"``, ``"hnp"`` or ``"pt"``.
        num_layers (int): :math:`L`, weight layers (the most, for np / pt).
        hidden_channels (int): channels of the weight-space features.
        out_channels (int): size of the output vector.
        num_nf_layers (int): number of NF layers :math:`K` (default 2).
        num_inputs (int, optional): input neurons (needed by ``"hnp"`` and
            ``io_embedding``).
        num_outputs (int, optional): output neurons (same).
        kernel_width (int): :math:`S`, the width of the raw ``edge_attr``
            (1 for MLPs; ``kh * kw`` for 2-D convs).
        kernel_sizes (list[int], optional): :math:`S_l` of each weight layer
            (default: every layer ``kernel_width``); :meth:`for_layout` reads
            them off a layout.
        io_embedding (bool): add IO position embeddings (default ``False``).
        fourier_features (int, optional): number of Gaussian Fourier
            frequencies of the encoder (default: linear projection).
        fourier_sigma (float): their standard deviation (default 3.0).
        dropout (float): dropout after each NF layer and in the head.
        head_hidden (int or list[int]): hidden widths of the MLP head
            (default 256).
        pool_norm (bool): standardise every pooled feature over the batch
            (:class:`~nft_pyg.nn.norm.PoolNorm`, a batch norm) before the
            head (default ``False``).
        pool (str): ``"mean"`` (default) or ``"stats"``, the invariant pool
            of modes ``"np"`` / ``"pt"``; ``"hnp"`` has its own.
        append_stats (bool): append StatNN's per-layer statistics of the
            raw weights and biases
            (:func:`~nft_pyg.nn.statistics.layer_statistics`, :math:`14 L`
            numbers) to the pooled vector before the head (default
            ``False``): the model then sees what StatNN sees, and whatever
            its NF layers add on top.

    Shapes:
        - **input:** a raw :class:`~nft_pyg.NeuronGraph` or a ``Batch`` of
          them: ``x`` :math:`(N, 1)`, ``edge_attr`` :math:`(E, S)`.
        - **output:** :math:`(B, \text{out\_channels})`.
    """

    def __init__(self, mode: str, num_layers: int, hidden_channels: int, out_channels: int,
                 num_nf_layers: int = 2, num_inputs: int | None = None,
                 num_outputs: int | None = None, kernel_width: int = 1,
                 kernel_sizes: Sequence[int] | None = None, io_embedding: bool = False,
                 fourier_features: int | None = None, fourier_sigma: float = 3.0,
                 dropout: float = 0.0, head_hidden: int | Sequence[int] = 256,
                 pool_norm: bool = False, pool: str = "mean", append_stats: bool = False):
        super().__init__()
        if int(out_channels) < 1:
            raise ValueError(f"NFN: out_channels must be >= 1, got {out_channels}")
        if pool not in POOLS:
            raise ValueError(f"NFN: pool must be one of {POOLS}, got {pool!r}")
        if pool != "mean" and mode == "hnp":
            raise ValueError(f"NFN: pool={pool!r} is for modes 'np' and 'pt'; mode 'hnp' "
                             "pools with HNPPool")
        self.body = _NFNBody(type(self).__name__, mode, num_layers, hidden_channels,
                             num_nf_layers, num_inputs, num_outputs, kernel_width,
                             kernel_sizes, io_embedding, fourier_features, fourier_sigma,
                             dropout, final_activation=True)
        body = self.body
        if mode == "hnp":
            self.pool = HNPPool(body.hidden_channels, body.num_layers, body.num_inputs,
                                body.num_outputs)
        elif pool == "stats":
            self.pool = NPStatPool(body.hidden_channels, body.num_layers)
        else:
            self.pool = NPPool(body.hidden_channels, body.num_layers)
        self.out_channels = int(out_channels)
        self.append_stats = bool(append_stats)
        pooled = self.pool.out_channels + (2 * NUM_STATS * body.num_layers
                                           if self.append_stats else 0)
        self.head = mlp_head(pooled, hidden_widths(head_hidden, "NFN"), self.out_channels,
                             dropout)
        if pool_norm:
            self.head.insert(0, PoolNorm(pooled))

    @classmethod
    def for_layout(cls, layout: Layout | str, mode: str, hidden_channels: int,
                   out_channels: int, **kwargs) -> NFN:
        """An NFN sized for the networks of ``layout`` (depth, kernel sizes, IO sizes)."""
        return cls(mode=mode, hidden_channels=hidden_channels, out_channels=out_channels,
                   **layout_kwargs(layout, kwargs))

    @property
    def mode(self) -> str:
        return self.body.mode

    def reset_parameters(self) -> None:
        for module in self.modules():
            if module is not self and hasattr(module, "reset_parameters"):
                module.reset_parameters()

    def forward(self, graph, index: WeightGraphIndex | None = None) -> Tensor:
        """``[B, out_channels]``; ``index``: the batch's
        :class:`~nft_pyg.nn.structure.WeightGraphIndex` (built here if not given)."""
        if index is None:
            index = WeightGraphIndex.from_data(graph, "NFN")
        x, edge_attr = self.body(graph, index)
        pooled = self.pool(x, edge_attr, index)
        if self.append_stats:
            stats = layer_statistics(graph, self.body.num_layers, "NFN")
            pooled = torch.cat([pooled, stats.flatten(1).to(pooled.dtype)], dim=1)
        return self.head(pooled)

    def __repr__(self) -> str:
        body = self.body
        return (f"{type(self).__name__}(mode={body.mode!r}, num_layers={body.num_layers}, "
                f"hidden_channels={body.hidden_channels}, out_channels={self.out_channels}, "
                f"num_nf_layers={sum(1 for m in body.layers if hasattr(m, 'propagate'))}"
                f"{', pool=' + repr('stats') if isinstance(self.pool, NPStatPool) else ''}"
                f"{', append_stats=True' if self.append_stats else ''})")


class NFNEditor(nn.Module):
    r"""An equivariant neural functional that edits networks: raw neuron
    graphs in, a raw-format weight delta out.

    The equivariant NFN of "Permutation Equivariant Neural Functionals"
    (Zhou et al., NeurIPS 2023, arXiv 2302.14040), as used there to edit
    networks (e.g. INR stylisation): the body of :class:`NFN` (encoder, NF
    layers with ReLUs between them) and, instead of a pool, a per-layer
    linear read-out (:class:`~nft_pyg.nn.kernel_projection.KernelReadout`)
    to one number per bias and :math:`S_l` per kernel,

    .. math::
        \Delta(\mathcal{G}) = \mathrm{Readout}\big(\Phi_K \circ \sigma \circ
        \cdots \circ \sigma \circ \Phi_1 \circ \mathrm{Enc}(\mathbf{X},
        \mathbf{H})\big), \qquad
        \mathrm{edit}(\mathcal{G}) = \mathcal{G} + s\,\Delta(\mathcal{G}).

    :math:`\Delta` is zero on input neurons, on padded kernel positions and
    on the biases of bias-free layers, so the edited graph is a valid raw
    graph that :func:`nft_pyg.to_module` turns back into a network.
    Permuting the neurons of the input network permutes :math:`\Delta` the
    same way (all neurons for ``"np"`` / ``"pt"``, hidden ones for
    ``"hnp"`` or with ``io_embedding``).

    Initialisation: the read-out's parameters are its default init times
    ``init_scale`` (default ``1e-3``), so a fresh editor returns a network
    close to its input (the edit starts near the identity) while every
    parameter still gets a gradient. :meth:`NFNEditor.reset_parameters`
    does the same.

    ``mode``, ``num_layers``, ``hidden_channels``, ``num_nf_layers``,
    ``num_inputs``, ``num_outputs``, ``kernel_width``, ``kernel_sizes``,
    ``io_embedding``, ``fourier_features``, ``fourier_sigma`` and ``dropout``
    are as in :class:`NFN`.

    Args:
        bias (bool or list[bool]): whether each weight layer of the edited
            networks has a bias (default ``True``); :meth:`for_layout` reads
            it off a layout.
        init_scale (float): scale of the read-out at initialisation.

    Shapes:
        - **input:** raw graph(s): ``x`` :math:`(N, 1)`, ``edge_attr``
          :math:`(E, S)`.
        - **output:** deltas :math:`(N, 1)`, :math:`(E, S)`.
    """

    def __init__(self, mode: str, num_layers: int, hidden_channels: int,
                 num_nf_layers: int = 2, num_inputs: int | None = None,
                 num_outputs: int | None = None, kernel_width: int = 1,
                 kernel_sizes: Sequence[int] | None = None, io_embedding: bool = False,
                 fourier_features: int | None = None, fourier_sigma: float = 3.0,
                 dropout: float = 0.0, bias: bool | Sequence[bool] = True,
                 init_scale: float = 1e-3):
        super().__init__()
        self.body = _NFNBody(type(self).__name__, mode, num_layers, hidden_channels,
                             num_nf_layers, num_inputs, num_outputs, kernel_width,
                             kernel_sizes, io_embedding, fourier_features, fourier_sigma,
                             dropout, final_activation=False)
        sizes = list(kernel_sizes) if kernel_sizes is not None else int(num_layers)
        self.readout = KernelReadout(hidden_channels, sizes, kernel_width, bias=bias)
        self.init_scale = float(init_scale)
        self._scale_readout()

    @classmethod
    def for_layout(cls, layout: Layout | str, mode: str, hidden_channels: int,
                   **kwargs) -> NFNEditor:
        """An editor sized for ``layout`` (depth, kernel sizes, biases, IO sizes)."""
        layout = Layout.coerce(layout)
        kwargs.setdefault("bias", [layer.bias for layer in layout.weight_layers()])
        return cls(mode=mode, hidden_channels=hidden_channels, **layout_kwargs(layout, kwargs))

    @property
    def mode(self) -> str:
        return self.body.mode

    @torch.no_grad()
    def _scale_readout(self) -> None:
        for param in self.readout.parameters():
            param.mul_(self.init_scale)

    def reset_parameters(self) -> None:
        for module in self.modules():
            if module is not self and hasattr(module, "reset_parameters"):
                module.reset_parameters()
        self._scale_readout()

    def forward(self, graph, index: WeightGraphIndex | None = None) -> tuple[Tensor, Tensor]:
        """The raw delta ``(x_delta [N, 1], edge_delta [E, S])`` of ``graph`` (``index``:
        its :class:`~nft_pyg.nn.structure.WeightGraphIndex`, built here if not given)."""
        if index is None:
            index = WeightGraphIndex.from_data(graph, "NFNEditor")
        x, edge_attr = self.body(graph, index)
        return self.readout(x, edge_attr, index)   # it checks the index's layouts

    def edit(self, graph, scale: float = 1.0):
        """A copy of the raw ``graph`` (or batch) with ``scale`` times the delta added."""
        x_delta, edge_delta = self(graph)
        edited = graph.clone()
        edited.x = graph.x + scale * x_delta.to(graph.x.dtype)
        edited.edge_attr = graph.edge_attr + scale * edge_delta.to(graph.edge_attr.dtype)
        return edited

    def __repr__(self) -> str:
        body = self.body
        return (f"{type(self).__name__}(mode={body.mode!r}, num_layers={body.num_layers}, "
                f"hidden_channels={body.hidden_channels}, init_scale={self.init_scale})")


__all__ = ["NFN", "NFNEditor", "MODES", "mlp_head", "hidden_widths"]
