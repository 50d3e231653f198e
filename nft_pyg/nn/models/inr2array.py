r"""Inr2Array: SIREN weights -> permutation-invariant latent array -> SIREN weights.

From "Neural Functional Transformers" (Zhou et al., NeurIPS 2023, arXiv
2305.13546). An NFT encoder and a latent cross-attention turn the weights
of an INR into a latent array ``[M, d]`` that does not change when the
INR's hidden neurons are relabelled; a hypernetwork turns the array back
into SIREN weights, trained so that the decoded SIREN renders the same
image as the input. The latent arrays then serve downstream tasks
(:class:`LatentClassifier`, :func:`save_latents` / :func:`load_latents`).
"""
from __future__ import annotations

import math
import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...graph.layout import Layout
from ...inr.fit import init_sirens
from ...inr.render import make_grid, render_image, render_weights
from ...inr.siren import init_bounds
from ...tensor.weight_space import WeightSpace
from ...utils.io import CorruptFileError, atomic_save, safe_load
from ..nft_block import LatentCrossAttention
from ..structure import WeightGraphIndex
from .nft import NFTEncoder, layout_options

DECODERS = ("global", "spatial")
#: format tag of the files written by :func:`save_latents`
LATENTS_FORMAT = "nft_pyg.latents/1"


def siren_spec(layout: Layout | str, where: str = "Inr2Array") -> tuple[list[int], float, float]:
    """``(sizes, w0_first, w0)`` of a SIREN layout (``Linear`` layers with
    biases, one ``Sine`` after each hidden layer); ``ValueError`` otherwise."""
    layout = Layout.coerce(layout)
    sines: dict[int, float] = {}
    for layer, step in layout.steps_by_neuron_layer():
        kind = step["kind"]
        if kind == "linear":
            if not step["bias"] or step.get("positions", 1) != 1:
                raise ValueError(f"{where}: layer '{step['name']}' is not a SIREN layer (needs a "
                                 "bias and no flatten positions)")
        elif kind == "act" and step["act"] == "SINE" and layer not in sines:
            sines[layer] = float(step.get("params", {}).get("w0", 30.0))
        else:
            raise ValueError(f"{where}: the layout is not a SIREN (Linear, Sine, ..., Linear): "
                             f"step '{step['name']}' is {kind} {step.get('act', '')}".rstrip())
    sizes = layout.neuron_layer_sizes
    num_layers = len(sizes) - 1
    if sorted(sines) != list(range(1, num_layers)):
        raise ValueError(f"{where}: a SIREN has one Sine after each hidden layer, the layout "
                         f"has them after neuron layers {sorted(sines)}")
    w0_first = sines.get(1, 30.0)
    later = {sines[layer] for layer in range(2, num_layers)}
    if len(later) > 1:
        raise ValueError(f"{where}: hidden Sine frequencies after the first must agree, got "
                         f"{sorted(later)}")
    return sizes, w0_first, later.pop() if later else 30.0


def _flat_siren_init(sizes: Sequence[int], w0: float, generator: torch.Generator | None):
    """One SIREN init draw and the per-parameter init bounds, flattened
    (layer by layer: weight row-major, then bias)."""
    weights, biases = init_sirens(1, sizes, w0, generator)
    draw, bounds = [], []
    for (w_bound, b_bound), w, b in zip(init_bounds(sizes, w0), weights, biases):
        draw += [w.reshape(-1), b.reshape(-1)]
        bounds += [torch.full((w.numel(),), w_bound), torch.full((b.numel(),), b_bound)]
    return torch.cat(draw), torch.cat(bounds)


def _mlp(in_channels: int, hidden: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_channels, hidden), nn.GELU(), nn.Linear(hidden, hidden),
                         nn.GELU(), nn.Linear(hidden, out_channels))


