"""The tasks' torchmetrics, fed batch by batch on each device, equal
whole-split computations of the same metrics (scipy's Kendall tau,
scikit-learn's R^2, plain sums)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from scipy.stats import kendalltau
from sklearn.metrics import r2_score
from tasks_helpers import tiny_graphs

from nft_pyg import from_module
from nft_pyg.graph.collate import GraphLoader
from nft_pyg.inr import siren
from nft_pyg.nn.models.nfn import NFN
from nft_pyg.tasks.engine import fresh_metrics
from nft_pyg.tasks.models import build_model
from nft_pyg.tasks.specs import SPECS, dilate, edit_images, render_graph


def _batch_by_batch(spec, model, graphs, device) -> dict[str, float]:
    metrics = fresh_metrics(spec, device)
    with torch.no_grad():
        for batch in GraphLoader(graphs, batch_size=4):
            spec.update(model, batch.to(device), metrics)
    values = {name: float(metric.compute()) for name, metric in metrics.items()}
    return spec.finish(values) if spec.finish else values


def _whole_split(task, model, graphs) -> dict[str, float]:
    """The task's metrics from the whole split at once, on the CPU."""
    model = model.cpu()
    with torch.no_grad():
        batches = list(GraphLoader(graphs, batch_size=4))
        if task == "classification":
            logits = torch.cat([model(batch) for batch in batches])
            labels = torch.cat([batch.y.view(-1) for batch in batches])
            return {"accuracy": float((logits.argmax(-1) == labels).double().mean()),
                    "loss": float(F.cross_entropy(logits, labels))}
        if task == "generalization":
            pred = torch.cat([model(batch).view(-1) for batch in batches]).double().numpy()
            target = torch.cat([batch.y.view(-1).float() for batch in batches]).double().numpy()
            return {"kendall_tau": float(kendalltau(pred, target).statistic),
                    "r2": float(r2_score(target, pred)),
                    "mse": float(((pred - target) ** 2).mean())}
        edited, unedited = [], []
        for batch in batches:
            target = dilate(batch.image)
            edited.append((edit_images(model, batch) - target).pow(2).flatten(1).mean(1))
            unedited.append((render_graph(batch) - target).pow(2).flatten(1).mean(1))
        return {"mse": float(torch.cat(edited).mean()),
                "mse_unedited": float(torch.cat(unedited).mean())}


def _nfn(out: int) -> NFN:
    torch.manual_seed(0)
    return NFN("np", num_layers=2, hidden_channels=4, out_channels=out, num_nf_layers=1,
               head_hidden=8).double().eval()


def _sirens(count: int) -> list:
    torch.manual_seed(0)
    graphs = []
    for _ in range(count):
        graph = from_module(siren(2, (5, 4), 1).double())
        graph.image = torch.rand(1, 1, 6, 6, dtype=torch.float64)
        graphs.append(graph)
    return graphs


def test_classification_metrics(device):
    graphs = tiny_graphs(10)
    for i, graph in enumerate(graphs):
        graph.y = torch.tensor([i % 3])
    model = _nfn(10)
    got = _batch_by_batch(SPECS["classification"], model.to(device), graphs, device)
    expected = _whole_split("classification", model, graphs)
    assert set(got) == set(expected) == {"accuracy", "loss"}
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=1e-9)


def test_generalization_metrics(device):
    graphs = tiny_graphs(10)
    generator = torch.Generator().manual_seed(1)
    for graph in graphs:
        # float32 values: the whole-split path rounds targets to float32
        graph.y = torch.rand(1, generator=generator).double()
    model = _nfn(1)
    got = _batch_by_batch(SPECS["generalization"], model.to(device), graphs, device)
    expected = _whole_split("generalization", model, graphs)
    assert set(got) == set(expected) == {"kendall_tau", "r2", "mse"}
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=1e-9)
    assert got["kendall_tau"] != 0


def test_a_constant_prediction_has_kendall_tau_zero():
    spec = SPECS["generalization"]
    assert spec.finish({"kendall_tau": float("nan"), "r2": 0.0, "mse": 1.0})[
        "kendall_tau"] == 0.0


def test_editing_metrics(device):
    graphs = _sirens(6)
    torch.manual_seed(0)
    model = build_model("editing", "nfn_np", graphs, 1).double().eval()
    got = _batch_by_batch(SPECS["editing"], model.to(device), graphs, device)
    expected = _whole_split("editing", model, graphs)
    assert set(got) == set(expected) == {"mse", "mse_unedited"}
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, rel=1e-9)
