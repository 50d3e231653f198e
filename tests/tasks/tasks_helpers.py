"""Tiny graphs and a tiny task for the trainer tests."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric

from nft_pyg import from_module
from nft_pyg.nn.models.nfn import NFN
from nft_pyg.tasks.trainer import TaskSpec


def tiny_graphs(count: int, seed: int = 0, dtype=torch.float64) -> list:
    """Random 3-4-2 MLPs as raw graphs, ``y`` = a class from their weights."""
    torch.manual_seed(seed)
    graphs = []
    for i in range(count):
        module = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).to(dtype)
        graph = from_module(module)
        graph.y = torch.tensor([i % 2])
        graphs.append(graph)
    return graphs


def tiny_model(seed: int = 0, pool_norm: bool = False) -> nn.Module:
    torch.manual_seed(seed)
    return NFN("np", num_layers=2, hidden_channels=4, out_channels=2, num_nf_layers=1,
               head_hidden=8, pool_norm=pool_norm).double()


def _loss(model, batch):
    return F.cross_entropy(model(batch), batch.y)


def _metrics():
    return {"accuracy": MeanMetric()}


def _update(model, batch, metrics):
    metrics["accuracy"].update((model(batch).argmax(-1) == batch.y).double())


TINY_TASK = TaskSpec(_loss, "accuracy", True, _metrics, _update)
