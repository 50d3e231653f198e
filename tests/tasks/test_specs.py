"""Task pieces: dilation, SIREN rendering from graphs, padded flattening, scaling."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import grey_dilation
from torch import nn
from torch_geometric.data import Batch

from nft_pyg import from_module
from nft_pyg.inr import render_module, siren
from nft_pyg.tasks.models import LayerScale, PaddedFlatten, build_model, max_layout_sizes
from nft_pyg.tasks.specs import dilate, editing_loss, render_graph, siren_parameters


def test_dilate_equals_scipy_grey_dilation():
    images = torch.rand(3, 1, 9, 7, dtype=torch.float64)
    expected = np.stack([grey_dilation(img[0].numpy(), size=(3, 3)) for img in images])
    torch.testing.assert_close(dilate(images)[:, 0], torch.from_numpy(expected))


def _siren_batch(count=3, hidden=(5, 4), resolution=6):
    torch.manual_seed(0)
    modules = [siren(2, hidden, 1).double() for _ in range(count)]
    graphs = []
    for module in modules:
        graph = from_module(module)
        graph.image = torch.zeros(1, 1, resolution, resolution, dtype=torch.float64)
        graphs.append(graph)
    return modules, Batch.from_data_list(graphs)


def test_render_graph_matches_the_module():
    modules, batch = _siren_batch()
    images = render_graph(batch)
    for i, module in enumerate(modules):
        torch.testing.assert_close(images[i], render_module(module, 6), atol=1e-12, rtol=0)
    weights, _, w0, w0_first = siren_parameters(batch)
    assert [tuple(w.shape) for w in weights] == [(3, 5, 2), (3, 4, 5), (3, 1, 4)]
    assert (w0, w0_first) == (30.0, 30.0)


def _mlp_graph(widths, seed):
    torch.manual_seed(seed)
    layers = []
    for a, b in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return layers[:-1], from_module(nn.Sequential(*layers[:-1]).double())


def test_padded_flatten_embeds_narrow_nets_as_zero_neurons():
    _, narrow = _mlp_graph([3, 2, 2], 0)
    _, wide = _mlp_graph([3, 4, 2], 1)
    flatten = PaddedFlatten([3, 4, 2], 1)
    flat = flatten(Batch.from_data_list([narrow, wide]))
    # the wide net: its weights and biases, each exactly once
    values = torch.cat([wide.edge_attr.view(-1), wide.x[3:, 0]])
    assert sorted(flat[1].tolist()) == sorted(values.tolist())
    # the narrow net padded with a zero hidden neuron: 3*2 + 2*2 + 2 + 2 = 14 non-zeros
    assert int((flat[0] != 0).sum()) == 14 and flat.shape == (2, 4 * 3 + 2 * 4 + 4 + 2)


def test_padded_flatten_unflatten_is_the_inverse():
    _, graph = _mlp_graph([3, 4, 2], 2)
    batch = Batch.from_data_list([graph, graph])
    flatten = PaddedFlatten([3, 4, 2], 1)
    x, edge_attr = flatten.unflatten(flatten(batch), batch)
    torch.testing.assert_close(edge_attr, batch.edge_attr)
    torch.testing.assert_close(x, batch.x)      # zero on input neurons, biases elsewhere


def test_layer_scale_normalises_each_layer():
    _, batch = _siren_batch(count=4)
    graphs = batch.to_data_list()
    scale = LayerScale.from_dataset(graphs, num_layers=3)
    scaled = scale(batch)
    for layer in (1, 2, 3):
        rms = scaled.edge_attr[batch.edge_layer == layer].pow(2).mean().sqrt()
        assert abs(float(rms) - 1) < 1e-5
    assert torch.equal(scaled.x[batch.node_layer == 0], batch.x[batch.node_layer == 0])


@pytest.mark.parametrize("name", ["mlp", "nfn_np", "nft"])
def test_editors_start_near_the_identity_and_get_gradients(name):
    _, batch = _siren_batch(count=2)
    graphs = batch.to_data_list()
    torch.manual_seed(0)
    model = build_model("editing", name, graphs, 1).double()
    x_delta, edge_delta = model(batch)
    assert x_delta.shape == batch.x.shape and edge_delta.shape == batch.edge_attr.shape
    assert float(edge_delta.detach().abs().max()) < 0.05 * float(batch.edge_attr.abs().max())
    assert torch.equal(x_delta[batch.node_layer == 0], torch.zeros_like(x_delta[:2 * 2]))
    editing_loss(model, batch).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_max_layout_sizes():
    _, a = _mlp_graph([3, 2, 2], 0)
    _, b = _mlp_graph([3, 5, 2], 0)
    assert max_layout_sizes([a.layout, b.layout]) == ([3, 5, 2], 1)


def test_editing_figure_is_written(tmp_path):
    from nft_pyg.tasks.figures import save_editing_figure

    _, batch = _siren_batch(count=2)
    graphs = batch.to_data_list()
    model = build_model("editing", "mlp", graphs, 1).double()
    save_editing_figure(model, graphs, tmp_path / "edits.png")
    assert (tmp_path / "edits.png").stat().st_size > 1000


def _graph_and_permuted(module: nn.Module, seed: int) -> list:
    """The graphs of ``module`` and of a random hidden-neuron permutation of it."""
    from nft_pyg.symmetry import permute, random_permutation

    permutation = random_permutation(module, generator=torch.Generator().manual_seed(seed))
    graphs = [from_module(module), from_module(permute(module, permutation))]
    assert not torch.equal(graphs[0].edge_attr, graphs[1].edge_attr)
    return graphs


def test_nfn_then_gnn_is_invariant_to_hidden_permutations():
    torch.manual_seed(0)
    graphs = _graph_and_permuted(nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 4),
                                               nn.ReLU(), nn.Linear(4, 2)).double(), seed=1)
    model = build_model("classification", "nfn_gnn", graphs, 3).double().eval()
    out = model(Batch.from_data_list(graphs))
    torch.testing.assert_close(out[0], out[1], atol=1e-10, rtol=0)
    other = from_module(nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 4), nn.ReLU(),
                                      nn.Linear(4, 2)).double())
    assert not torch.allclose(model(other)[0], out[0])


def test_statnn_classifies_inrs_invariantly():
    """StatNN (per-layer weight statistics) is also a classification
    reference: what a model gets from weight statistics alone."""
    torch.manual_seed(0)
    graphs = _graph_and_permuted(nn.Sequential(nn.Linear(2, 6), nn.Tanh(), nn.Linear(6, 5),
                                               nn.Tanh(), nn.Linear(5, 1)).double(), seed=2)
    model = build_model("classification", "statnn", graphs, 10).double().eval()
    out = model(Batch.from_data_list(graphs))
    assert out.shape == (2, 10)
    torch.testing.assert_close(out[0], out[1], atol=1e-10, rtol=0)


def test_build_model_options_reach_the_model_and_unknown_ones_fail():
    torch.manual_seed(0)
    graphs = _graph_and_permuted(nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 4),
                                               nn.ReLU(), nn.Linear(4, 2)).double(), seed=3)
    stats = build_model("generalization", "nfn_np", graphs, 1,
                        {"pool": "stats", "dropout": 0.2, "io_embedding": True}).double().eval()
    nfn = stats.model
    assert type(nfn.pool).__name__ == "NPStatPool" and nfn.body.io_embedding
    assert any(isinstance(m, nn.Dropout) for m in nfn.head)
    out = stats(Batch.from_data_list(graphs))     # hidden permutations: same prediction
    torch.testing.assert_close(out[0], out[1], atol=1e-10, rtol=0)
    statnn = build_model("generalization", "statnn", graphs, 1, {"dropout": 0.3}).model
    assert any(isinstance(m, nn.Dropout) and m.p == 0.3 for m in statnn.mlp)
    with pytest.raises(ValueError, match=r"build_model: unknown option\(s\) \['dropuot'\] for "
                                         r"model 'nfn_np'; it takes \[.*'dropout'"):
        build_model("generalization", "nfn_np", graphs, 1, {"dropuot": 0.2})
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['pool'\] for model 'nft'"):
        build_model("generalization", "nft", graphs, 1, {"pool": "stats"})
    with pytest.raises(ValueError, match=r"option\(s\) \['pool'\] of the invariant 'nfn_np' "
                                         r"do not apply to its editor"):
        build_model("editing", "nfn_np", graphs, 1, {"pool": "stats"})
