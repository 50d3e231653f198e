"""NFN and NFNEditor: shapes on MLP / CNN batches, invariance (np, hnp, pt) and
equivariance under hidden-neuron permutations, what each mode sees of input
neurons, editing round trips through to_module, training, bad inputs."""
import copy

import pytest
import torch
from helpers import (
    CNN_CHANNELS,
    MLP_WIDTHS,
    cnns,
    mlp,
    mlps,
    permuted_modules,
    structure_batch,
    toy_regression,
)
from torch import nn

import nft_pyg
from nft_pyg.nn.models.nfn import NFN, NFNEditor

torch.set_num_threads(1)


def layout_of(modules):
    return nft_pyg.from_module(modules[0]).layout


def nfn(mode, modules, hidden=6, out=3, **kwargs):
    return NFN.for_layout(layout_of(modules), mode, hidden, out, head_hidden=16,
                          **kwargs).double().eval()


# --- shapes ------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["np", "hnp", "pt"])
@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_nfn_output_shape(mode, kind):
    modules = mlps() if kind == "mlp" else cnns()
    model = nfn(mode, modules, out=5)
    assert model(structure_batch(modules)).shape == (len(modules), 5)
    assert model(nft_pyg.from_module(modules[0])).shape == (1, 5)


def test_nfn_variants_shape_and_mixed_depth_batch():
    modules = cnns()
    for kwargs in (dict(fourier_features=3), dict(io_embedding=True), dict(dropout=0.2)):
        assert nfn("np", modules, **kwargs)(structure_batch(modules)).shape == (2, 3)
    # np / pt take mixed architectures up to num_layers weight layers
    mixed = [mlp([3, 5, 4, 2]).double(), mlp([2, 3]).double(), mlp([4, 6, 1]).double()]
    for mode in ("np", "pt"):
        model = NFN(mode, num_layers=3, hidden_channels=6, out_channels=2).double()
        out = model(structure_batch(mixed))
        assert out.shape == (3, 2) and torch.isfinite(out).all()
        # a graph's output does not depend on the others of its batch
        torch.testing.assert_close(out[1:2], model(structure_batch(mixed[1:2])))


def test_nfn_modes_are_the_right_layers():
    modules = mlps()
    kinds = {mode: {type(m).__name__ for m in nfn(mode, modules).modules()}
             for mode in ("np", "hnp", "pt")}
    assert {"NPConv", "NPPool"} <= kinds["np"] and "HNPConv" not in kinds["np"]
    assert {"HNPConv", "HNPPool"} <= kinds["hnp"] and "NPConv" not in kinds["hnp"]
    assert {"PointwiseConv", "NPPool"} <= kinds["pt"] and "NPConv" not in kinds["pt"]
    assert "num_nf_layers=2" in repr(nfn("np", modules))


# --- symmetry --------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["np", "hnp", "pt"])
@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_nfn_invariant_to_hidden_permutations(mode, kind):
    modules = mlps() if kind == "mlp" else cnns()
    model = nfn(mode, modules)
    moved, _ = permuted_modules(modules)
    original, after = model(structure_batch(modules)), model(structure_batch(moved))
    torch.testing.assert_close(after, original, atol=1e-10, rtol=0)
    # the permutation really changed the input
    assert not torch.allclose(structure_batch(moved).edge_attr, structure_batch(modules).edge_attr)


@pytest.mark.parametrize("mode", ["np", "pt"])
def test_np_and_pt_invariant_to_input_and_output_permutations(mode):
    modules = mlps()
    model = nfn(mode, modules)
    for which in ("input", "output"):
        moved, _ = permuted_modules(modules, which)
        torch.testing.assert_close(model(structure_batch(moved)), model(structure_batch(modules)),
                                   atol=1e-10, rtol=0)


def test_hnp_and_io_embedding_see_input_positions():
    modules = mlps()
    moved, _ = permuted_modules(modules, "input")
    for model in (nfn("hnp", modules), nfn("np", modules, io_embedding=True)):
        assert not torch.allclose(model(structure_batch(moved)), model(structure_batch(modules)),
                                  atol=1e-6)
        hidden, _ = permuted_modules(modules)  # still invariant to hidden permutations
        torch.testing.assert_close(model(structure_batch(hidden)), model(structure_batch(modules)),
                                   atol=1e-10, rtol=0)


