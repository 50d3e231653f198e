"""Every operator, pool and model leaves its input batch untouched (pickled bytes
equal before and after a forward); with the batch's WeightGraphIndex built, the
operators trace into one graph (no graph breaks, no host syncs) and compiled
models match eager. Parametrized over the available devices."""
import pickle

import pytest
import torch
from helpers import cnns, mlp, mlps, random_features, structure_batch
from torch import nn

from nft_pyg.inr import siren
from nft_pyg.nn import (
    GaussianFourierFeatures,
    HNPConv,
    HNPPool,
    IOPositionEncoding,
    LayerEncoding,
    NPConv,
    NPPool,
    NPStatPool,
    PointwiseConv,
    WeightGraphIndex,
    WeightSpaceActivation,
    WeightSpaceLayerNorm,
    WeightSpaceLinear,
    WeightSpaceSequential,
)
from nft_pyg.nn.mixing import EndpointEdgeUpdate, NodeEdgeAdapter
from nft_pyg.nn.models import Inr2Array
from nft_pyg.nn.models.baselines import FlatMLP, GNNBaseline, StatNN
from nft_pyg.nn.models.nfn import NFN, NFNEditor
from nft_pyg.nn.models.nft import NFT

torch.set_num_threads(1)
C = 4
WIDTHS = [3, 5, 4, 2]


def batch_on(device, modules=None):
    batch = structure_batch(modules or mlps(3, WIDTHS)).to(device)
    x, edge_attr = random_features(batch, C)
    return batch, x.to(device), edge_attr.to(device)


OPERATORS = {
    "NPConv": lambda: NPConv(C, 3, 3),
    "NPConv(io_embedding)": lambda: NPConv(C, 3, 3, io_embedding=True, num_inputs=3,
                                           num_outputs=2),
    "HNPConv": lambda: HNPConv(C, 3, 3, 3, 2),
    "PointwiseConv": lambda: PointwiseConv(C, 3, 3),
}
FEATURE_MODULES = {
    "NPPool": lambda: NPPool(C, 3),
    "NPStatPool": lambda: NPStatPool(C, 3),
    "HNPPool": lambda: HNPPool(C, 3, 3, 2),
    "WeightSpaceLayerNorm": lambda: WeightSpaceLayerNorm(C),
    "WeightSpaceLinear": lambda: WeightSpaceLinear(C, 3),
    "WeightSpaceActivation": lambda: WeightSpaceActivation("relu"),
    "LayerEncoding": lambda: LayerEncoding(C, 3),
    "IOPositionEncoding": lambda: IOPositionEncoding(C, 3, 2),
    "GaussianFourierFeatures": lambda: GaussianFourierFeatures(C, 2),
    "WeightSpaceSequential": lambda: WeightSpaceSequential(NPConv(C, C, 3),
                                                           WeightSpaceActivation("relu"),
                                                           HNPConv(C, C, 3, 3, 2)),
    "NodeEdgeAdapter": lambda: NodeEdgeAdapter(
        torch_geometric_gine(), edge_module=EndpointEdgeUpdate(C, C, C)),
}


def torch_geometric_gine():
    from torch_geometric.nn import GINEConv
    return GINEConv(nn.Linear(C, C), edge_dim=C)


def assert_untouched(batch, run):
    before = pickle.dumps(batch)
    run()
    assert pickle.dumps(batch) == before


@pytest.mark.parametrize("name", list(OPERATORS))
@pytest.mark.parametrize("given", ["index", "batch"])
def test_operators_do_not_write_onto_the_batch(name, given, device):
    batch, x, edge_attr = batch_on(device)
    conv = OPERATORS[name]().double().to(device)
    index = WeightGraphIndex.from_data(batch) if given == "index" else batch
    assert_untouched(batch, lambda: conv(x, batch.edge_index, edge_attr, index))


@pytest.mark.parametrize("name", list(FEATURE_MODULES))
def test_pools_and_feature_modules_do_not_write_onto_the_batch(name, device):
    batch, x, edge_attr = batch_on(device)
    module = FEATURE_MODULES[name]().double().to(device)
    if name == "GaussianFourierFeatures":
        x, edge_attr = x[:, :1].contiguous(), edge_attr[:, :1].contiguous()
        module = GaussianFourierFeatures(1, 2).double().to(device)
    for index in (batch, WeightGraphIndex.from_data(batch)):
        assert_untouched(batch, lambda index=index: module(x, edge_attr, index))


