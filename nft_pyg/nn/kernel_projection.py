r"""Per-layer encoders and decoders between raw kernels and feature channels.

A raw graph of a CNN stores each edge's kernel in ``edge_attr`` ``[E, S]``
(``S`` = the largest kernel, smaller kernels zero padded). Layers with
different kernel sizes mean different things by "position s", so each
weight layer gets its own linear map. The per-layer parameters are stacked
``[L, ...]`` tensors; edges and nodes pick theirs by ``edge_layer`` /
``node_layer``, with no loop over edges, layers or graphs.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..graph.layout import Layout
from ..tensor import pointwise_ops_dense as dense
from ..tensor.weight_space import WeightSpace
from .pointwise import layer_ids, zero_input_nodes
from .structure import WeightGraphIndex


def _kernel_sizes(where: str, kernel_sizes: Sequence[int] | int, kernel_width: int) -> list[int]:
    """``kernel_sizes`` as a list (an int means that many layers of ``kernel_width``)."""
    kernel_width = int(kernel_width)
    if kernel_width < 1:
        raise ValueError(f"{where}: kernel_width must be positive, got {kernel_width}")
    if isinstance(kernel_sizes, int):
        if kernel_sizes < 1:
            raise ValueError(f"{where}: num_layers must be positive, got {kernel_sizes}")
        return [kernel_width] * kernel_sizes
    sizes = [int(size) for size in kernel_sizes]
    if not sizes or any(size < 1 or size > kernel_width for size in sizes):
        raise ValueError(f"{where}: kernel_sizes must be a non-empty list of sizes in "
                         f"1..kernel_width={kernel_width}, got {list(kernel_sizes)}")
    return sizes


def _position_mask(sizes: Sequence[int], kernel_width: int) -> Tensor:
    """``[L, S]``: 1 at the positions ``s < S_l`` each layer really has."""
    return (torch.arange(kernel_width).unsqueeze(0)
            < torch.tensor(sizes).unsqueeze(1)).to(torch.get_default_dtype())


def _layer_ids(where: str, x: Tensor, edge_attr: Tensor, graph,
               num_layers: int) -> tuple[Tensor, Tensor]:
    """``edge_layer`` and ``node_layer`` of ``graph``, checked against the
    feature rows and the number of layers the module was built for."""
    edge_layer, node_layer = layer_ids(where, graph, num_layers)
    if edge_attr.size(0) != edge_layer.numel() or x.size(0) != node_layer.numel():
        raise ValueError(f"{where}: features of {x.size(0)} nodes / {edge_attr.size(0)} "
                         f"edges for a graph of {node_layer.numel()} / {edge_layer.numel()}")
    return edge_layer, node_layer


def _kernel_layers(layouts) -> tuple[tuple[tuple[int, ...], tuple[bool, ...]], ...]:
    """``(kernel sizes, bias flags)`` of the weight layers of each distinct layout
    (``layouts``: a string, a list of them or ``None``)."""
    if layouts is None:
        return ()
    texts = dict.fromkeys([layouts] if isinstance(layouts, str) else layouts)
    layers = [Layout.coerce(text, "graph.layout").weight_layers() for text in texts]
    return tuple(dict.fromkeys(
        (tuple(layer.positions for layer in weight_layers),
         tuple(layer.bias for layer in weight_layers)) for weight_layers in layers))


def _layer_rows(node_layer: Tensor) -> Tensor:
    """Row ``l - 1`` of a per-layer table for a node of layer ``l`` (0 for inputs,
    whose output is zeroed anyway)."""
    return (node_layer - 1).clamp(min=0)


class KernelProjection(nn.Module):
    r"""Per-layer linear encoder of raw kernels and biases into :math:`C` channels.

    The input encoder for raw graphs of CNNs (and MLPs) used before
    equivariant layers (Zhou et al., "Permutation Equivariant Neural
    Functionals", NeurIPS 2023, arXiv 2302.14040; "Neural Functional
    Transformers", NeurIPS 2023, arXiv 2305.13546). For an edge :math:`e`
    of weight layer :math:`l` with kernel :math:`\mathbf{k}_e \in
    \mathbb{R}^{S_l}` (the first :math:`S_l` entries of its raw
    ``edge_attr``) and a node :math:`v` of neuron layer :math:`l \geq 1`
    with bias :math:`b_v`,

    .. math::
        \mathbf{h}_e = \mathbf{A}_l \mathbf{k}_e + \mathbf{a}_l, \qquad
        \mathbf{x}_v = \mathbf{c}_l\, b_v + \mathbf{d}_l,

    with :math:`\mathbf{A}_l \in \mathbb{R}^{C \times S_l}`; input neurons
    get zero. Entries past :math:`S_l` must be zero (padding).

    Checks: the shapes and layer ids of every call (with a
    :class:`~nft_pyg.nn.structure.WeightGraphIndex`, ints only); in eager
    forwards also the weights' values (:meth:`check_weights`: NaN / inf,
    nonzero entries past a layer's kernel size). The value checks need the
    values on the host, so they are skipped while ``torch.compile`` traces
    the forward (``torch.compiler.is_compiling()``), which keeps a compiled
    model in one graph; there, check each batch once outside the model
    (:func:`nft_pyg.validate`, or :meth:`check_weights`).

    Args:
        kernel_sizes (list[int] or int): :math:`S_l` of each weight layer, or
            the number of layers :math:`L` (every layer then takes
            ``kernel_width`` positions). :meth:`for_layout` reads them off a
            :class:`~nft_pyg.graph.layout.Layout`.
        kernel_width (int): :math:`S`, the width of the raw ``edge_attr``.
        out_channels (int): :math:`C`.

    Shapes:
        - **input:** raw node features :math:`(N, 1)`, raw edge features
          :math:`(E, S)`, the graph (structure).
        - **output:** :math:`(N, C)`, :math:`(E, C)`.
    """

    def __init__(self, kernel_sizes: Sequence[int] | int, kernel_width: int,
                 out_channels: int):
        super().__init__()
        where = type(self).__name__
        self.kernel_sizes = _kernel_sizes(where, kernel_sizes, kernel_width)
        self.kernel_width, self.out_channels = int(kernel_width), int(out_channels)
        if self.out_channels < 1:
            raise ValueError(f"{where}: out_channels must be positive, got {out_channels}")
        layers = len(self.kernel_sizes)
        self.edge_weight = nn.Parameter(torch.empty(layers, self.kernel_width, self.out_channels))
        self.edge_bias = nn.Parameter(torch.empty(layers, self.out_channels))
        self.node_weight = nn.Parameter(torch.empty(layers, self.out_channels))
        self.node_bias = nn.Parameter(torch.empty(layers, self.out_channels))
        self.register_buffer("position_mask", _position_mask(self.kernel_sizes, self.kernel_width))
        self.reset_parameters()

    @classmethod
    def for_layout(cls, layout: Layout | str, out_channels: int,
                   kernel_width: int | None = None) -> KernelProjection:
        """A projection sized for the weight layers of ``layout``."""
        layout = Layout.coerce(layout)
        sizes = [layer.positions for layer in layout.weight_layers()]
        return cls(sizes, layout.kernel_width if kernel_width is None else kernel_width,
                   out_channels)

    @property
    def num_layers(self) -> int:
        return len(self.kernel_sizes)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        # the default init of each layer's own nn.Linear(S_l, C) / nn.Linear(1, C)
        for layer, size in enumerate(self.kernel_sizes):
            bound = 1.0 / math.sqrt(size)
            nn.init.uniform_(self.edge_weight[layer], -bound, bound)
            nn.init.uniform_(self.edge_bias[layer], -bound, bound)
        nn.init.uniform_(self.node_weight, -1.0, 1.0)
        nn.init.uniform_(self.node_bias, -1.0, 1.0)
        self.edge_weight.mul_(self.position_mask.unsqueeze(-1))

    def _masked_edge_weight(self) -> Tensor:
        # masked in forward too, so padded positions never get a gradient
        return self.edge_weight * self.position_mask.unsqueeze(-1)

    def check_weights(self, edge_attr: Tensor, edge_layer: Tensor) -> None:
        """Raise a ``ValueError`` if the raw ``edge_attr`` ``[E, S]`` holds NaN / inf
        or nonzero entries past an edge's layer's kernel size (``edge_layer``
        ``[E]``: its weight layer ``1..L``). Two host syncs."""
        where = type(self).__name__
        mask = self.position_mask.to(edge_attr.dtype)[edge_layer - 1]
        past = edge_attr * (1 - mask)
        if bool(past.ne(0).any()):   # also true for a NaN anywhere in edge_attr
            if not bool(torch.isfinite(edge_attr).all()):
                raise ValueError(f"{where}: the raw weights (edge_attr) hold NaN or inf; a "
                                 "network's weights must be finite")
            raise ValueError(f"{where}: some edges have nonzero entries past their layer's "
                             f"kernel size {self.kernel_sizes}; the graph has larger kernels "
                             "than this projection was built for")

    def forward(self, x: Tensor, edge_attr: Tensor, graph) -> tuple[Tensor, Tensor]:
        where = type(self).__name__
        if x.dim() != 2 or x.size(-1) != 1:
            raise ValueError(f"{where}: expects raw node features x [N, 1] (the biases), got "
                             f"{tuple(x.shape)}")
        if edge_attr.dim() != 2 or edge_attr.size(-1) != self.kernel_width:
            raise ValueError(f"{where}: expects raw edge features [E, {self.kernel_width}] "
                             f"(kernel_width={self.kernel_width}), got {tuple(edge_attr.shape)}")
        edge_layer, node_layer = _layer_ids(where, x, edge_attr, graph, self.num_layers)
        rows = edge_layer - 1
        if not torch.compiler.is_compiling():   # value checks read the weights on the host
            self.check_weights(edge_attr, edge_layer)
        # each edge's kernel goes into its layer's block of an [E, L * S] row, so one
        # matmul with the stacked [L * S, C] weights applies every layer's own map
        blocks = edge_attr.new_zeros(edge_attr.size(0), self.num_layers, self.kernel_width)
        blocks[torch.arange(edge_attr.size(0), device=edge_attr.device), rows] = edge_attr
        weight = self._masked_edge_weight().reshape(-1, self.out_channels)
        edge_out = blocks.flatten(1) @ weight + self.edge_bias[rows]
        node_rows = _layer_rows(node_layer)
        x_out = x * self.node_weight[node_rows] + self.node_bias[node_rows]
        return zero_input_nodes(x_out, graph, where), edge_out

    def forward_dense(self, ws: WeightSpace) -> WeightSpace:
        """Raw :class:`WeightSpace` (``C = 1``, kernels kept) -> folded ``C`` channels."""
        if ws.num_layers > self.num_layers:
            raise ValueError(f"KernelProjection: built for {self.num_layers} weight layers, "
                             f"the weight space has {ws.num_layers}")
        return dense.kernel_projection_dense(ws, self._masked_edge_weight(), self.edge_bias,
                                             self.node_weight, self.node_bias,
                                             self.kernel_sizes)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(kernel_sizes={self.kernel_sizes}, "
                f"kernel_width={self.kernel_width}, out_channels={self.out_channels})")


class KernelReadout(nn.Module):
    r"""Per-layer linear decoder of :math:`C` channels into raw kernels and biases.

    The inverse direction of :class:`KernelProjection`: an equivariant model
    (Zhou et al., "Permutation Equivariant Neural Functionals", NeurIPS
    2023, arXiv 2302.14040) outputs features per weight and bias, and this
    module reads them out in the raw graph format, e.g. a weight-space
    delta for editing that :func:`nft_pyg.to_module` accepts. For an edge
    :math:`e` of weight layer :math:`l` and a node :math:`v` of neuron layer
    :math:`l \geq 1`,

    .. math::
        \mathbf{k}_e = \big[\mathbf{A}_l \mathbf{h}_e + \mathbf{a}_l,\
        \mathbf{0}_{S - S_l}\big], \qquad
        b_v = \mathbf{c}_l^\top \mathbf{x}_v + d_l,

    with :math:`\mathbf{A}_l \in \mathbb{R}^{S_l \times C}`; padded kernel
    positions, input neurons and the biases of bias-free layers are zero.

    Args:
        in_channels (int): :math:`C`.
        kernel_sizes (list[int] or int): :math:`S_l` of each weight layer, or
            the number of layers (each then ``kernel_width`` positions). Use
            :meth:`for_layout` to read sizes and bias flags off a layout.
        kernel_width (int): :math:`S`, the width of the raw ``edge_attr``.
        bias (bool or list[bool]): whether each layer has a bias (default
            ``True``: all).

    Shapes:
        - **input:** :math:`(N, C)`, :math:`(E, C)`, the graph (structure).
        - **output:** raw :math:`(N, 1)`, :math:`(E, S)`.
    """

    def __init__(self, in_channels: int, kernel_sizes: Sequence[int] | int, kernel_width: int,
                 bias: bool | Sequence[bool] = True):
        super().__init__()
        where = type(self).__name__
        self.kernel_sizes = _kernel_sizes(where, kernel_sizes, kernel_width)
        self.kernel_width, self.in_channels = int(kernel_width), int(in_channels)
        if self.in_channels < 1:
            raise ValueError(f"{where}: in_channels must be positive, got {in_channels}")
        layers = len(self.kernel_sizes)
        flags = [bool(bias)] * layers if isinstance(bias, bool) else [bool(b) for b in bias]
        if len(flags) != layers:
            raise ValueError(f"{where}: {len(flags)} bias flags for {layers} layers")
        self.layer_bias = flags
        self.edge_weight = nn.Parameter(torch.empty(layers, self.in_channels, self.kernel_width))
        self.edge_bias = nn.Parameter(torch.empty(layers, self.kernel_width))
        self.node_weight = nn.Parameter(torch.empty(layers, self.in_channels))
        self.node_bias = nn.Parameter(torch.empty(layers))
        self.register_buffer("position_mask", _position_mask(self.kernel_sizes, self.kernel_width))
        self.register_buffer("bias_mask", torch.tensor(flags, dtype=torch.get_default_dtype()))
        self.reset_parameters()

    @classmethod
    def for_layout(cls, layout: Layout | str, in_channels: int,
                   kernel_width: int | None = None) -> KernelReadout:
        """A read-out sized for the weight layers (and biases) of ``layout``."""
        layout = Layout.coerce(layout)
        layers = layout.weight_layers()
        return cls(in_channels, [layer.positions for layer in layers],
                   layout.kernel_width if kernel_width is None else kernel_width,
                   bias=[layer.bias for layer in layers])

    @property
    def num_layers(self) -> int:
        return len(self.kernel_sizes)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.in_channels)
        for tensor in (self.edge_weight, self.edge_bias, self.node_weight, self.node_bias):
            nn.init.uniform_(tensor, -bound, bound)
        self.edge_weight.mul_(self.position_mask.unsqueeze(1))
        self.edge_bias.mul_(self.position_mask)
        self.node_weight.mul_(self.bias_mask.unsqueeze(1))
        self.node_bias.mul_(self.bias_mask)

    def _masked(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return (self.edge_weight * self.position_mask.unsqueeze(1),
                self.edge_bias * self.position_mask,
                self.node_weight * self.bias_mask.unsqueeze(1),
                self.node_bias * self.bias_mask)

    def _check_layouts(self, graph, where: str) -> None:
        if isinstance(graph, WeightGraphIndex):   # Python values, read once per index
            widths = graph.kernel_widths
            layers = graph.part("kernel_layers", lambda index: _kernel_layers(index.layouts))
        else:
            widths = getattr(graph, "kernel_width", None)
            if widths is not None:
                widths = sorted(set(torch.as_tensor(widths).reshape(-1).tolist()))
            layers = _kernel_layers(getattr(graph, "layout", None))
        if widths is not None and any(width != self.kernel_width for width in widths):
            raise ValueError(f"{where}: built for kernel_width={self.kernel_width}, the graph "
                             f"has kernel_width {list(widths)}")
        for sizes, flags in layers:
            if list(sizes) != self.kernel_sizes[:len(sizes)] or \
                    any(f and not g for f, g in zip(self.layer_bias, flags)):
                raise ValueError(f"{where}: built for kernel sizes {self.kernel_sizes} and "
                                 f"biases {self.layer_bias}, the graph has a network with "
                                 f"kernel sizes {list(sizes)} and biases {list(flags)}")

    def forward(self, x: Tensor, edge_attr: Tensor, graph) -> tuple[Tensor, Tensor]:
        where = type(self).__name__
        for name, features in (("x", x), ("edge_attr", edge_attr)):
            if features.dim() != 2 or features.size(-1) != self.in_channels:
                raise ValueError(f"{where}: built for {self.in_channels} channels, got {name} "
                                 f"{tuple(features.shape)}")
        edge_layer, node_layer = _layer_ids(where, x, edge_attr, graph, self.num_layers)
        self._check_layouts(graph, where)
        edge_weight, edge_bias, node_weight, node_bias = self._masked()
        rows = edge_layer - 1
        # all layers' read-outs at once ([E, L, S], cheap: S is small), then each
        # edge keeps its own layer's
        every_layer = torch.einsum("ec,lcs->els", edge_attr, edge_weight)
        edge_out = every_layer[torch.arange(edge_attr.size(0), device=edge_attr.device), rows]
        edge_out = edge_out + edge_bias[rows]
        node_rows = _layer_rows(node_layer)
        x_out = (x * node_weight[node_rows]).sum(-1, keepdim=True) \
            + node_bias[node_rows].unsqueeze(-1)
        return zero_input_nodes(x_out, graph, where), edge_out

    def forward_dense(self, ws: WeightSpace) -> WeightSpace:
        """Folded ``C``-channel :class:`WeightSpace` -> raw one (kernels of ``ws.layout``)."""
        if ws.layout is None:
            raise ValueError("KernelReadout: forward_dense needs ws.layout (the kernel shapes)")
        layers = ws.layout.weight_layers()
        if [layer.positions for layer in layers] != self.kernel_sizes[:len(layers)]:
            raise ValueError(f"KernelReadout: built for kernel sizes {self.kernel_sizes}, the "
                             f"weight space has {[layer.positions for layer in layers]}")
        edge_weight, edge_bias, node_weight, node_bias = self._masked()
        return dense.kernel_readout_dense(ws, edge_weight, edge_bias, node_weight, node_bias,
                                          [layer.kernel_shape for layer in layers],
                                          self.layer_bias)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.in_channels}, kernel_sizes={self.kernel_sizes}, "
                f"kernel_width={self.kernel_width}, bias={self.layer_bias})")