def test_pt_is_blind_to_coupling_that_np_sees():
    """Moving weights between rows of W_1 (same multiset per layer) is seen by
    np (row means change) but not by the pointwise ablation."""
    module = mlp(MLP_WIDTHS).double()
    swapped = copy.deepcopy(module)
    with torch.no_grad():
        weight = swapped[0].weight
        weight.copy_(weight.flatten()[torch.randperm(weight.numel())].view_as(weight))
    pt, np_model = nfn("pt", [module]), nfn("np", [module])
    torch.testing.assert_close(pt(structure_batch([swapped])), pt(structure_batch([module])),
                               atol=1e-10, rtol=0)
    assert not torch.allclose(np_model(structure_batch([swapped])),
                              np_model(structure_batch([module])), atol=1e-6)


# --- editor ------------------------------------------------------------------------
def editor(mode, modules, **kwargs):
    return NFNEditor.for_layout(layout_of(modules), mode, 6, **kwargs).double().eval()


@pytest.mark.parametrize("mode", ["np", "hnp", "pt"])
@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_editor_delta_is_equivariant(mode, kind):
    modules = mlps() if kind == "mlp" else cnns()
    model = editor(mode, modules, init_scale=1.0)
    moved, maps = permuted_modules(modules)
    for module, permuted_module, (node_map, edge_map) in zip(modules, moved, maps):
        x_delta, edge_delta = model(nft_pyg.from_module(module))
        x_moved, edge_moved = model(nft_pyg.from_module(permuted_module))
        torch.testing.assert_close(x_moved, x_delta[node_map], atol=1e-10, rtol=0)
        torch.testing.assert_close(edge_moved, edge_delta[edge_map], atol=1e-10, rtol=0)
        assert not torch.equal(edge_map, torch.arange(edge_map.numel()))


def test_editor_delta_format_and_round_trip():
    modules = cnns()
    graph = nft_pyg.from_module(modules[0])
    model = editor("np", modules, init_scale=1.0)
    x_delta, edge_delta = model(graph)
    assert x_delta.shape == (graph.num_nodes, 1) and edge_delta.shape == graph.edge_attr.shape
    assert (x_delta[graph.node_layer == 0] == 0).all()
    # the Flatten -> Linear layer has one position per edge: the padding stays zero
    head_edges = graph.edge_layer == 3
    assert (edge_delta[head_edges, 1:] == 0).all() and (edge_delta[~head_edges] != 0).any()
    edited = model.edit(graph, scale=0.5)
    torch.testing.assert_close(edited.edge_attr, graph.edge_attr + 0.5 * edge_delta)
    inputs = torch.randn(2, CNN_CHANNELS[0], 5, 5, dtype=torch.float64)
    rebuilt = nft_pyg.to_module(edited).eval()
    assert not torch.allclose(rebuilt(inputs), modules[0].eval()(inputs))
    # editing a batch edits each graph
    batch = structure_batch(modules)
    torch.testing.assert_close(model.edit(batch).edge_attr[: graph.num_edges],
                               model.edit(graph).edge_attr, atol=1e-12, rtol=0)


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_editor_with_zero_readout_is_the_identity(kind):
    modules = mlps(1) if kind == "mlp" else cnns(1)
    model = editor("hnp", modules)
    with torch.no_grad():
        for param in model.readout.parameters():
            param.zero_()
    graph = nft_pyg.from_module(modules[0])
    rebuilt = nft_pyg.to_module(model.edit(graph)).eval()
    shape = (4, MLP_WIDTHS[0]) if kind == "mlp" else (4, CNN_CHANNELS[0], 5, 5)
    inputs = torch.randn(shape, dtype=torch.float64)
    assert torch.equal(rebuilt(inputs), modules[0].eval()(inputs))