def _models(layout, kernel_width):
    return {
        "NFN(np)": NFN.for_layout(layout, "np", C, 2, head_hidden=8),
        "NFN(hnp)": NFN.for_layout(layout, "hnp", C, 2, head_hidden=8),
        "NFN(pt, stats pool)": NFN.for_layout(layout, "pt", C, 2, head_hidden=8,
                                              pool="stats", append_stats=True),
        "NFN(np, io, fourier)": NFN.for_layout(layout, "np", C, 2, head_hidden=8,
                                               io_embedding=True, fourier_features=2),
        "NFNEditor(np)": NFNEditor.for_layout(layout, "np", C),
        "NFNEditor(hnp)": NFNEditor.for_layout(layout, "hnp", C),
        "StatNN": StatNN(3, 8, 2),
        "GNNBaseline": GNNBaseline("gine", 8, 2, edge_dim=kernel_width),
    }


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_models_do_not_write_onto_the_batch(kind, device):
    modules = mlps(3, WIDTHS) if kind == "mlp" else cnns()
    batch = structure_batch(modules).to(device)
    models = _models(batch.layout[0], batch.edge_attr.size(1))
    models["FlatMLP"] = FlatMLP(FlatMLP.num_weights_of(batch[0]), 8, 2)
    for model in models.values():
        model = model.double().to(device).eval()
        assert_untouched(batch, lambda model=model: model(batch))
        assert_untouched(batch, lambda model=model: model(batch))  # and again, same batch


def test_index_is_plain_tensors_and_ints_and_moves(device):
    batch, x, edge_attr = batch_on("cpu")
    index = WeightGraphIndex.from_data(batch)
    index.parts["grid"] = None    # the reference paths, whose parts hold tensors
    NPConv(C, 3, 3).double()(x, batch.edge_index, edge_attr, index)   # builds a part
    HNPConv(C, 3, 3, 3, 2).double()(x, batch.edge_index, edge_attr, index)
    assert set(index.parts) >= {"grid", "hnp", "hnp_conv"}
    moved = index.to(device)
    assert moved.edge_index.device.type == device.type
    assert moved.parts["hnp_conv"].layer_nodes[1].device.type == device.type
    assert moved.parts["hnp"].edge_type.device.type == device.type
    assert isinstance(moved.num_graphs, int) and moved.num_graphs == 3
    assert index.edge_index.device.type == "cpu"  # the original stays where it was


# --- torch.compile ---------------------------------------------------------------------
def _one_graph(module, *args, **kwargs):
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(module)(*args, **kwargs)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


@pytest.mark.parametrize("name", ["NPConv", "HNPConv", "PointwiseConv"])
@pytest.mark.parametrize("batch_kind", ["complete", "pruned"])
def test_operators_trace_into_one_graph_once_the_index_exists(name, batch_kind, device):
    from helpers import drop_edges
    batch, x, edge_attr = batch_on("cpu")
    if batch_kind == "pruned":   # NPConv: the reference path instead of the grid path
        batch, kept = drop_edges(batch, 0.6, torch.Generator().manual_seed(3))
        edge_attr = edge_attr[kept]
    batch, x, edge_attr = batch.to(device), x.to(device), edge_attr.to(device)
    conv = OPERATORS[name]().double().to(device)
    index = WeightGraphIndex.from_data(batch)
    eager = conv(x, batch.edge_index, edge_attr, index)   # builds the index parts
    _one_graph(conv, x, batch.edge_index, edge_attr, index)
    # no host syncs: the whole forward and backward compile in one graph
    torch._dynamo.reset()
    compiled = torch.compile(conv, fullgraph=True, backend="aot_eager")
    out = compiled(x.requires_grad_(), batch.edge_index, edge_attr, index)
    for got, want in zip(out, eager):
        torch.testing.assert_close(got, want, atol=1e-12, rtol=0)
    sum(o.square().sum() for o in out).backward()
    assert x.grad is not None and all(p.grad is not None for p in conv.parameters())


@pytest.mark.parametrize("batch_kind", ["complete", "pruned"])
def test_stat_pool_traces_into_one_graph_once_the_index_exists(batch_kind, device):
    """NPStatPool's sorted block is laid out by the index (its ``"np_stat_pool"``
    part), so its shapes do not depend on the data."""
    from helpers import drop_edges

    from nft_pyg.nn.pool import NPStatPool
    batch, x, edge_attr = batch_on("cpu")
    if batch_kind == "pruned":
        batch, kept = drop_edges(batch, 0.6, torch.Generator().manual_seed(3))
        edge_attr = edge_attr[kept]
    batch, x, edge_attr = batch.to(device), x.to(device), edge_attr.to(device)
    pool = NPStatPool(C, 3)
    index = WeightGraphIndex.from_data(batch)
    eager = pool(x, edge_attr, index)   # builds the index part
    _one_graph(pool, x, edge_attr, index)
    torch._dynamo.reset()
    compiled = torch.compile(pool, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x, edge_attr, index), eager, atol=1e-12, rtol=0)


