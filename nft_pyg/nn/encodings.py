r"""Input encodings of weight-space features: Fourier features, layer and IO positions."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..graph.accessors import is_input_neuron, is_output_neuron
from ..tensor import pointwise_ops_dense as dense
from ..tensor.weight_space import WeightSpace
from .pointwise import check_features, graph_attr, layer_ids, zero_input_nodes
from .structure import WeightGraphIndex


class GaussianFourierFeatures(nn.Module):
    r"""Gaussian random Fourier features of every scalar weight and bias.

    The input encoding of the NFT / Inr2Array encoder (Zhou et al., "Neural
    Functional Transformers", NeurIPS 2023, arXiv 2305.13546), after Tancik
    et al. (2020): every entry :math:`w` of channel :math:`c` of an edge or a
    node is mapped on its own to

    .. math::
        \gamma_c(w) = \big[\sin(2\pi B_{c1} w), \ldots, \sin(2\pi B_{cF} w),
        \cos(2\pi B_{c1} w), \ldots, \cos(2\pi B_{cF} w)\big],
        \qquad B_{ck} \sim \mathcal{N}(0, \sigma^2),

    and the :math:`C` encodings are concatenated (channel-major), giving
    :math:`2 C F` channels. Input neurons are set to zero. The frequencies
    are a fixed buffer unless ``learnable=True``.

    Args:
        in_channels (int): :math:`C` (1 for a raw MLP graph).
        num_frequencies (int): :math:`F`.
        sigma (float): standard deviation :math:`\sigma` of the frequencies
            (default ``10.0``).
        learnable (bool): make :math:`B` a parameter (default ``False``).
        generator (torch.Generator, optional): draws :math:`B` reproducibly.

    Shapes:
        - **input:** node features :math:`(N, C)`, edge features
          :math:`(E, C)`, the graph (structure).
        - **output:** :math:`(N, 2CF)`, :math:`(E, 2CF)`.
    """

    def __init__(self, in_channels: int, num_frequencies: int, sigma: float = 10.0,
                 learnable: bool = False, generator: torch.Generator | None = None):
        super().__init__()
        if int(in_channels) < 1 or int(num_frequencies) < 1:
            raise ValueError(f"GaussianFourierFeatures: in_channels and num_frequencies must be "
                             f"positive, got {in_channels} and {num_frequencies}")
        if not float(sigma) > 0:
            raise ValueError(f"GaussianFourierFeatures: sigma must be positive, got {sigma}")
        self.in_channels, self.num_frequencies = int(in_channels), int(num_frequencies)
        self.sigma, self.learnable = float(sigma), bool(learnable)
        frequencies = torch.empty(self.in_channels, self.num_frequencies)
        if self.learnable:
            self.frequencies = nn.Parameter(frequencies)
        else:
            self.register_buffer("frequencies", frequencies)
        self.reset_parameters(generator)

    @property
    def out_channels(self) -> int:
        return 2 * self.in_channels * self.num_frequencies

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Draw :math:`B \\sim \\mathcal{N}(0, \\sigma^2)` (from ``generator`` if given)."""
        draw = torch.randn(self.frequencies.shape, generator=generator,
                           dtype=self.frequencies.dtype,
                           device=generator.device if generator is not None else None)
        self.frequencies.copy_(draw * self.sigma)

    def _encode(self, features: Tensor) -> Tensor:
        angles = 2 * math.pi * features.unsqueeze(-1) * self.frequencies
        encoded = torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)
        return encoded.flatten(-2)

    def forward(self, x: Tensor, edge_attr: Tensor, graph) -> tuple[Tensor, Tensor]:
        where = type(self).__name__
        check_features(where, x, edge_attr, graph, self.in_channels)
        return zero_input_nodes(self._encode(x), graph, where), self._encode(edge_attr)

    def forward_dense(self, ws: WeightSpace) -> WeightSpace:
        return dense.fourier_features_dense(ws, self.frequencies)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.in_channels}, {self.num_frequencies}, "
                f"sigma={self.sigma}, learnable={self.learnable})")


def sinusoidal_table(num_positions: int, channels: int) -> Tensor:
    r"""``[num_positions, channels]`` transformer sinusoids of positions ``0, 1, ...``.

    Column ``2k`` is :math:`\sin(p / 10000^{2k/C})`, column ``2k+1`` the cosine.
    """
    position = torch.arange(num_positions, dtype=torch.float64).unsqueeze(1)
    rates = torch.exp(torch.arange(0, channels, 2, dtype=torch.float64)
                      * (-math.log(10000.0) / channels))
    table = torch.zeros(num_positions, channels + channels % 2, dtype=torch.float64)
    table[:, 0::2] = torch.sin(position * rates)
    table[:, 1::2] = torch.cos(position * rates)
    return table[:, :channels].to(torch.get_default_dtype())


