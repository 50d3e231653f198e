"""The tasks' evaluation metrics as torchmetrics, fed batch by batch.

Each task has a factory (fresh metrics for one evaluation of one split) and
an ``update(model, batch, metrics)``; the trainer moves the metrics to the
model's device, feeds every batch and computes them at the end (every rank
evaluates the whole split, so nothing is synchronised between processes).
The trainer accumulates them in float64
(:func:`~nft_pyg.tasks.engine.fresh_metrics`). The tests check them against
whole-split computations (scipy's Kendall tau, scikit-learn's R^2).
"""
from __future__ import annotations

import math

import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy
from torchmetrics.regression import KendallRankCorrCoef, MeanSquaredError, R2Score


# --- INR classification -------------------------------------------------------------
def classification_metrics(num_classes: int = 10) -> dict:
    """Accuracy (over all graphs) and the mean cross-entropy."""
    return {"accuracy": MulticlassAccuracy(num_classes, average="micro"), "loss": MeanMetric()}


def classification_update(model: nn.Module, batch, metrics: dict) -> None:
    logits = model(batch)
    labels = batch.y.view(-1)
    metrics["accuracy"].update(logits, labels)
    metrics["loss"].update(F.cross_entropy(logits, labels, reduction="none"))


# --- generalization prediction --------------------------------------------------------------
def generalization_metrics() -> dict:
    """Kendall tau (variant b, as scipy's), R^2 and the mean squared error."""
    return {"kendall_tau": KendallRankCorrCoef(), "r2": R2Score(), "mse": MeanSquaredError()}


def generalization_update(model: nn.Module, batch, metrics: dict) -> None:
    pred, target = model(batch).view(-1).double(), batch.y.view(-1).double()
    for metric in metrics.values():
        metric.update(pred, target)


def generalization_finish(values: dict[str, float]) -> dict[str, float]:
    # a constant prediction has no ranking: tau is NaN, counted as 0 (no skill)
    if math.isnan(values["kendall_tau"]):
        values = {**values, "kendall_tau": 0.0}
    return values


# --- INR editing -------------------------------------------------------------------------------
def editing_metrics() -> dict:
    """Mean per-graph MSE of the edited renderings against the dilated digit,
    and of the unedited ones."""
    return {"mse": MeanMetric(), "mse_unedited": MeanMetric()}