COMPILED_MODELS = {   # name: (batch kind, model of a layout)
    "NFN(np)": ("mlp", lambda layout: NFN.for_layout(layout, "np", C, 2, head_hidden=8)),
    "NFN(hnp)": ("mlp", lambda layout: NFN.for_layout(layout, "hnp", C, 2, head_hidden=8)),
    "NFN(pt)": ("mlp", lambda layout: NFN.for_layout(layout, "pt", C, 2, head_hidden=8)),
    "NFN(np, cnn)": ("cnn", lambda layout: NFN.for_layout(layout, "np", C, 2, head_hidden=8)),
    "NFN(np, io, fourier)": ("mlp", lambda layout: NFN.for_layout(
        layout, "np", C, 2, head_hidden=8, io_embedding=True, fourier_features=2)),
    "NFN(np, stats pool)": ("mlp", lambda layout: NFN.for_layout(
        layout, "np", C, 2, head_hidden=8, pool="stats")),
    "NFNEditor(np, cnn)": ("cnn", lambda layout: NFNEditor.for_layout(layout, "np", C)),
    "NFNEditor(hnp)": ("mlp", lambda layout: NFNEditor.for_layout(layout, "hnp", C)),
    "NFT(invariant)": ("mlp", lambda layout: NFT.for_layout(layout, 16, 2, num_blocks=1,
                                                           heads=2)),
    "NFT(equivariant, cnn)": ("cnn", lambda layout: NFT.for_layout(
        layout, 16, 1, task="equivariant", num_blocks=1, heads=2)),
    "Inr2Array": ("siren", lambda layout: Inr2Array(layout, channels=16, num_latents=4,
                                                    num_blocks=1, heads=2,
                                                    decoder_channels=32)),
}


@pytest.mark.parametrize("name", list(COMPILED_MODELS))
def test_models_trace_into_one_graph_once_the_index_exists(name, device):
    """The models' value checks on the raw inputs (kernel padding, NaN / inf,
    layer depth, IO sizes, layouts) read the index's ints and parts or run only
    in eager mode, so the whole forward is one graph."""
    kind, make = COMPILED_MODELS[name]
    modules = {"mlp": lambda: mlps(3, WIDTHS), "cnn": cnns,
               "siren": lambda: [siren(2, (8, 8), 1).double() for _ in range(3)]}[kind]()
    batch = structure_batch(modules).to(device)
    model = make(batch.layout[0]).double().to(device).eval()
    index = WeightGraphIndex.from_data(batch)
    model(batch, index=index)   # builds the index parts
    _one_graph(model, batch, index=index)


@pytest.mark.parametrize("mode", ["np", "hnp", "pt"])
def test_compiled_nfn_matches_eager(mode, device):
    modules = mlps(3, WIDTHS)
    batch = structure_batch(modules).to(device)
    model = NFN.for_layout(batch.layout[0], mode, C, 2, head_hidden=8).double().to(device)
    index = WeightGraphIndex.from_data(batch)
    eager = model(batch, index=index)
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="aot_eager")
    torch.testing.assert_close(compiled(batch, index=index), eager, atol=1e-12, rtol=0)
    torch.testing.assert_close(compiled(batch), eager, atol=1e-12, rtol=0)
    editor = NFNEditor.for_layout(batch.layout[0], mode, C).double().to(device)
    for got, want in zip(torch.compile(editor, backend="aot_eager")(batch), editor(batch)):
        torch.testing.assert_close(got, want, atol=1e-12, rtol=0)


@pytest.mark.parametrize("io_embedding", [False, True])
def test_np_grid_path_equals_the_reference(io_embedding):
    """On a batch of complete networks of one architecture NPConv takes the grid
    path; the message-passing reference (forced by an index without the grid
    part) gives the same map, also for a graph shallower than the operator."""
    for widths in ([3, 6, 5, 2], [3, 4, 2]):
        batch = structure_batch([mlp(widths).double() for _ in range(3)])
        x, edge_attr = random_features(batch, C)
        conv = NPConv(C, 3, 4, io_embedding=io_embedding, num_inputs=3, num_outputs=2).double()
        with torch.no_grad():
            conv.edge_bias.normal_()
            conv.node_bias.normal_()
        grid_index = WeightGraphIndex.from_data(batch)
        grid = conv(x, batch.edge_index, edge_attr, grid_index)
        assert grid_index.parts["grid"] is not None
        reference_index = WeightGraphIndex.from_data(batch)
        reference_index.parts["grid"] = None
        reference = conv(x, batch.edge_index, edge_attr, reference_index)
        for got, want in zip(grid, reference):
            torch.testing.assert_close(got, want, atol=1e-12, rtol=0)
