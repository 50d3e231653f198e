"""``DigitsINR``: SIRENs fitted to the scikit-learn digits.

Each 8x8 digit is upsampled (bilinear) to ``resolution x resolution``
(28x28 by default, the size of MNIST) and fitted by a SIREN
(:func:`nft_pyg.inr.siren`, coordinates in ``[-1, 1]^2``, grey value in
``[0, 1]``) with :func:`nft_pyg.inr.fit_sirens`. Training images get
``extra_fits`` more SIRENs fitted from other initialisations, the
weight-space augmentation of NFN / DWSNets; the split is by source image,
so all fits of one digit are in the same split. Training digits can also
get ``image_views`` randomly moved copies (small rotations, scalings and
shifts, :func:`digit_view`), each fitted once: more distinct training
images, where extra fits only add more weight-space copies of the same
image. By default all main fits start from one shared initialisation (and
the ``k``-th extra fits from a ``k``-th one), see ``shared_init``.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..graph.convert import layout_of
from ..graph.layout import Layout
from ..graph.neuron_graph import NeuronGraph
from ..inr import fit_sirens, siren
from ..inr.fit import check_bias_init
from ..utils.extras import optional_import
from ..utils.threads import one_thread
from .digits_cnn_zoo import load_digits_tensors
from .generated import SPLITS, GeneratedDataset, assign_splits, fitted_siren_graph

SIZES: dict[str, dict[str, Any]] = {
    "small": {"num_images": 120, "extra_fits": 1, "steps": 100, "images_per_shard": 30},
    "full": {"num_images": 1797, "extra_fits": 2, "steps": 200, "images_per_shard": 64},
}


def digit_images(resolution: int) -> tuple[Tensor, Tensor]:
    """All 1,797 digits upsampled to ``[1797, 1, resolution, resolution]`` in
    ``[0, 1]``, and their labels."""
    images, labels = load_digits_tensors()
    if resolution != images.shape[-1]:
        images = F.interpolate(images, size=(resolution, resolution), mode="bilinear",
                               align_corners=False).clamp_(0.0, 1.0)
    return images, labels


#: the largest rotation (radians), relative scaling and shift (in units of the
#: image side) of :func:`digit_view`
VIEW_ROTATION, VIEW_SCALING, VIEW_SHIFT = math.radians(12.0), 0.1, 0.08


def digit_view(image: Tensor, seed: int) -> Tensor:
    """A randomly moved copy of ``image`` ``[1, H, W]``: rotated by up to
    12 degrees, scaled by 0.9-1.1 and shifted by up to 8 % of the side (the
    same draw for the same ``seed``), zero (background) outside the digit."""
    generator = torch.Generator().manual_seed(seed)
    angle, scaling, shift_y, shift_x = (2 * torch.rand(4, generator=generator) - 1).tolist()
    angle *= VIEW_ROTATION
    zoom = 1.0 + VIEW_SCALING * scaling
    cos, sin = math.cos(angle) / zoom, math.sin(angle) / zoom
    # affine_grid works in [-1, 1] coordinates: a shift of 8 % of the side is 0.16
    theta = torch.tensor([[cos, -sin, 2 * VIEW_SHIFT * shift_x],
                          [sin, cos, 2 * VIEW_SHIFT * shift_y]], dtype=image.dtype)
    grid = F.affine_grid(theta[None], [1, *image.shape], align_corners=False)
    return F.grid_sample(image[None], grid, align_corners=False)[0].clamp_(0.0, 1.0)


class DigitsINR(GeneratedDataset):
    r"""SIRENs of the scikit-learn digits, as neuron graphs.

    Each graph is one SIREN (``2 -> hidden -> 1``, sine activations) with

    - ``y`` ``[1]`` (long): the digit's class;
    - ``image`` ``[1, 1, H, W]``: the image the SIREN was fitted to (the
      upsampled source digit), e.g. the target of editing tasks;
    - ``source_id`` ``[1]`` (long): the digit's index in
      ``sklearn.datasets.load_digits()``;
    - ``fit_id`` ``[1]`` (long): 0 for the main fit, ``1..extra_fits`` for
      the augmentation copies (training split only);
    - ``view_id`` ``[1]`` (long): 0 for the digit itself, ``1..image_views``
      for its moved copies (training split only; ``image`` is the copy);
    - ``psnr`` ``[1]``: the fit's PSNR (dB) on its image.

    Args:
        root (str): dataset folder.
        split (str): ``"train"``, ``"val"`` or ``"test"`` (70 / 15 / 15 % of
            the source images).
        size (str): ``"small"`` (120 digits, 1 extra fit, 100 steps: ~200
            INRs) or ``"full"`` (all 1,797 digits, 2 extra fits, 200 steps).
        seed (int): selects the digits, the split and every initialisation.
        num_images, extra_fits, steps: override the size's values.
        resolution (int): side of the fitted images (default 28).
        hidden (sequence of int): SIREN hidden widths (default ``(32, 32)``).
        lr (float): peak Adam learning rate of the fits (cosine decay).
        w0 (float): sine frequency.
        images_per_shard (int): source digits per shard.
        image_views (int): randomly moved copies (:func:`digit_view`) of each
            training digit, each fitted once from the main fits'
            initialisation(s) (default ``0``).
        shared_init (bool): fit every digit's main SIREN from ONE shared
            initialisation (and the ``k``-th extra fit of every digit from a
            ``k``-th shared one) instead of one random initialisation per fit
            (default ``True``). Fits of similar digits then stay close in
            weight space: on the small variant (120 digits) the flat-weight
            MLP's test accuracy goes from 0.11 to 0.67 with the same fit
            quality (mean PSNR 40.5 vs 40.2 dB). ``False`` gives the
            independent fits of datasets built before this option.
        shared_first_layers (int): with ``shared_init=False``, start the
            first ``k`` layers of every SIREN from one shared draw (the same
            in all shards) and the rest from independent ones (default ``0``):
            tells how much of the difficulty of independent fits lies in the
            first layers, which fitting moves least.
        bias_init (str): ``"uniform"`` (default, the SIREN init of
            :func:`nft_pyg.inr.siren`) or ``"zero"``: every fit starts with
            zero biases, as the MNIST INRs of DWSNets / NFN do. Random biases
            are random phases of every sine (up to 21 radians in the first
            layer) that fitting hardly moves.
        transform, num_workers, progress: see
            :class:`~nft_pyg.datasets.generated.GeneratedDataset`.
    """

    name = "digits_inr"

    def __init__(self, root: str, split: str = "train", size: str = "small", seed: int = 0,
                 num_images: int | None = None, extra_fits: int | None = None,
                 steps: int | None = None, resolution: int = 28,
                 hidden: Sequence[int] = (32, 32), lr: float = 3e-3, w0: float = 30.0,
                 images_per_shard: int | None = None, image_views: int = 0,
                 shared_init: bool = True, shared_first_layers: int = 0,
                 bias_init: str = "uniform", transform: Callable | None = None,
                 num_workers: int = 2, progress: bool = True):
        if size not in SIZES:
            raise ValueError(f"DigitsINR: size must be one of {sorted(SIZES)}, got {size!r}")
        preset = SIZES[size]
        self.size = size
        self.seed = int(seed)
        self.num_images = int(num_images if num_images is not None else preset["num_images"])
        self.extra_fits = int(extra_fits if extra_fits is not None else preset["extra_fits"])
        self.steps = int(steps if steps is not None else preset["steps"])
        self.images_per_shard = int(images_per_shard or preset["images_per_shard"])
        self.resolution, self.hidden = int(resolution), tuple(int(h) for h in hidden)
        self.lr, self.w0 = float(lr), float(w0)
        self.shared_init = bool(shared_init)
        self.image_views = int(image_views)
        self.shared_first_layers = int(shared_first_layers)
        self.bias_init = str(bias_init)
        check_bias_init(self.bias_init, "DigitsINR")
        if self.shared_first_layers and (self.shared_init or not
                                         0 < self.shared_first_layers <= len(self.hidden)):
            raise ValueError(f"DigitsINR: shared_first_layers={shared_first_layers} needs "
                             f"shared_init=False and must be in 1..{len(self.hidden)} (the "
                             "hidden layers; 0 for none)")
        if not 3 <= self.num_images <= 1797:
            raise ValueError(f"DigitsINR: num_images must be in [3, 1797], got {num_images}")
        if min(self.extra_fits, self.steps, self.image_views) < 0 or self.images_per_shard < 1:
            raise ValueError("DigitsINR: extra_fits, steps and image_views must be >= 0 and "
                             "images_per_shard >= 1")
        order = torch.randperm(1797, generator=torch.Generator().manual_seed(self.seed))
        self.source_ids = order[: self.num_images].tolist()
        splits = assign_splits(self.num_images, self.seed + 1, "DigitsINR images")
        self.source_splits = dict(zip(self.source_ids, splits))
        super().__init__(root, split, transform, num_workers, progress)

    def config(self) -> dict[str, Any]:
        config = {"num_images": self.num_images, "extra_fits": self.extra_fits,
                  "steps": self.steps, "resolution": self.resolution,
                  "hidden": list(self.hidden), "lr": self.lr, "w0": self.w0, "seed": self.seed,
                  "images_per_shard": self.images_per_shard, "shared_init": self.shared_init,
                  "version": 1}
        if self.image_views:   # absent when 0: datasets built before views keep their files
            config["image_views"] = self.image_views
        if self.shared_first_layers:
            config["shared_first_layers"] = self.shared_first_layers
        if self.bias_init != "uniform":
            config["bias_init"] = self.bias_init
        return config

    def view_seed(self, source: int, view: int) -> int:
        return self.seed * 1_000_003 + 7_919 * source + view

    def fitted_images(self, source_ids: Sequence[int], view_ids: Sequence[int]) -> Tensor:
        """``[K, 1, H, W]``: the image each INR was fitted to (the digit, or
        its ``view_id``-th moved copy)."""
        images, _ = digit_images(self.resolution)
        return torch.stack([images[s] if v == 0 else digit_view(images[s], self.view_seed(s, v))
                            for s, v in zip(source_ids, view_ids)])

    @property
    def num_shards(self) -> int:
        return math.ceil(self.num_images / self.images_per_shard)

    @property
    def layout(self) -> Layout:
        """The layout shared by every SIREN of the dataset."""
        return layout_of(siren(2, self.hidden, 1, self.w0, self.w0))

    def generate_shard(self, index: int) -> dict[str, Any]:
        sources = self.source_ids[index * self.images_per_shard:
                                  (index + 1) * self.images_per_shard]
        source_ids, fit_ids, view_ids = [], [], []
        for source in sources:
            train = self.source_splits[source] == "train"
            fits = 1 + self.extra_fits if train else 1
            views = self.image_views if train else 0
            source_ids += [source] * (fits + views)
            fit_ids += list(range(fits)) + [0] * views
            view_ids += [0] * fits + list(range(1, views + 1))
        images = self.fitted_images(source_ids, view_ids)
        options = dict(hidden=self.hidden, steps=self.steps, lr=self.lr, w0=self.w0,
                       w0_first=self.w0, bias_init=self.bias_init, progress=False)
        with one_thread():
            if not self.shared_init:
                fit = fit_sirens(images, seed=self.seed * 1_000_003 + index,
                                 shared_first_layers=self.shared_first_layers,
                                 shared_seed=self.seed * 1_000_003 + 500_009, **options)
                weights, biases, psnrs = fit.weights, fit.biases, fit.psnr
            else:  # one fit per fit id, its init shared by all shards
                fit_tensor = torch.tensor(fit_ids)
                groups = [(fit_tensor == k).nonzero().view(-1)
                          for k in range(int(fit_tensor.max()) + 1)]
                fits = [fit_sirens(images[rows], shared_init=True,
                                   seed=self.seed * 1_000_003 + 500_009 + k, **options)
                        for k, rows in enumerate(groups)]
                weights = [torch.empty(len(fit_ids), *w.shape[1:]) for w in fits[0].weights]
                biases = [torch.empty(len(fit_ids), *b.shape[1:]) for b in fits[0].biases]
                psnrs = torch.empty(len(fit_ids))
                for rows, fit in zip(groups, fits):
                    for full, part in zip(weights + biases, fit.weights + fit.biases):
                        full[rows] = part
                    psnrs[rows] = fit.psnr
        names = [layer.name for layer in self.layout.weight_layers()]
        params = {}
        for name, weight, bias in zip(names, weights, biases):
            params[f"{name}.weight"], params[f"{name}.bias"] = weight, bias
        return {"source_ids": torch.tensor(source_ids), "fit_ids": torch.tensor(fit_ids),
                "view_ids": torch.tensor(view_ids), "params": params, "psnr": psnrs}

    def shard_graphs(self, shard: dict[str, Any]) -> dict[str, list[NeuronGraph]]:
        _, labels = digit_images(self.resolution)
        source_ids = shard["source_ids"].tolist()
        # shards written before image views existed have no view ids: all 0
        view_ids = shard["view_ids"].tolist() if "view_ids" in shard else [0] * len(source_ids)
        images = self.fitted_images(source_ids, view_ids)
        layout = self.layout
        graphs: dict[str, list[NeuronGraph]] = {split: [] for split in SPLITS}
        for i, (source, fit_id, view_id) in enumerate(zip(source_ids, shard["fit_ids"].tolist(),
                                                          view_ids)):
            graph = fitted_siren_graph(shard, i, layout, source, fit_id, labels[source],
                                       images[i], view_id=view_id)
            graphs[self.source_splits[source]].append(graph)
        return graphs


def save_renderings(dataset: DigitsINR, path: str, count: int = 8,
                    super_resolution: int = 3) -> None:
    """Save a figure of ``count`` SIRENs of ``dataset``: the 8x8 source digit,
    the image it was fitted to, its rendering at that resolution and at
    ``super_resolution`` times that resolution (a SIREN is continuous).
    Needs matplotlib."""
    matplotlib = optional_import("matplotlib", "DigitsINR renderings")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..graph.convert import to_module
    from ..inr import make_grid

    sources, _ = load_digits_tensors()
    res = dataset.resolution
    graphs = [dataset[i] for i in range(min(count, len(dataset)))]
    rows = ("source 8x8", f"target {res}x{res}", f"SIREN {res}x{res}",
            f"SIREN {res * super_resolution}x{res * super_resolution}")
    figure, axes = plt.subplots(len(rows), len(graphs), squeeze=False,
                                figsize=(1.2 * len(graphs), 1.3 * len(rows)))
    for column, graph in enumerate(graphs):
        module = to_module(graph).eval()
        with torch.no_grad():
            renders = [module(make_grid(r)).view(r, r)
                       for r in (res, res * super_resolution)]
        pictures = [sources[graph.source_id.item(), 0], graph.image[0, 0], *renders]
        for row, picture in enumerate(pictures):
            axis = axes[row, column]
            axis.imshow(picture.clamp(0, 1).numpy(), cmap="gray", vmin=0, vmax=1)
            axis.set_xticks([])
            axis.set_yticks([])
            if column == 0:
                axis.set_ylabel(rows[row], fontsize=7)
        axes[0, column].set_title(f"label {graph.y.item()}\n{graph.psnr.item():.1f} dB",
                                  fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
