"""NFT: hidden-neuron invariance / equivariance on raw MLP and CNN graphs,
IO encodings seeing input order, editing round trip, mixed batches, errors,
pure forward, torch.compile."""
import pickle

import pytest
import torch
from helpers import cnn, drop_edges, mlp, permuted_graph, random_neuron_permutation
from torch import nn
from torch_geometric.data import Batch

import nft_pyg
from nft_pyg import WeightSpace
from nft_pyg.graph.types import NodeRole
from nft_pyg.inr import siren
from nft_pyg.nn.models import NFT
from nft_pyg.nn.structure import WeightGraphIndex

torch.set_num_threads(1)

HIDDEN = (NodeRole.HIDDEN,)


def raw_batch(modules, kernel_width=None):
    return Batch.from_data_list([nft_pyg.from_module(m.double(), kernel_width=kernel_width)
                                 for m in modules])


def permuted_copy(batch, roles=HIDDEN):
    """The batch with neurons of ``roles`` relabelled (raw features moved)."""
    node_map, edge_map = random_neuron_permutation(batch, roles)
    permuted = batch.clone()
    permuted.x, permuted.edge_attr = batch.x[node_map], batch.edge_attr[edge_map]
    return permuted, node_map, edge_map


def make_nft(layout, task="invariant", **kwargs):
    kwargs = {"num_blocks": 2, "heads": 2, **kwargs}
    return NFT.for_layout(layout, 16, 3 if task == "invariant" else 1, task=task,
                          **kwargs).double().eval()


def mlp_batch():
    return raw_batch([mlp([3, 5, 4, 2]) for _ in range(3)])


def cnn_batch():
    return raw_batch([cnn([2, 3, 4], [3, 1], head=2, pooled=2) for _ in range(2)])


@pytest.mark.parametrize("pool", ["mean", "attention"])
@pytest.mark.parametrize("make", [mlp_batch, cnn_batch])
def test_invariant_under_hidden_permutations(pool, make):
    batch = make()
    model = make_nft(batch.get_example(0).layout, pool=pool)
    out = model(batch)
    assert out.shape == (batch.num_graphs, 3)
    permuted, node_map, _ = permuted_copy(batch)
    assert not torch.equal(node_map, torch.arange(node_map.numel()))
    torch.testing.assert_close(model(permuted), out, atol=1e-10, rtol=0)


@pytest.mark.parametrize("make", [mlp_batch, cnn_batch])
def test_equivariant_delta_permutes_with_hidden_neurons(make):
    batch = make()
    model = make_nft(batch.get_example(0).layout, task="equivariant")
    x_delta, edge_delta = model(batch)
    assert x_delta.shape == batch.x.shape and edge_delta.shape == batch.edge_attr.shape
    permuted, node_map, edge_map = permuted_copy(batch)
    x_perm, edge_perm = model(permuted)
    torch.testing.assert_close(x_perm, x_delta[node_map], atol=1e-10, rtol=0)
    torch.testing.assert_close(edge_perm, edge_delta[edge_map], atol=1e-10, rtol=0)


@pytest.mark.parametrize("task", ["invariant", "equivariant"])
def test_io_encoding_sees_input_order(task):
    """With IO position encodings, permuting input neurons changes the output;
    without them the model is invariant / equivariant to that too."""
    batch = mlp_batch()
    layout = batch.get_example(0).layout
    permuted, _, edge_map = permuted_copy(batch, (NodeRole.INPUT,))
    with_io = make_nft(layout, task)
    without_io = make_nft(layout, task, io_encoding=False)
    if task == "invariant":
        assert not torch.allclose(with_io(permuted), with_io(batch), atol=1e-4)
        torch.testing.assert_close(without_io(permuted), without_io(batch), atol=1e-10, rtol=0)
    else:
        moved = with_io(batch)[1][edge_map]
        assert not torch.allclose(with_io(permuted)[1], moved, atol=1e-4)
        torch.testing.assert_close(without_io(permuted)[1], without_io(batch)[1][edge_map],
                                   atol=1e-10, rtol=0)


