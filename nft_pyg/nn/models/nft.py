r"""The Neural Functional Transformer: input encodings, NFT blocks, and an
invariant or equivariant head, on raw neuron graphs."""
from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from ...graph.layout import Layout
from ..encodings import GaussianFourierFeatures, IOPositionEncoding, LayerEncoding
from ..kernel_projection import KernelProjection, KernelReadout
from ..nft_block import LatentCrossAttention, NFTBlock
from ..norm import PoolNorm, WeightSpaceLayerNorm
from ..pointwise import WeightSpaceLinear, WeightSpaceSequential
from ..pool.np_pool import NPPool
from ..structure import WeightGraphIndex

TASKS = ("invariant", "equivariant")
POOLS = ("mean", "attention")


def layout_options(layout: Layout | str) -> dict:
    """The architecture options of :class:`NFT` / :class:`NFTEncoder` read off a
    layout: ``num_layers``, ``kernel_width``, ``kernel_sizes``, ``num_inputs``,
    ``num_outputs`` and ``layer_bias``."""
    layout = Layout.coerce(layout)
    layers = layout.weight_layers()
    sizes = layout.neuron_layer_sizes
    return {"num_layers": len(layers), "kernel_width": layout.kernel_width,
            "kernel_sizes": [layer.positions for layer in layers], "num_inputs": sizes[0],
            "num_outputs": sizes[-1], "layer_bias": [layer.bias for layer in layers]}