class LayerEncoding(nn.Module):
    r"""Add an encoding of the layer index to every weight and bias.

    NFT tells the layers of a network apart by a layer embedding
    (Zhou et al., "Neural Functional Transformers", NeurIPS 2023, arXiv
    2305.13546). With separate tables for weight layers and bias layers,

    .. math::
        \mathbf{h}'_e = \mathbf{h}_e + \mathbf{p}^{W}_{l(e)}, \qquad
        \mathbf{x}'_v = \mathbf{x}_v + \mathbf{p}^{b}_{l(v)},

    where :math:`l(e)` is the edge's weight layer (``edge_layer``) and
    :math:`l(v)` the node's neuron layer (``node_layer``); input neurons are
    set to zero. ``kind="sinusoidal"`` uses fixed transformer sinusoids of
    the positions of the sequence :math:`W_1, b_1, W_2, b_2, \ldots`
    (:math:`\mathbf{p}^W_l` = position :math:`2l - 1`, :math:`\mathbf{p}^b_l`
    = position :math:`2l`); ``kind="learned"`` learns both tables. Layer ids
    are not permuted by neuron permutations, so the map is equivariant.

    Args:
        channels (int): :math:`C`.
        num_layers (int): the largest number of weight layers :math:`L`.
        kind (str): ``"sinusoidal"`` (default) or ``"learned"``.

    Shapes:
        - **input:** :math:`(N, C)`, :math:`(E, C)`, the graph.
        - **output:** :math:`(N, C)`, :math:`(E, C)`.
    """

    KINDS = ("sinusoidal", "learned")

    def __init__(self, channels: int, num_layers: int, kind: str = "sinusoidal"):
        super().__init__()
        if kind not in self.KINDS:
            raise ValueError(f"LayerEncoding: kind must be one of {self.KINDS}, got {kind!r}")
        if int(channels) < 1 or int(num_layers) < 1:
            raise ValueError(f"LayerEncoding: channels and num_layers must be positive, got "
                             f"{channels} and {num_layers}")
        self.channels, self.num_layers, self.kind = int(channels), int(num_layers), kind
        shape = (self.num_layers, self.channels)
        if kind == "learned":
            self.weight_table = nn.Parameter(torch.empty(shape))
            self.bias_table = nn.Parameter(torch.empty(shape))
        else:
            self.register_buffer("weight_table", torch.empty(shape))
            self.register_buffer("bias_table", torch.empty(shape))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        if self.kind == "learned":
            nn.init.normal_(self.weight_table, std=0.02)
            nn.init.normal_(self.bias_table, std=0.02)
        else:
            table = sinusoidal_table(2 * self.num_layers + 1, self.channels)
            self.weight_table.copy_(table[1::2])
            self.bias_table.copy_(table[2::2])

    def forward(self, x: Tensor, edge_attr: Tensor, graph) -> tuple[Tensor, Tensor]:
        where = type(self).__name__
        check_features(where, x, edge_attr, graph, self.channels)
        edge_layer, node_layer = layer_ids(where, graph, self.num_layers)
        edge_attr = edge_attr + self.weight_table.to(edge_attr.dtype)[edge_layer - 1]
        # row 0 of the padded bias table is for the input neurons (zeroed anyway)
        bias_table = torch.cat([self.bias_table.new_zeros(1, self.channels), self.bias_table])
        x = x + bias_table.to(x.dtype)[node_layer.clamp(max=self.num_layers)]
        return zero_input_nodes(x, graph, where), edge_attr

    def forward_dense(self, ws: WeightSpace) -> WeightSpace:
        if ws.num_layers > self.num_layers:
            raise ValueError(f"LayerEncoding: built for {self.num_layers} weight layers, the "
                             f"weight space has {ws.num_layers}")
        return dense.layer_encoding_dense(ws, self.weight_table.to(ws.weights[0].dtype),
                                          self.bias_table.to(ws.weights[0].dtype))

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.channels}, num_layers={self.num_layers}, "
                f"kind={self.kind!r})")


def io_masks(graph, where: str) -> tuple[Tensor, Tensor, Tensor]:
    """``is_input``, ``is_output`` (``[N]`` bool) and ``node_pos`` of ``graph``: the
    index's own masks for a :class:`~nft_pyg.nn.structure.WeightGraphIndex`, the
    :mod:`nft_pyg.graph.accessors` ones for a ``Data`` / ``Batch``."""
    pos = graph_attr(graph, "node_pos", where)
    if isinstance(graph, WeightGraphIndex):
        return graph.is_input, graph.is_output, pos
    graph_attr(graph, "node_role", where)   # a clear error if it is missing
    return is_input_neuron(graph), is_output_neuron(graph), pos