def test_edit_round_trips_through_to_module():
    """The edited graph is the original plus the delta, and converts back to
    a module whose parameters are the original ones plus the delta."""
    modules = [nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Conv2d(3, 4, 2, bias=False),
                             nn.ReLU(), nn.Flatten(), nn.Linear(16, 2)).double()
               for _ in range(2)]
    batch = raw_batch(modules)
    model = make_nft(batch.get_example(0).layout, task="equivariant")
    x_delta, _ = model(batch)
    edited = model.edit(batch)
    assert torch.equal(edited.x, batch.x + x_delta)
    layers = batch.get_example(0).layout_obj.weight_layers()
    for b, module in enumerate(modules):
        graph, new = batch.get_example(b), edited.get_example(b)
        delta_graph = graph.clone()
        delta_graph.x = new.x - graph.x
        delta_graph.edge_attr = new.edge_attr - graph.edge_attr
        delta = WeightSpace.from_graph(delta_graph).to_state_dicts()[0]
        rebuilt = nft_pyg.to_module(new).state_dict()
        assert set(rebuilt) == set(module.state_dict())
        for key, value in module.state_dict().items():
            torch.testing.assert_close(rebuilt[key], value + delta[key], atol=1e-12, rtol=0)
            assert delta[key].abs().max() > 0
        # padded kernel positions (3x3 = 9 wide; 2x2 and flatten 2x2 = 4) get no delta
        edge_d = new.edge_attr - graph.edge_attr
        for layer in layers:
            rows = graph.edge_layer == layer.index
            assert torch.count_nonzero(edge_d[rows, layer.positions:]) == 0
        bias_free = graph.node_layer == 2
        assert torch.count_nonzero((new.x - graph.x)[bias_free]) == 0
        assert torch.count_nonzero((new.x - graph.x)[graph.node_role == int(NodeRole.INPUT)]) == 0


def test_mixed_depth_batch_matches_single_graphs():
    modules = [mlp([3, 5, 4, 2]), mlp([3, 6, 2]), mlp([2, 3, 4, 3, 2])]
    batch = raw_batch(modules)
    for task in ("invariant", "equivariant"):
        model = NFT(None, 16, 3 if task == "invariant" else 1, num_layers=4, num_blocks=1,
                    heads=2, num_inputs=3, num_outputs=2, task=task).double().eval()
        out = model(batch)
        for b in range(batch.num_graphs):
            single = Batch.from_data_list([batch.get_example(b)])
            alone = model(single)
            if task == "invariant":
                torch.testing.assert_close(out[b], alone[0], atol=1e-10, rtol=0)
            else:
                edges = batch.batch[batch.edge_index[0]] == b
                torch.testing.assert_close(out[1][edges], alone[1], atol=1e-10, rtol=0)


def test_siren_graphs_and_feature_graphs():
    batch = raw_batch([siren(2, (8, 8), 1) for _ in range(2)])
    model = make_nft(batch.get_example(0).layout, pool="attention", num_latents=3)
    assert model(batch).shape == (2, 3)
    # a feature graph: 4 channels per weight and bias, shared read-out to 2 channels
    x, edge_attr = torch.randn(batch.num_nodes, 4).double(), torch.randn(
        batch.num_edges, 4).double()
    features = NFT(4, 16, 2, num_layers=3, heads=2, task="equivariant").double()
    x_out, edge_out = features(batch, x, edge_attr)
    assert x_out.shape == (batch.num_nodes, 2) and edge_out.shape == (batch.num_edges, 2)


@pytest.mark.parametrize("part", ["layer_encoding", "io_encoding", "embed"])
def test_encodings_are_used(part):
    batch = mlp_batch()
    model = make_nft(batch.get_example(0).layout)
    out = model(batch)
    with torch.no_grad():
        for param in getattr(model.encoder, part).parameters():
            param.add_(torch.randn_like(param))
    assert not torch.allclose(model(batch), out, atol=1e-6)


