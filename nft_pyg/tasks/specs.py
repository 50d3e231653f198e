"""Loss and metrics of each task (:class:`~nft_pyg.tasks.trainer.TaskSpec`)."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ..graph.accessors import is_input_neuron
from ..inr import render_image
from ..nn.models.inr2array import siren_spec
from . import metrics as torchmetrics_of
from .models import Inr2ArrayClassifier
from .trainer import TaskSpec


def _unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)


# --- INR classification -----------------------------------------------------------
def classification_loss(model: nn.Module, batch) -> Tensor:
    if isinstance(_unwrap(model), Inr2ArrayClassifier):
        logits, reconstruction = model(batch, with_reconstruction=True)
        return F.cross_entropy(logits, batch.y.view(-1)) + reconstruction
    return F.cross_entropy(model(batch), batch.y.view(-1))


CLASSIFICATION = TaskSpec(classification_loss, "accuracy", True,
                          torchmetrics_of.classification_metrics,
                          torchmetrics_of.classification_update)


# --- generalization prediction -------------------------------------------------------
def generalization_loss(model: nn.Module, batch) -> Tensor:
    return F.mse_loss(model(batch).view(-1), batch.y.view(-1).float())


GENERALIZATION = TaskSpec(generalization_loss, "kendall_tau", True,
                          torchmetrics_of.generalization_metrics,
                          torchmetrics_of.generalization_update,
                          torchmetrics_of.generalization_finish)


# --- INR editing (dilation) ----------------------------------------------------------------
def dilate(images: Tensor, size: int = 3) -> Tensor:
    """Grey-scale morphological dilation with a ``size x size`` square, equal
    to ``scipy.ndimage.grey_dilation(image, size=(size, size))`` (a max filter;
    at the border the window is cut, which gives the same maximum as scipy's
    default reflection)."""
    return F.max_pool2d(images, size, stride=1, padding=size // 2)


def siren_parameters(graph, x: Tensor | None = None, edge_attr: Tensor | None = None
                     ) -> tuple[list[Tensor], list[Tensor], float, float]:
    """Stacked SIREN weights ``[B, n_l, n_{l-1}]`` and biases ``[B, n_l]`` of a
    batch of raw SIREN graphs of one architecture (differentiable in ``x`` /
    ``edge_attr``, default the graph's), and the sine frequencies."""
    x = graph.x if x is None else x
    edge_attr = graph.edge_attr if edge_attr is None else edge_attr
    layouts = graph.layout if isinstance(graph.layout, (list, tuple)) else [graph.layout]
    sizes, w0_first, w0 = siren_spec(layouts[0], "siren_parameters")
    num_graphs = len(layouts)
    # canonical order: edges by layer then row-major, nodes by layer then position
    edges = edge_attr[:, 0].reshape(num_graphs, -1)
    biases = x[~is_input_neuron(graph), 0].reshape(num_graphs, -1)
    weights, bias_list, e, b = [], [], 0, 0
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        weights.append(edges[:, e:e + fan_in * fan_out].reshape(num_graphs, fan_out, fan_in))
        bias_list.append(biases[:, b:b + fan_out])
        e, b = e + fan_in * fan_out, b + fan_out
    return weights, bias_list, w0, w0_first


def render_graph(graph, x: Tensor | None = None, edge_attr: Tensor | None = None
                 ) -> Tensor:
    """``[B, 1, H, W]``: the images of a batch of SIREN graphs (the
    resolution of ``graph.image``)."""
    weights, biases, w0, w0_first = siren_parameters(graph, x, edge_attr)
    return render_image(weights, biases, tuple(graph.image.shape[-2:]), w0=w0,
                        w0_first=w0_first)


def edit_images(model: nn.Module, batch) -> Tensor:
    x_delta, edge_delta = model(batch)
    return render_graph(batch, batch.x + x_delta, batch.edge_attr + edge_delta)


def editing_loss(model: nn.Module, batch) -> Tensor:
    return F.mse_loss(edit_images(model, batch), dilate(batch.image))


def editing_update(model: nn.Module, batch, metrics: dict) -> None:
    """Feed one batch into :func:`~nft_pyg.tasks.metrics.editing_metrics`."""
    target = dilate(batch.image)
    metrics["mse"].update((edit_images(model, batch) - target).pow(2).flatten(1).mean(1))
    metrics["mse_unedited"].update((render_graph(batch) - target).pow(2).flatten(1).mean(1))


EDITING = TaskSpec(editing_loss, "mse", False,
                   torchmetrics_of.editing_metrics, editing_update)

SPECS = {"classification": CLASSIFICATION, "generalization": GENERALIZATION,
         "editing": EDITING}