def io_neuron_counts(graph, where: str) -> tuple[int, int]:
    """The most input and output neurons a network of ``graph`` has (the largest
    ``node_pos`` + 1 of each role, 0 without any). For a
    :class:`~nft_pyg.nn.structure.WeightGraphIndex` they are counted once and
    kept as its part ``"io_counts"``, so a forward reads two ints (no host sync,
    no graph break under ``torch.compile``)."""
    if isinstance(graph, WeightGraphIndex):
        return graph.part("io_counts", lambda index: _io_counts(index, where))
    return _io_counts(graph, where)


def _io_counts(graph, where: str) -> tuple[int, int]:
    is_input, is_output, pos = io_masks(graph, where)
    return tuple(int(pos[mask].max()) + 1 if bool(mask.any()) else 0
                 for mask in (is_input, is_output))


class IOPositionEncoding(nn.Module):
    r"""Learned embeddings of input- and output-neuron positions.

    Input and output neurons of a network are not permutable; NFT (Zhou et
    al., "Neural Functional Transformers", NeurIPS 2023, arXiv 2305.13546)
    tells them apart with positional embeddings, and the same trick turns an
    NP layer of NFN (arXiv 2302.14040) into one that sees IO positions. With
    :math:`\mathbf{p}^{in}_j` for input neuron :math:`j` and
    :math:`\mathbf{p}^{out}_i` for output neuron :math:`i`,

    .. math::
        \mathbf{h}'_{u \to v} = \mathbf{h}_{u \to v}
        + [u \in \mathrm{in}]\, \mathbf{p}^{in}_{\mathrm{pos}(u)}
        + [v \in \mathrm{out}]\, \mathbf{p}^{out}_{\mathrm{pos}(v)}, \qquad
        \mathbf{x}'_v = \mathbf{x}_v + [v \in \mathrm{out}]\,
        \mathbf{p}^{out}_{\mathrm{pos}(v)},

    input neurons set to zero. Hidden neurons get nothing, so the map stays
    equivariant to hidden-neuron permutations and breaks the symmetry of
    input and output neurons.

    Args:
        channels (int): :math:`C`.
        num_inputs (int): the largest number of input neurons.
        num_outputs (int): the largest number of output neurons.

    Shapes:
        - **input:** :math:`(N, C)`, :math:`(E, C)`, the graph.
        - **output:** :math:`(N, C)`, :math:`(E, C)`.
    """

    def __init__(self, channels: int, num_inputs: int, num_outputs: int):
        super().__init__()
        if min(int(channels), int(num_inputs), int(num_outputs)) < 1:
            raise ValueError(f"IOPositionEncoding: channels, num_inputs and num_outputs must be "
                             f"positive, got {channels}, {num_inputs}, {num_outputs}")
        self.channels = int(channels)
        self.num_inputs, self.num_outputs = int(num_inputs), int(num_outputs)
        self.input_embedding = nn.Parameter(torch.empty(self.num_inputs, self.channels))
        self.output_embedding = nn.Parameter(torch.empty(self.num_outputs, self.channels))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.input_embedding, std=0.02)
        nn.init.normal_(self.output_embedding, std=0.02)

    @staticmethod
    def _lookup(table: Tensor, positions: Tensor, selected: Tensor) -> Tensor:
        """``table[positions]`` where ``selected``, zero elsewhere."""
        padded = torch.cat([table, table.new_zeros(1, table.size(1))])
        return padded[torch.where(selected, positions, table.size(0))]

    def forward(self, x: Tensor, edge_attr: Tensor, graph) -> tuple[Tensor, Tensor]:
        where = type(self).__name__
        check_features(where, x, edge_attr, graph, self.channels)
        is_input, is_output, pos = io_masks(graph, where)
        counts = io_neuron_counts(graph, where)
        for name, count, limit in (("input", counts[0], self.num_inputs),
                                   ("output", counts[1], self.num_outputs)):
            if count > limit:
                raise ValueError(f"{where}: built for {limit} {name} neurons, the graph has a "
                                 f"network with {count}")
        src, dst = graph.edge_index
        inputs = self.input_embedding.to(edge_attr.dtype)
        outputs = self.output_embedding.to(edge_attr.dtype)
        edge_attr = (edge_attr + self._lookup(inputs, pos[src], is_input[src])
                     + self._lookup(outputs, pos[dst], is_output[dst]))
        x = x + self._lookup(outputs, pos, is_output)
        return zero_input_nodes(x, graph, where), edge_attr

    def forward_dense(self, ws: WeightSpace) -> WeightSpace:
        sizes = ws.neuron_layer_sizes
        if sizes[0] > self.num_inputs or sizes[-1] > self.num_outputs:
            raise ValueError(f"IOPositionEncoding: built for {self.num_inputs} inputs and "
                             f"{self.num_outputs} outputs, the weight space has {sizes[0]} "
                             f"and {sizes[-1]}")
        dtype = ws.weights[0].dtype
        return dense.io_position_dense(ws, self.input_embedding.to(dtype),
                                       self.output_embedding.to(dtype))

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.channels}, num_inputs={self.num_inputs}, "
                f"num_outputs={self.num_outputs})")