def test_fourier_features_or_projection():
    batch = mlp_batch()
    layout = batch.get_example(0).layout
    fourier = make_nft(layout)
    projection = make_nft(layout, fourier_features=0)
    assert "GaussianFourierFeatures" in repr(fourier.encoder.embed)
    assert "KernelProjection" in repr(projection.encoder.embed)
    assert projection(batch).shape == fourier(batch).shape


def test_learns_a_simple_invariant_target():
    """A few Adam steps fit the mean output bias of 8 MLPs (sanity check that
    gradients flow through the whole model)."""
    batch = raw_batch([mlp([2, 4, 1]) for _ in range(8)])
    target = batch.x[batch.node_role == int(NodeRole.OUTPUT)].view(8, 1)
    model = NFT.for_layout(batch.get_example(0).layout, 16, 1, num_blocks=1, heads=2).double()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(60):
        opt.zero_grad()
        loss = (model(batch) - target).pow(2).mean()
        loss.backward()
        opt.step()
        first = loss.item() if first is None else first
    assert loss.item() < 0.1 * first


def test_errors():
    batch = mlp_batch()
    layout = batch.get_example(0).layout
    with pytest.raises(ValueError, match="NFT.*task"):
        NFT(None, 8, 1, num_layers=3, task="both")
    with pytest.raises(ValueError, match="NFT.*out_channels must be 1"):
        NFT(None, 8, 3, num_layers=3, task="equivariant")
    with pytest.raises(ValueError, match="NFTEncoder.*num_inputs and num_outputs"):
        NFT(None, 8, 1, num_layers=3, num_inputs=3)
    with pytest.raises(ValueError, match="NFTEncoder.*num_layers=2"):
        NFT(None, 8, 1, num_layers=2).double()(batch)
    with pytest.raises(ValueError, match="NFTEncoder.*raw graphs"):
        make_nft(layout)(cnn_batch())
    with pytest.raises(ValueError, match="NFT.edit"):
        make_nft(layout).edit(batch)
    with pytest.raises(ValueError, match="IOPositionEncoding.*input neurons"):
        make_nft(layout)(raw_batch([mlp([5, 4, 2])]))


def test_pruned_graphs():
    """Missing edges stay missing: the model runs on pruned graphs and keeps
    its hidden-neuron invariance / equivariance there."""
    graph = nft_pyg.from_module(mlp([3, 6, 5, 2]).double())
    pruned, _ = drop_edges(graph, keep=0.6)
    permuted, node_map, edge_map, _ = permuted_graph(pruned)
    invariant = make_nft(graph.layout)
    torch.testing.assert_close(invariant(permuted), invariant(pruned), atol=1e-10, rtol=0)
    equivariant = make_nft(graph.layout, task="equivariant")
    x_delta, edge_delta = equivariant(pruned)
    assert edge_delta.shape == (pruned.num_edges, 1)
    x_perm, edge_perm = equivariant(permuted)
    torch.testing.assert_close(x_perm, x_delta[node_map], atol=1e-10, rtol=0)
    torch.testing.assert_close(edge_perm, edge_delta[edge_map], atol=1e-10, rtol=0)


@pytest.mark.parametrize("task", ["invariant", "equivariant"])
def test_forward_writes_nothing_onto_the_batch(task):
    batch = mlp_batch()
    before = pickle.dumps(batch)
    model = make_nft(batch.get_example(0).layout, task)
    model(batch)
    model(batch, index=WeightGraphIndex.from_data(batch))
    assert pickle.dumps(batch) == before


@pytest.mark.parametrize("task", ["invariant", "equivariant"])
def test_compiles_and_matches_eager(task, device):
    batch = raw_batch([mlp([3, 5, 4, 2]) for _ in range(3)]).to(device)
    model = make_nft(batch.get_example(0).layout, task).to(device)
    index = WeightGraphIndex.from_data(batch)
    eager = model(batch, index=index)
    torch._dynamo.reset()
    compiled = torch.compile(model)(batch, index=index)
    for a, b in zip(*(out if isinstance(out, tuple) else (out,) for out in (compiled, eager))):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)