def test_editor_starts_near_the_identity():
    modules = mlps()
    graph = structure_batch(modules)
    small = editor("np", modules)
    _, small_delta = small(graph)
    full = copy.deepcopy(small)
    with torch.no_grad():
        for param, scaled in zip(full.readout.parameters(), small.readout.parameters()):
            param.copy_(scaled / small.init_scale)
    _, full_delta = full(graph)
    torch.testing.assert_close(small_delta, full_delta * 1e-3)
    assert small_delta.abs().max() < 1e-2 * graph.edge_attr.abs().max()
    small.reset_parameters()  # keeps the small scale
    assert small(graph)[1].abs().max() < 1e-2 * graph.edge_attr.abs().max()


def test_editor_on_bias_free_network():
    modules = mlps(2, bias=False)
    model = editor("np", modules, init_scale=1.0)
    graph = nft_pyg.from_module(modules[0])
    x_delta, _ = model(graph)
    assert (x_delta == 0).all()
    nft_pyg.to_module(model.edit(graph))  # a valid raw graph of a bias-free net
    with pytest.raises(ValueError, match="bias"):
        NFNEditor("np", 3, 6).double()(graph)


# --- training ----------------------------------------------------------------------
def train(model, batch, target, steps=25, lr=1e-2):
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(batch), target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("mode", ["np", "hnp", "pt"])
def test_nfn_trains(mode):
    batch, target = toy_regression()
    model = NFN(mode, 3, 8, 1, num_inputs=MLP_WIDTHS[0], num_outputs=MLP_WIDTHS[-1],
                head_hidden=32)
    losses = train(model, batch, target)
    assert losses[-1] < 0.3 * losses[0]


def test_editor_trains():
    """Learn an edit that shrinks every weight (loss: norm of the edited weights)."""
    batch, _ = toy_regression()
    model = NFNEditor("np", 3, 8, init_scale=1.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(25):
        optimizer.zero_grad()
        loss = model.edit(batch).edge_attr.pow(2).mean()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


# --- bad inputs --------------------------------------------------------------------
def test_nfn_bad_arguments():
    with pytest.raises(ValueError, match="mode"):
        NFN("dense", 3, 4, 1)
    with pytest.raises(ValueError, match="num_inputs"):
        NFN("hnp", 3, 4, 1)
    with pytest.raises(ValueError, match="num_inputs"):
        NFN("np", 3, 4, 1, io_embedding=True)
    with pytest.raises(ValueError, match="io_embedding"):
        NFN("hnp", 3, 4, 1, num_inputs=3, num_outputs=2, io_embedding=True)
    with pytest.raises(ValueError, match="hidden_channels"):
        NFN("np", 3, 0, 1)
    with pytest.raises(ValueError, match="dropout"):
        NFN("np", 3, 4, 1, dropout=1.0)
    with pytest.raises(ValueError, match="kernel_sizes"):
        NFN("np", 3, 4, 1, kernel_sizes=[1, 1])
    with pytest.raises(ValueError, match="out_channels"):
        NFN("np", 3, 4, 0)


def test_nfn_bad_graphs():
    modules = mlps()
    batch = structure_batch(modules)
    with pytest.raises(ValueError, match="3 weight layers|num_layers=2|built for 2"):
        NFN("np", 2, 4, 1).double()(batch)
    with pytest.raises(ValueError, match="HNP"):
        NFN("hnp", 3, 4, 1, num_inputs=4, num_outputs=2).double()(batch)
    with pytest.raises(ValueError, match="kernel_width"):
        NFN("np", 3, 4, 1, kernel_width=9).double()(batch)
    with pytest.raises(ValueError, match="raw graph"):
        NFN("np", 3, 4, 1, kernel_width=9, fourier_features=2).double()(batch)
    featured = batch.clone()
    featured.x = torch.zeros(batch.num_nodes, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="raw node features"):
        NFN("np", 3, 4, 1).double()(featured)
    # an editor typed for kernels of one size rejects a network with others
    conv_graph = structure_batch(cnns(1))
    with pytest.raises(ValueError, match="kernel sizes"):
        NFNEditor("np", 3, 4, kernel_width=9).double()(conv_graph)