class NFTEncoder(nn.Module):
    r"""The trunk of the Neural Functional Transformer (Zhou et al., "Neural
    Functional Transformers", NeurIPS 2023, arXiv 2305.13546): raw weights
    to equivariant :math:`C`-channel features of every weight and bias.

    .. math::
        \mathbf{Z}^{(0)} = \mathrm{IO}\big(\mathrm{Layer}(\mathrm{Embed}(
            \mathbf{X}, \mathbf{H}))\big), \qquad
        \mathbf{Z}^{(k)} = \mathrm{NFTBlock}_k(\mathbf{Z}^{(k-1)}), \qquad
        \mathbf{Z} = \mathrm{LN}(\mathbf{Z}^{(K)}).

    **Embed.** A raw graph (``in_channels=None``: ``x`` ``[N, 1]`` biases,
    ``edge_attr`` ``[E, S]`` kernels) with ``kernel_width`` :math:`S = 1`
    (MLPs, SIRENs) goes through
    :class:`~nft_pyg.nn.encodings.GaussianFourierFeatures` (``F``
    frequencies per scalar) and a shared linear map to :math:`C`; with
    ``fourier_features=0``, or for a CNN graph (:math:`S > 1`), a per-layer
    linear map of the kernel (:class:`~nft_pyg.nn.kernel_projection.KernelProjection`)
    instead. A feature graph (``in_channels`` :math:`C_{in}`, e.g. a
    folded CNN or precomputed features) gets Fourier features of every
    channel (or nothing if ``fourier_features=0``) and a shared linear map.

    **Layer.** :class:`~nft_pyg.nn.encodings.LayerEncoding` tells the
    layers apart (``layer_encoding=None`` drops it).

    **IO.** With ``num_inputs`` and ``num_outputs``,
    :class:`~nft_pyg.nn.encodings.IOPositionEncoding` adds learned
    embeddings of input and output positions: the model is then equivariant
    to hidden-neuron permutations only (HNP-style) and sees the order of
    input and output neurons. Without them every neuron, input and output
    included, is treated as permutable (NP-style).

    Args:
        in_channels (int, optional): channels of a feature graph; :obj:`None`
            for a raw graph.
        hidden_channels (int): :math:`C`.
        num_layers (int): the most weight layers :math:`L` a graph may have.
        num_blocks (int): number of :class:`~nft_pyg.nn.nft_block.NFTBlock` s.
        heads (int): attention heads.
        num_inputs, num_outputs (int, optional): the most input / output
            neurons (both or neither: IO position encodings).
        kernel_width (int): :math:`S` of raw graphs. (default: :obj:`1`)
        kernel_sizes (list[int], optional): kernel positions of each weight
            layer of a raw CNN graph (default: ``kernel_width`` each).
        fourier_features (int): :math:`F` (:obj:`0`: none). (default: :obj:`16`)
        sigma (float): standard deviation of the Fourier frequencies.
            (default: :obj:`10.`)
        layer_encoding (str, optional): ``"learned"``, ``"sinusoidal"`` or
            :obj:`None`. (default: :obj:`"learned"`)
        dropout (float): dropout inside the blocks. (default: :obj:`0.`)
        ff_channels (int, optional): feed-forward width of the blocks.

    Shapes:
        - **input:** a :class:`~nft_pyg.NeuronGraph` or a batch of them
          (features taken from ``graph.x`` / ``graph.edge_attr`` unless given);
          optionally its :class:`~nft_pyg.nn.structure.WeightGraphIndex`
          (``index=``; built for the call if not given).
        - **output:** :math:`(N, C)` (zero on input neurons), :math:`(E, C)`.
    """

    def __init__(self, in_channels: int | None, hidden_channels: int, num_layers: int,
                 num_blocks: int = 2, heads: int = 1, num_inputs: int | None = None,
                 num_outputs: int | None = None, kernel_width: int = 1,
                 kernel_sizes: Sequence[int] | None = None, fourier_features: int = 16,
                 sigma: float = 10.0, layer_encoding: str | None = "learned",
                 dropout: float = 0.0, ff_channels: int | None = None):
        super().__init__()
        where = type(self).__name__
        if min(int(hidden_channels), int(num_layers)) < 1 or int(num_blocks) < 0:
            raise ValueError(f"{where}: hidden_channels and num_layers must be positive and "
                             f"num_blocks >= 0, got {hidden_channels}, {num_layers}, "
                             f"{num_blocks}")
        if (num_inputs is None) != (num_outputs is None):
            raise ValueError(f"{where}: IO position encodings need both num_inputs and "
                             f"num_outputs (got {num_inputs} and {num_outputs})")
        if int(fourier_features) < 0:
            raise ValueError(f"{where}: fourier_features must be >= 0, got {fourier_features}")
        self.in_channels = None if in_channels is None else int(in_channels)
        self.hidden_channels, self.num_layers = int(hidden_channels), int(num_layers)
        self.kernel_width = int(kernel_width)
        self.kernel_sizes = ([self.kernel_width] * self.num_layers if kernel_sizes is None
                             else [int(size) for size in kernel_sizes])
        if len(self.kernel_sizes) != self.num_layers:
            raise ValueError(f"{where}: {len(self.kernel_sizes)} kernel sizes for "
                             f"num_layers={self.num_layers}")
        self.fourier_features = int(fourier_features)
        C = self.hidden_channels
        if self.in_channels is None and (self.kernel_width > 1 or self.fourier_features == 0):
            self.embed = KernelProjection(self.kernel_sizes, self.kernel_width, C)
        else:
            channels = 1 if self.in_channels is None else self.in_channels
            if self.fourier_features:
                fourier = GaussianFourierFeatures(channels, self.fourier_features, sigma)
                self.embed = WeightSpaceSequential(
                    fourier, WeightSpaceLinear(fourier.out_channels, C))
            else:
                self.embed = WeightSpaceLinear(channels, C)
        self.layer_encoding = (None if layer_encoding is None
                               else LayerEncoding(C, self.num_layers, layer_encoding))
        self.io_encoding = (None if num_inputs is None
                            else IOPositionEncoding(C, num_inputs, num_outputs))
        self.blocks = nn.ModuleList([
            NFTBlock(C, heads=heads, ff_channels=ff_channels, dropout=dropout,
                     num_layers=self.num_layers) for _ in range(int(num_blocks))])
        self.norm = WeightSpaceLayerNorm(C)

    @property
    def num_inputs(self) -> int | None:
        return None if self.io_encoding is None else self.io_encoding.num_inputs

    @property
    def num_outputs(self) -> int | None:
        return None if self.io_encoding is None else self.io_encoding.num_outputs

    def reset_parameters(self) -> None:
        for module in (self.embed, self.layer_encoding, self.io_encoding, *self.blocks,
                       self.norm):
            if module is not None:
                module.reset_parameters()

    def _input(self, graph, x: Tensor | None, edge_attr: Tensor | None,
               index: WeightGraphIndex):
        where = type(self).__name__
        x = graph.x if x is None else x
        edge_attr = graph.edge_attr if edge_attr is None else edge_attr
        if x is None or edge_attr is None:
            raise ValueError(f"{where}: the graph has no x / edge_attr")
        if self.in_channels is None:
            if x.dim() != 2 or x.size(-1) != 1 or edge_attr.dim() != 2 or \
                    edge_attr.size(-1) != self.kernel_width:
                raise ValueError(
                    f"{where}: built for raw graphs (x [N, 1], edge_attr [E, "
                    f"{self.kernel_width}] with kernel_width={self.kernel_width}), got x "
                    f"{tuple(x.shape)} and edge_attr {tuple(edge_attr.shape)}")
        elif x.size(-1) != self.in_channels or edge_attr.size(-1) != self.in_channels:
            raise ValueError(f"{where}: built for in_channels={self.in_channels}, got x "
                             f"{tuple(x.shape)} and edge_attr {tuple(edge_attr.shape)}")
        layers = index.num_layers
        if layers > self.num_layers:
            raise ValueError(f"{where}: built for num_layers={self.num_layers}, the graph has "
                             f"a network with {layers} weight layers")
        return x, edge_attr

    def forward(self, graph, x: Tensor | None = None, edge_attr: Tensor | None = None,
                index: WeightGraphIndex | None = None) -> tuple[Tensor, Tensor]:
        if index is None:
            index = WeightGraphIndex.from_data(graph, type(self).__name__)
        x, edge_attr = self._input(graph, x, edge_attr, index)
        x, edge_attr = self.embed(x, edge_attr, index)
        if self.layer_encoding is not None:
            x, edge_attr = self.layer_encoding(x, edge_attr, index)
        if self.io_encoding is not None:
            x, edge_attr = self.io_encoding(x, edge_attr, index)
        for block in self.blocks:
            x, edge_attr = block(x, index.edge_index, edge_attr, index)
        return self.norm(x, edge_attr, index)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.in_channels}, {self.hidden_channels}, "
                f"num_layers={self.num_layers}, num_blocks={len(self.blocks)}, "
                f"io={self.io_encoding is not None})")


