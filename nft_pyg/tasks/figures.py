"""Figures of the tasks (matplotlib with the Agg canvas: no display needed)."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..utils.extras import optional_import


def _figure(rows: int, cols: int, width: float = 1.6, height: float = 1.7):
    optional_import("matplotlib", "the task figures")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width * cols, height * rows + 0.4))
    FigureCanvasAgg(figure)
    return figure, figure.subplots(rows, cols, squeeze=False)


def spread_indices(length: int, count: int) -> list[int]:
    """``min(count, length)`` indices spread evenly over ``range(length)``."""
    count = min(count, length)
    return [round(i * (length - 1) / max(count - 1, 1)) for i in range(count)]


def save_editing_figure(model: nn.Module, dataset, path: str | Path, count: int = 6) -> None:
    """Rows: the source INR's rendering, the target (dilated digit), the
    edited INR's rendering, for ``count`` graphs spread evenly over
    ``dataset`` (datasets stored class by class show several classes)."""
    from ..graph.collate import collate_graphs
    from .specs import dilate, edit_images, render_graph

    graphs = [dataset[i] for i in spread_indices(len(dataset), count)]
    batch = collate_graphs(graphs)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        rows = [render_graph(batch), dilate(batch.image), edit_images(model, batch)]
    model.train(was_training)
    figure, axes = _figure(3, len(graphs))
    names = ("source INR", "target (dilated)", "edited INR")
    for r, (images, name) in enumerate(zip(rows, names)):
        for i in range(len(graphs)):
            ax = axes[r, i]
            ax.imshow(images[i, 0].clamp(0, 1).numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_ylabel(name, fontsize=9)
        mse = (rows[2] - rows[1]).pow(2).flatten(1).mean(1)
    for i in range(len(graphs)):
        axes[2, i].set_title(f"MSE {float(mse[i]):.4f}", fontsize=8)
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
