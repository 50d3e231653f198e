"""A layered drawing of a neuron graph (matplotlib, no display needed; extra ``plot``)."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch_geometric.data import Batch, Data

from ..utils.extras import optional_import

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def draw(graph: Data, path: str | os.PathLike | None = None, ax=None,
         node_size: float | None = None, cmap_edges: str = "viridis",
         cmap_nodes: str = "coolwarm") -> Figure:
    """Draw a single neuron graph: one column per neuron layer, inputs on the left.

    Edge colour and width follow the weight magnitude (the norm of the
    edge's kernel / feature vector); strong edges are drawn on top and weak
    ones nearly transparent, so graphs of a few hundred neurons stay
    readable. Node colour is the bias (``x[:, 0]`` of a raw graph, on a
    diverging scale centred at 0) or the norm of the node features of a
    feature graph.

    Args:
        graph (NeuronGraph): one graph (use ``batch.get_example(i)`` for a batch).
        path (str, optional): save the figure there as PNG.
        ax (matplotlib.axes.Axes, optional): draw into these axes; by default
            a new figure is made (with the Agg canvas: no display needed).
        node_size (float, optional): marker area; default shrinks with the
            widest layer.

    Returns:
        matplotlib.figure.Figure: the figure drawn on.
    """
    if isinstance(graph, Batch):
        raise ValueError("draw: got a batch of graphs; draw one of them "
                         "(batch.get_example(i))")
    for key in ("edge_index", "node_layer", "node_pos"):
        if getattr(graph, key, None) is None:
            raise ValueError(f"draw: the graph has no {key}; build it with nft_pyg.from_module")
    matplotlib = optional_import("matplotlib", "nft_pyg.symmetry.draw")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.collections import LineCollection
    from matplotlib.colors import Normalize, TwoSlopeNorm
    from matplotlib.figure import Figure

    layer = graph.node_layer.cpu().numpy()
    pos = graph.node_pos.cpu().numpy()
    sizes = np.bincount(layer)
    # each column spans [0, 1] vertically whatever its size, position 0 on top
    y = 1.0 - (pos + 0.5) / sizes[layer]
    xy = np.stack([layer.astype(float), y], axis=1)

    if ax is None:
        figure = Figure(figsize=(max(5.0, 1.8 * len(sizes) + 1.5), 5.0))
        FigureCanvasAgg(figure)
        ax = figure.add_subplot()
    else:
        figure = ax.figure

    src, dst = graph.edge_index.cpu().numpy()
    edge_scale = None
    if src.size:
        magnitude = _row_norm(graph.edge_attr, src.size)
        top = float(magnitude.max()) or 1.0
        scale = magnitude / top
        # fade and thin the edges of crowded weight layers so they do not paint a solid block
        edge_layer = layer[dst]
        per_layer = np.bincount(edge_layer)[edge_layer]
        crowd = np.minimum(1.0, np.sqrt(150.0 / per_layer))
        edge_norm = Normalize(0.0, top)
        colours = matplotlib.colormaps[cmap_edges](edge_norm(magnitude))
        colours[:, 3] = np.clip((0.12 + 0.88 * scale) * crowd, 0.01, 1.0)
        order = np.argsort(magnitude)
        segments = np.stack([xy[src], xy[dst]], axis=1)
        lines = LineCollection(segments[order], colors=colours[order],
                               linewidths=np.maximum(0.1, (0.3 + 2.2 * scale) * crowd)[order],
                               zorder=1)
        ax.add_collection(lines)
        edge_scale = ScalarMappable(norm=edge_norm, cmap=cmap_edges)

    values, signed = _node_values(graph)
    if signed:
        bound = float(np.abs(values).max()) or 1.0
        norm = TwoSlopeNorm(0.0, -bound, bound)
    else:
        norm = Normalize(0.0, float(values.max()) or 1.0)
    area = node_size if node_size is not None else float(np.clip(2000 / sizes.max(), 4, 120))
    points = ax.scatter(xy[:, 0], xy[:, 1], c=values, cmap=cmap_nodes, norm=norm, s=area,
                        edgecolors="black", linewidths=0.3 if area > 10 else 0.0, zorder=2)
    figure.colorbar(points, ax=ax, fraction=0.04, pad=0.02,
                    label="bias" if signed else "|node features|")
    if edge_scale is not None:
        figure.colorbar(edge_scale, ax=ax, location="bottom", fraction=0.05, pad=0.22,
                        aspect=40, label="|weight|" if signed else "|edge features|")
    ax.set_xticks(range(len(sizes)))
    ax.set_xticklabels([f"{l}\n({n})" for l, n in enumerate(sizes)])
    ax.set_xlabel("neuron layer (size)")
    ax.set_yticks([])
    ax.set_xlim(-0.3, len(sizes) - 0.7)
    ax.set_ylim(-0.03, 1.03)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    if path is not None:
        figure.savefig(path, format="png", dpi=120, bbox_inches="tight")
    return figure


def _row_norm(values, rows: int) -> np.ndarray:
    if values is None:
        return np.ones(rows)
    values = torch.as_tensor(values).detach().to(torch.float64).reshape(rows, -1)
    return values.norm(dim=1).cpu().numpy()


def _node_values(graph: Data) -> tuple[np.ndarray, bool]:
    """(colour value of each node, whether it is signed)."""
    x = getattr(graph, "x", None)
    if x is None:
        return np.zeros(graph.num_nodes), True
    x = x.detach().to(torch.float64).reshape(graph.num_nodes, -1)
    if x.size(1) == 1:
        return x[:, 0].cpu().numpy(), True
    return x.norm(dim=1).cpu().numpy(), False