class NFT(nn.Module):
    r"""The Neural Functional Transformer of `"Neural Functional Transformers"
    <https://arxiv.org/abs/2305.13546>`_ (Zhou et al., NeurIPS 2023) on
    neuron graphs, for classification / regression of networks (invariant)
    and for editing them (equivariant).

    The trunk is :class:`NFTEncoder` (input encodings, ``num_blocks``
    :class:`~nft_pyg.nn.nft_block.NFTBlock` s, a final layer norm), giving
    features :math:`\mathbf{Z} = (\mathbf{X}, \mathbf{H})`. Then

    - ``task="invariant"``, ``pool="mean"``: the NP pool of per-layer means
      (:class:`~nft_pyg.nn.pool.np_pool.NPPool`, :math:`2LC` numbers; layers
      a network lacks give zeros) and an MLP,

      .. math::
          \mathbf{y} = \mathrm{MLP}\big([\overline{\mathbf{H}}_{1}, \ldots,
          \overline{\mathbf{H}}_{L}, \overline{\mathbf{X}}_{1}, \ldots,
          \overline{\mathbf{X}}_{L}]\big) \in \mathbb{R}^{C_{out}};

    - ``task="invariant"``, ``pool="attention"``: cross-attention pooling
      of ``num_latents`` learned queries over every weight and bias
      (:class:`~nft_pyg.nn.nft_block.LatentCrossAttention`), the latents
      flattened into the MLP;
    - ``task="equivariant"``: a per-layer linear read-out to the raw graph
      format (:class:`~nft_pyg.nn.kernel_projection.KernelReadout`), a
      weight-space delta ``(x_delta [N, 1], edge_delta [E, S])`` whose
      padded kernel positions, input neurons and biases of bias-free layers
      are zero; :meth:`edit` adds it to the graph. For a feature graph
      (``in_channels`` set) the read-out is a shared linear map to
      ``out_channels`` per weight and bias instead.

    Both heads are invariant / equivariant to hidden-neuron permutations;
    with IO position encodings (``num_inputs``, ``num_outputs``) they see
    the order of input and output neurons, without them they are invariant
    / equivariant to those too.

    Args:
        in_channels (int, optional): :obj:`None` for raw graphs (``x``
            ``[N, 1]``, ``edge_attr`` ``[E, kernel_width]``), else channels
            of a feature graph.
        hidden_channels (int): :math:`C`.
        out_channels (int): outputs per network (invariant), or channels per
            weight / bias of a feature graph (equivariant; must be :obj:`1`
            for raw graphs: the delta is in the raw format).
        num_layers (int): the most weight layers :math:`L`.
        num_blocks (int): NFT blocks. (default: :obj:`2`)
        heads (int): attention heads. (default: :obj:`1`)
        num_inputs, num_outputs (int, optional): IO position encodings.
        task (str): ``"invariant"`` or ``"equivariant"``.
        kernel_width (int): raw ``edge_attr`` width. (default: :obj:`1`)
        kernel_sizes (list[int], optional): kernel positions per weight layer.
        layer_bias (list[bool], optional): which layers have biases (the
            delta of a bias-free layer's biases is zero). (default: all)
        fourier_features (int): Fourier frequencies per scalar (raw MLP
            graphs and feature graphs; :obj:`0` = none). (default: :obj:`16`)
        sigma (float): Fourier frequency scale. (default: :obj:`10.`)
        layer_encoding (str, optional): see :class:`NFTEncoder`.
        pool (str): ``"mean"`` or ``"attention"`` (invariant task).
        num_latents (int): queries of the attention pool. (default: :obj:`8`)
        head_channels (int, optional): hidden width of the invariant MLP
            head. (default: :obj:`hidden_channels`)
        dropout (float): dropout in the blocks and the head. (default: :obj:`0.`)
        pool_norm (bool): standardise every pooled feature over the batch
            (:class:`~nft_pyg.nn.norm.PoolNorm`) before the invariant head, as
            :class:`~nft_pyg.nn.models.NFN` does. (default: :obj:`False`)
        ff_channels (int, optional): feed-forward width of the blocks.

    Use :meth:`for_layout` to read ``num_layers``, kernel sizes, biases and
    IO sizes off an architecture.

    Shapes:
        - **input:** a (batched) :class:`~nft_pyg.NeuronGraph`; optionally
          its :class:`~nft_pyg.nn.structure.WeightGraphIndex` (``index=``,
          built for the call if not given; pass it to reuse it across steps).
        - **output:** :math:`(B, C_{out})` (invariant) or
          ``(x_delta (N, 1), edge_delta (E, S))`` (equivariant).
    """

    def __init__(self, in_channels: int | None, hidden_channels: int, out_channels: int,
                 num_layers: int, num_blocks: int = 2, heads: int = 1,
                 num_inputs: int | None = None, num_outputs: int | None = None,
                 task: str = "invariant", kernel_width: int = 1,
                 kernel_sizes: Sequence[int] | None = None,
                 layer_bias: Sequence[bool] | None = None, fourier_features: int = 16,
                 sigma: float = 10.0, layer_encoding: str | None = "learned",
                 pool: str = "mean", num_latents: int = 8, head_channels: int | None = None,
                 dropout: float = 0.0, ff_channels: int | None = None,
                 pool_norm: bool = False):
        super().__init__()
        where = type(self).__name__
        if task not in TASKS:
            raise ValueError(f"{where}: task must be one of {TASKS}, got {task!r}")
        if pool not in POOLS:
            raise ValueError(f"{where}: pool must be one of {POOLS}, got {pool!r}")
        if int(out_channels) < 1:
            raise ValueError(f"{where}: out_channels must be positive, got {out_channels}")
        if task == "equivariant" and in_channels is None and int(out_channels) != 1:
            raise ValueError(f"{where}: the equivariant delta of a raw graph has one channel "
                             f"per kernel position; out_channels must be 1, got {out_channels}")
        self.task, self.pool_kind = task, pool
        self.out_channels = int(out_channels)
        self.encoder = NFTEncoder(in_channels, hidden_channels, num_layers, num_blocks, heads,
                                  num_inputs, num_outputs, kernel_width, kernel_sizes,
                                  fourier_features, sigma, layer_encoding, dropout, ff_channels)
        C, L = self.encoder.hidden_channels, self.encoder.num_layers
        self.pool = self.readout = self.head = None
        if task == "invariant":
            if pool == "mean":
                self.pool = NPPool(C, L)
                pooled = self.pool.out_channels
            else:
                self.pool = LatentCrossAttention(C, num_latents, heads=heads, dropout=dropout)
                pooled = num_latents * C
            hidden = C if head_channels is None else int(head_channels)
            self.head = nn.Sequential(nn.Linear(pooled, hidden), nn.GELU(),
                                      nn.Dropout(dropout), nn.Linear(hidden, self.out_channels))
            if pool_norm:
                self.head.insert(0, PoolNorm(pooled))
        elif in_channels is None:
            self.readout = KernelReadout(C, self.encoder.kernel_sizes, kernel_width,
                                         bias=True if layer_bias is None else list(layer_bias))
        else:
            self.readout = WeightSpaceLinear(C, self.out_channels)

    @classmethod
    def for_layout(cls, layout: Layout | str, hidden_channels: int, out_channels: int = 1,
                   io_encoding: bool = True, **kwargs) -> NFT:
        """An NFT for raw graphs of the architecture ``layout`` (kernel sizes,
        biases, depth and, with ``io_encoding``, IO sizes read off it);
        ``kwargs`` go to the constructor."""
        options = layout_options(layout)
        if not io_encoding:
            options.update(num_inputs=None, num_outputs=None)
        options.update(kwargs)
        return cls(None, hidden_channels, out_channels, **options)

    def reset_parameters(self) -> None:
        self.encoder.reset_parameters()
        if self.pool is not None:
            self.pool.reset_parameters()
        if self.readout is not None:
            self.readout.reset_parameters()
        if self.head is not None:
            for module in self.head:
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()

    def forward(self, graph, x: Tensor | None = None, edge_attr: Tensor | None = None,
                index: WeightGraphIndex | None = None):
        if index is None:
            index = WeightGraphIndex.from_data(graph, type(self).__name__)
        x, edge_attr = self.encoder(graph, x, edge_attr, index=index)
        if self.task == "equivariant":
            return self.readout(x, edge_attr, index)   # it checks the index's layouts
        pooled = self.pool(x, edge_attr, index)
        return self.head(pooled.flatten(1))

    def edit(self, graph):
        """A copy of the raw ``graph`` (or batch) with the predicted delta
        added to its biases and kernels (equivariant task); each edited graph
        converts back with :func:`nft_pyg.to_module`."""
        if self.task != "equivariant" or self.encoder.in_channels is not None:
            raise ValueError("NFT.edit: needs task='equivariant' on raw graphs "
                             "(in_channels=None)")
        x_delta, edge_delta = self(graph)
        edited = graph.clone()
        edited.x = graph.x + x_delta
        edited.edge_attr = graph.edge_attr + edge_delta
        return edited

    def __repr__(self) -> str:
        enc = self.encoder
        return (f"{type(self).__name__}({enc.in_channels}, {enc.hidden_channels}, "
                f"{self.out_channels}, num_layers={enc.num_layers}, "
                f"num_blocks={len(enc.blocks)}, task={self.task!r}, pool={self.pool_kind!r})")


__all__ = ["NFT", "NFTEncoder", "layout_options"]