class SirenHypernetwork(nn.Module):
    r"""The "global" Inr2Array decoder: an MLP from a code vector (the
    flattened latent array) to every parameter of one SIREN.

    With :math:`\boldsymbol{\theta}_0` a learned base (initialised to a
    SIREN init draw) and :math:`\mathbf{s}` the fixed per-parameter SIREN
    init bounds (:func:`nft_pyg.inr.init_bounds`, so all layers start on
    their natural scale),

    .. math::
        \boldsymbol{\theta}(\mathbf{c}) = \boldsymbol{\theta}_0 + \mathbf{s}
        \odot \mathrm{MLP}(\mathbf{c}),

    split layer by layer into :math:`W_i \in \mathbb{R}^{n_i \times
    n_{i-1}}` (row-major) and :math:`b_i \in \mathbb{R}^{n_i}`.

    Args:
        in_channels (int): code size (``M * d`` for Inr2Array).
        sizes (list[int]): SIREN layer sizes ``[n_0, ..., n_L]``.
        w0 (float): hidden frequency (init bounds and rendering).
        w0_first (float): frequency after the first layer (rendering).
        hidden_channels (int): MLP width. (default: :obj:`256`)
        generator (torch.Generator, optional): draws the base.

    Shapes:
        - **input:** :math:`(B, \text{in\_channels})`.
        - **output:** ``weights[i]`` :math:`(B, n_i, n_{i-1})`, ``biases[i]``
          :math:`(B, n_i)`.
    """

    def __init__(self, in_channels: int, sizes: Sequence[int], w0: float = 30.0,
                 w0_first: float = 30.0, hidden_channels: int = 256,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.sizes = [int(size) for size in sizes]
        if len(self.sizes) < 2 or min(self.sizes) < 1:
            raise ValueError(f"{type(self).__name__}: needs SIREN sizes [n_0, ..., n_L], got "
                             f"{list(sizes)}")
        self.in_channels, self.hidden_channels = int(in_channels), int(hidden_channels)
        self.w0, self.w0_first = float(w0), float(w0_first)
        self.num_parameters = sum(n_out * (n_in + 1) for n_in, n_out in
                                  zip(self.sizes[:-1], self.sizes[1:]))
        self.mlp = _mlp(self.in_channels, self.hidden_channels, self.num_parameters)
        self.base = nn.Parameter(torch.empty(self.num_parameters))
        self.register_buffer("scale", torch.empty(self.num_parameters))
        self.reset_parameters(generator)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        for module in self.mlp:
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
        draw, bounds = _flat_siren_init(self.sizes, self.w0, generator)
        self.base.copy_(draw)
        self.scale.copy_(bounds)

    def split(self, flat: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """``[..., P]`` flat parameters -> ``(weights, biases)`` with leading dims kept."""
        weights, biases, start = [], [], 0
        for n_in, n_out in zip(self.sizes[:-1], self.sizes[1:]):
            weights.append(flat[..., start:start + n_out * n_in].unflatten(-1, (n_out, n_in)))
            start += n_out * n_in
            biases.append(flat[..., start:start + n_out])
            start += n_out
        return weights, biases

    def forward(self, code: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        if code.size(-1) != self.in_channels:
            raise ValueError(f"{type(self).__name__}: built for codes of size "
                             f"{self.in_channels}, got {tuple(code.shape)}")
        return self.split(self.base + self.scale * self.mlp(code))

    def render(self, code: Tensor, resolution) -> Tensor:
        """``[B, n_L, H, W]``: the decoded SIRENs on the :func:`~nft_pyg.inr.make_grid` grid."""
        weights, biases = self(code)
        return render_image(weights, biases, resolution, w0=self.w0, w0_first=self.w0_first)

    def __repr__(self) -> str:
        sizes = "-".join(map(str, self.sizes))
        return (f"{type(self).__name__}({self.in_channels}, siren={sizes}, "
                f"hidden_channels={self.hidden_channels})")


def default_grid(num_latents: int) -> tuple[int, int]:
    """``(rows, cols)``, ``rows * cols = M``, as square as possible (rows <= cols)."""
    rows = max(r for r in range(1, math.isqrt(num_latents) + 1) if num_latents % r == 0)
    return rows, num_latents // rows


class SpatialSirenHypernetwork(SirenHypernetwork):
    r"""The "spatial" Inr2Array decoder: each of the :math:`M` latents
    renders its own patch of the image with its own small SIREN.

    **Regions.** The coordinate square :math:`[-1, 1]^2` (first coordinate
    = rows, as :func:`~nft_pyg.inr.make_grid`) is cut into a ``grid``
    :math:`R \times K = M` of equal cells; latent :math:`m = iK + j` owns
    cell :math:`(i, j)`. A pixel at :math:`(y, x)` lies in row
    :math:`i = \min(\lfloor (y + 1) R / 2 \rfloor, R - 1)` and column
    :math:`j = \min(\lfloor (x + 1) K / 2 \rfloor, K - 1)`.

    **Patch SIRENs.** One MLP shared by all latents maps latent
    :math:`\mathbf{l}_m` to the parameters of a SIREN of sizes
    ``patch_sizes`` (as :class:`SirenHypernetwork`: base + init-scaled MLP
    output); the SIREN of cell :math:`(i, j)` is evaluated at the pixel's
    *local* coordinates :math:`(2((y + 1) R / 2 - i) - 1,\ 2((x + 1) K / 2 -
    j) - 1) \in [-1, 1]^2`, so every patch SIREN sees its cell as the whole
    square. The image takes each pixel from the SIREN of its own cell (the
    implementation evaluates every patch SIREN on the whole grid and
    selects, :math:`M` times the work of one SIREN per pixel: cheap for
    small SIRENs).

    Args:
        channels (int): latent size :math:`d`.
        num_latents (int): :math:`M`.
        patch_sizes (list[int]): patch SIREN sizes ``[2, ..., n_out]``.
        w0, w0_first (float): frequencies of the patch SIRENs.
        hidden_channels (int): MLP width. (default: :obj:`256`)
        grid (tuple[int, int], optional): :math:`(R, K)` with :math:`RK = M`.
            (default: :func:`default_grid`)

    Shapes:
        - **input:** latents :math:`(B, M, d)`.
        - **output:** ``weights[i]`` :math:`(B, M, n_i, n_{i-1})`,
          ``biases[i]`` :math:`(B, M, n_i)`; :meth:`render` gives
          :math:`(B, n_{out}, H, W)`.
    """

    def __init__(self, channels: int, num_latents: int, patch_sizes: Sequence[int],
                 w0: float = 30.0, w0_first: float = 30.0, hidden_channels: int = 256,
                 grid: tuple[int, int] | None = None,
                 generator: torch.Generator | None = None):
        if int(patch_sizes[0]) != 2:
            raise ValueError(f"{type(self).__name__}: renders images: the patch SIREN needs 2 "
                             f"input coordinates, got sizes {list(patch_sizes)}")
        self.num_latents = int(num_latents)
        self.grid = default_grid(self.num_latents) if grid is None else tuple(map(int, grid))
        if len(self.grid) != 2 or self.grid[0] * self.grid[1] != self.num_latents:
            raise ValueError(f"{type(self).__name__}: grid {grid} must have rows * cols = "
                             f"num_latents = {num_latents}")
        super().__init__(channels, patch_sizes, w0, w0_first, hidden_channels, generator)

    def forward(self, latents: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        if latents.dim() != 3 or latents.size(1) != self.num_latents:
            raise ValueError(f"{type(self).__name__}: expects latents [B, {self.num_latents}, "
                             f"{self.in_channels}], got {tuple(latents.shape)}")
        return super().forward(latents)

    def regions(self, resolution) -> tuple[Tensor, Tensor]:
        """``(region [P], local [M, P, 2])``: each pixel's cell and every pixel's
        local coordinates in each cell's frame."""
        rows, cols = self.grid
        coords = make_grid(resolution, 2, dtype=self.base.dtype, device=self.base.device)
        cells = torch.tensor([rows, cols], dtype=coords.dtype, device=coords.device)
        scaled = (coords + 1) / 2 * cells                                   # [P, 2]
        index = scaled.floor().long().clamp(min=0)
        index = torch.minimum(index, torch.tensor([rows - 1, cols - 1], device=coords.device))
        region = index[:, 0] * cols + index[:, 1]
        m = torch.arange(self.num_latents, device=coords.device)
        corner = torch.stack([m // cols, m % cols], dim=-1).to(coords.dtype)  # [M, 2]
        local = 2 * (scaled.unsqueeze(0) - corner.unsqueeze(1)) - 1
        return region, local

    def render(self, latents: Tensor, resolution) -> Tensor:
        weights, biases = self(latents)
        batch = latents.size(0)
        region, local = self.regions(resolution)
        flat_w = [w.flatten(0, 1) for w in weights]
        flat_b = [b.flatten(0, 1) for b in biases]
        coords = local.repeat(batch, 1, 1)                                   # [B*M, P, 2]
        out = render_weights(flat_w, flat_b, coords, w0=self.w0, w0_first=self.w0_first)
        out = out.view(batch, self.num_latents, *out.shape[1:])              # [B, M, P, C]
        pixels = torch.arange(region.numel(), device=region.device)
        image = out[:, region, pixels]                                       # [B, P, C]
        size = (resolution, resolution) if isinstance(resolution, int) else tuple(resolution)
        return image.transpose(1, 2).reshape(batch, -1, *size)

    def __repr__(self) -> str:
        sizes = "-".join(map(str, self.sizes))
        return (f"{type(self).__name__}({self.in_channels}, num_latents={self.num_latents}, "
                f"grid={self.grid}, patch_siren={sizes})")


class Inr2Array(nn.Module):
    r"""Inr2Array of `"Neural Functional Transformers"
    <https://arxiv.org/abs/2305.13546>`_ (Zhou et al., NeurIPS 2023): an
    autoencoder from SIREN weights to a permutation-invariant latent array
    and back.

    **Encoder.** :class:`~nft_pyg.nn.models.nft.NFTEncoder` on the raw
    SIREN graph (Gaussian Fourier features of every weight and bias, layer
    and IO position embeddings, ``num_blocks`` NFT blocks, a final layer
    norm), then :class:`~nft_pyg.nn.nft_block.LatentCrossAttention`: ``M``
    learned queries attend over every edge and non-input node of each
    graph, giving the latent array :math:`\mathbf{L} \in \mathbb{R}^{M
    \times d}`. The blocks are equivariant and the cross-attention pools
    over each graph's whole token set, so :math:`\mathbf{L}` is invariant
    to relabelling the INR's hidden neurons (the IO encodings fix the input
    and output neurons, which are not permutable in an INR).

    **Decoder.** ``decoder="global"``: :class:`SirenHypernetwork` from the
    flattened :math:`\mathbf{L}` (:math:`Md` numbers) to every parameter of
    a SIREN with the architecture and frequencies of ``layout``.
    ``decoder="spatial"``: :class:`SpatialSirenHypernetwork`, each latent
    rendering its own cell of the image grid with a small SIREN of sizes
    ``[2, *patch_hidden, n_out]``.

    **Objective** (:meth:`loss`): the mean squared error between the image
    rendered by the decoded weights and the image rendered by the input
    INR's own weights (:func:`nft_pyg.inr.render_image`), both on the
    :func:`~nft_pyg.inr.make_grid` grid at ``resolution``.

    Args:
        layout (Layout or str): the input SIREN architecture (all graphs
            fed to the model have it; read off a graph's ``layout``).
        channels (int): latent size :math:`d` (also the encoder width).
            (default: :obj:`64`)
        num_latents (int): :math:`M`. (default: :obj:`16`)
        num_blocks (int): NFT blocks of the encoder. (default: :obj:`2`)
        heads (int): attention heads. (default: :obj:`4`)
        decoder (str): ``"global"`` or ``"spatial"``. (default: :obj:`"global"`)
        fourier_features (int): Fourier frequencies per scalar. (default: :obj:`16`)
        sigma (float): Fourier frequency scale. (default: :obj:`10.`)
        decoder_channels (int): hypernetwork MLP width. (default: :obj:`256`)
        patch_hidden (list[int]): hidden sizes of the spatial patch SIRENs.
            (default: :obj:`(16,)`)
        grid (tuple[int, int], optional): spatial cells :math:`R \times K = M`.
        dropout (float): dropout in the encoder. (default: :obj:`0.`)
        ff_channels (int, optional): feed-forward width of the blocks.

    Shapes:
        - **input:** a batch of raw SIREN graphs.
        - **output:** latents :math:`(B, M, d)`.
    """

    def __init__(self, layout: Layout | str, channels: int = 64, num_latents: int = 16,
                 num_blocks: int = 2, heads: int = 4, decoder: str = "global",
                 fourier_features: int = 16, sigma: float = 10.0, decoder_channels: int = 256,
                 patch_hidden: Sequence[int] = (16,), grid: tuple[int, int] | None = None,
                 dropout: float = 0.0, ff_channels: int | None = None):
        super().__init__()
        if decoder not in DECODERS:
            raise ValueError(f"Inr2Array: decoder must be one of {DECODERS}, got {decoder!r}")
        self.layout = Layout.coerce(layout)
        self.sizes, self.w0_first, self.w0 = siren_spec(self.layout)
        options = layout_options(self.layout)
        self.channels, self.num_latents = int(channels), int(num_latents)
        self.decoder_kind = decoder
        self.encoder = NFTEncoder(None, self.channels, options["num_layers"], num_blocks, heads,
                                  options["num_inputs"], options["num_outputs"],
                                  fourier_features=fourier_features, sigma=sigma,
                                  dropout=dropout, ff_channels=ff_channels)
        self.latent_pool = LatentCrossAttention(self.channels, self.num_latents, heads=heads,
                                                dropout=dropout)
        if decoder == "global":
            self.decoder = SirenHypernetwork(self.num_latents * self.channels, self.sizes,
                                             self.w0, self.w0_first, decoder_channels)
        else:
            patch = [self.sizes[0], *[int(h) for h in patch_hidden], self.sizes[-1]]
            self.decoder = SpatialSirenHypernetwork(self.channels, self.num_latents, patch,
                                                    self.w0, self.w0_first, decoder_channels,
                                                    grid)

    def reset_parameters(self) -> None:
        for module in (self.encoder, self.latent_pool, self.decoder):
            module.reset_parameters()

    def forward(self, graph, index: WeightGraphIndex | None = None) -> Tensor:
        """``[B, M, d]``: the latent arrays of a batch of SIREN graphs (``index``:
        its :class:`~nft_pyg.nn.structure.WeightGraphIndex`, built if not given)."""
        if index is None:
            index = WeightGraphIndex.from_data(graph, type(self).__name__)
        x, edge_attr = self.encoder(graph, index=index)
        return self.latent_pool(x, edge_attr, index)

    encode = forward

    def decode(self, latents: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """SIREN parameters from latents (see :class:`SirenHypernetwork` /
        :class:`SpatialSirenHypernetwork` for the shapes)."""
        return self.decoder(latents.flatten(1) if self.decoder_kind == "global" else latents)

    def render(self, latents: Tensor, resolution) -> Tensor:
        """``[B, n_out, H, W]``: the image the decoded weights render."""
        code = latents.flatten(1) if self.decoder_kind == "global" else latents
        return self.decoder.render(code, resolution)

    def target(self, graph, resolution) -> Tensor:
        """``[B, n_out, H, W]``: the images rendered by the input INRs' own weights."""
        ws = WeightSpace.from_graph(graph)
        if ws.layout.signature != self.layout.signature:
            raise ValueError(f"Inr2Array: built for SIRENs {self.sizes}, got a batch of "
                             f"{ws.layout.neuron_layer_sizes}")
        return render_image(ws.weights, ws.biases, resolution, w0=self.w0,
                            w0_first=self.w0_first)

    def loss(self, graph, resolution, return_images: bool = False,
             index: WeightGraphIndex | None = None):
        """Reconstruction MSE of :meth:`render` (of the encoded ``graph``)
        against :meth:`target`; with ``return_images`` also ``(pred, target)``."""
        with torch.no_grad():
            target = self.target(graph, resolution)
        pred = self.render(self(graph, index=index), resolution)
        loss = F.mse_loss(pred, target)
        return (loss, pred, target) if return_images else loss

    @torch.no_grad()
    def encode_dataset(self, loader, label_key: str = "y") -> tuple[Tensor, Tensor | None]:
        """``(latents [K, M, d], labels [K] or None)`` of every batch of
        ``loader`` (in eval mode), ready for :func:`save_latents`."""
        was_training = self.training
        self.eval()
        latents, labels = [], []
        for batch in loader:
            latents.append(self(batch))
            label = getattr(batch, label_key, None)
            if label is not None:
                labels.append(label.reshape(-1))
        self.train(was_training)
        all_labels = torch.cat(labels) if labels and len(labels) == len(latents) else None
        return torch.cat(latents), all_labels

    def __repr__(self) -> str:
        sizes = "-".join(map(str, self.sizes))
        return (f"{type(self).__name__}(siren={sizes}, channels={self.channels}, "
                f"num_latents={self.num_latents}, num_blocks={len(self.encoder.blocks)}, "
                f"decoder={self.decoder_kind!r})")


class LatentClassifier(nn.Module):
    r"""A small transformer classifier on Inr2Array latent arrays (Zhou et al.,
    "Neural Functional Transformers", NeurIPS 2023, arXiv 2305.13546).

    .. math::
        \mathbf{y} = W \, \mathrm{mean}_m\, \mathrm{LN}\big(
        \mathrm{Transformer}(\mathbf{L} + \mathbf{P})_m\big) + \mathbf{b},

    a ``depth``-layer pre-norm transformer encoder over the :math:`M`
    latents, mean pooling and a linear layer. The latents of Inr2Array come
    in a fixed order (that of its queries; for the spatial decoder, the
    image cells), so with ``num_latents`` a learned position embedding
    :math:`\mathbf{P}` tells them apart; without it the classifier is
    invariant to the order of the latents.

    Args:
        channels (int): latent size :math:`d`.
        num_classes (int): outputs.
        depth (int): transformer layers. (default: :obj:`2`)
        heads (int): attention heads. (default: :obj:`4`)
        ff_channels (int, optional): feed-forward width. (default: :obj:`2d`)
        dropout (float): dropout. (default: :obj:`0.`)
        num_latents (int, optional): :math:`M`, for position embeddings.

    Shapes:
        - **input:** :math:`(B, M, d)`.
        - **output:** :math:`(B, \text{num\_classes})`.
    """

    def __init__(self, channels: int, num_classes: int, depth: int = 2, heads: int = 4,
                 ff_channels: int | None = None, dropout: float = 0.0,
                 num_latents: int | None = None):
        super().__init__()
        if min(int(channels), int(num_classes), int(heads)) < 1 or int(depth) < 0 or \
                channels % heads:
            raise ValueError(f"LatentClassifier: needs channels ({channels}) a positive "
                             f"multiple of heads ({heads}), num_classes >= 1, depth >= 0")
        self.channels, self.num_classes = int(channels), int(num_classes)
        self.num_latents = None if num_latents is None else int(num_latents)
        layer = nn.TransformerEncoderLayer(
            self.channels, heads, 2 * self.channels if ff_channels is None else ff_channels,
            dropout, activation="gelu", batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, int(depth),
                                                 enable_nested_tensor=False) if depth else None
        self.position = (None if self.num_latents is None
                         else nn.Parameter(torch.zeros(self.num_latents, self.channels)))
        self.norm = nn.LayerNorm(self.channels)
        self.head = nn.Linear(self.channels, self.num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.transformer is not None:
            # nn.TransformerEncoder deep-copies one layer: re-draw each layer's own init
            for layer in self.transformer.layers:
                for module in layer.modules():
                    if isinstance(module, nn.MultiheadAttention):
                        module._reset_parameters()
                    elif module is not layer and hasattr(module, "reset_parameters"):
                        module.reset_parameters()
        if self.position is not None:
            nn.init.normal_(self.position, std=0.02)
        self.norm.reset_parameters()
        self.head.reset_parameters()

    def forward(self, latents: Tensor) -> Tensor:
        if latents.dim() != 3 or latents.size(-1) != self.channels:
            raise ValueError(f"LatentClassifier: expects latents [B, M, {self.channels}], got "
                             f"{tuple(latents.shape)}")
        if self.position is not None:
            if latents.size(1) != self.num_latents:
                raise ValueError(f"LatentClassifier: built for {self.num_latents} latents, "
                                 f"got {latents.size(1)}")
            latents = latents + self.position
        if self.transformer is not None:
            latents = self.transformer(latents)
        return self.head(self.norm(latents).mean(dim=1))

    def __repr__(self) -> str:
        depth = 0 if self.transformer is None else len(self.transformer.layers)
        return (f"{type(self).__name__}({self.channels}, {self.num_classes}, depth={depth}, "
                f"num_latents={self.num_latents})")


def save_latents(path: str | os.PathLike, latents: Tensor, labels: Tensor | None = None) -> None:
    """Write latent arrays ``[K, M, d]`` (and labels ``[K]``) atomically
    (:func:`nft_pyg.utils.io.atomic_save`); read back with :func:`load_latents`."""
    if not isinstance(latents, Tensor) or latents.dim() != 3:
        raise ValueError(f"save_latents: latents must be a [K, M, d] tensor, got "
                         f"{getattr(latents, 'shape', type(latents).__name__)}")
    if labels is not None and (not isinstance(labels, Tensor) or labels.dim() != 1
                               or labels.size(0) != latents.size(0)):
        raise ValueError(f"save_latents: labels must be a [{latents.size(0)}] tensor, got "
                         f"{getattr(labels, 'shape', type(labels).__name__)}")
    atomic_save({"format": LATENTS_FORMAT, "latents": latents.detach().cpu().contiguous(),
                 "labels": None if labels is None else labels.detach().cpu().contiguous()},
                path)


def load_latents(path: str | os.PathLike) -> tuple[Tensor, Tensor | None]:
    """``(latents [K, M, d], labels [K] or None)`` from a :func:`save_latents`
    file, loaded with ``torch.load(weights_only=True)``; a file of another
    form raises :class:`~nft_pyg.utils.io.CorruptFileError`."""
    data = safe_load(path, dict)
    latents, labels = data.get("latents"), data.get("labels")
    if data.get("format") != LATENTS_FORMAT or not isinstance(latents, Tensor) or \
            latents.dim() != 3 or not (labels is None or (isinstance(labels, Tensor) and
                                                          labels.shape == latents.shape[:1])):
        raise CorruptFileError(f"{path}: not a latents file written by save_latents")
    return latents, labels


__all__ = [
    "Inr2Array",
    "LatentClassifier",
    "SirenHypernetwork",
    "SpatialSirenHypernetwork",
    "default_grid",
    "load_latents",
    "save_latents",
    "siren_spec",
]
