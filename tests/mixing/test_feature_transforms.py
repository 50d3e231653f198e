"""Feature transforms: layer / IO encodings, per-layer weight normalisation, reverse edges."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch_geometric.data import Batch
from torch_geometric.loader import DataLoader
from torch_geometric.transforms import BaseTransform, Compose

import nft_pyg
from nft_pyg.nn.conv.np_conv import NPConv
from nft_pyg.symmetry import permute, random_permutation
from nft_pyg.transforms.encodings import AddIOPositions, AddLayerEncoding
from nft_pyg.transforms.normalize import NormalizeWeights, WeightStatistics
from nft_pyg.transforms.reverse_edges import AddReverseEdges, forward_edges
from nft_pyg.utils.io import CorruptFileError, atomic_save

torch.set_num_threads(1)


def mlp(sizes, scale=1.0, shift=0.0):
    layers = []
    for i in range(len(sizes) - 1):
        layers += [nn.Linear(sizes[i], sizes[i + 1]), nn.Tanh()]
    module = nn.Sequential(*layers[:-1]).double()
    with torch.no_grad():
        for p in module.parameters():
            p.mul_(scale).add_(shift)
    return module


def cnn():
    return nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Conv2d(3, 2, 1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 2)).double()


@pytest.fixture(scope="module")
def graph():
    torch.manual_seed(0)
    return nft_pyg.from_module(mlp([3, 4, 2]))


def test_transforms_are_base_transforms():
    for transform in (AddLayerEncoding(2), AddIOPositions(3, 2), AddReverseEdges(),
                      NormalizeWeights(WeightStatistics.from_dataset(
                          [nft_pyg.from_module(mlp([2, 2]))]))):
        assert isinstance(transform, BaseTransform)
        assert type(transform).__name__ in repr(transform)


def test_layer_encoding_values(graph):
    out = AddLayerEncoding(3, attr_name="layer_enc")(graph.clone())
    assert out.layer_enc.shape == (graph.num_nodes, 4)
    assert out.edge_layer_enc.shape == (graph.num_edges, 3)
    assert torch.equal(out.layer_enc.argmax(-1), graph.node_layer)
    assert torch.equal(out.edge_layer_enc.argmax(-1), graph.edge_layer - 1)
    assert torch.equal(out.x, graph.x)  # stored apart, features untouched
    cat = AddLayerEncoding(3)(graph.clone())
    assert cat.x.shape == (graph.num_nodes, 5) and cat.edge_attr.shape == (graph.num_edges, 4)
    torch.testing.assert_close(cat.x[:, :1], graph.x)
    with pytest.raises(ValueError, match="AddLayerEncoding"):
        AddLayerEncoding(1)(graph.clone())  # 2 weight layers


def test_io_positions_values(graph):
    out = AddIOPositions(4, 3, attr_name="io")(graph.clone())
    enc, edge_enc = out.io, out.edge_io
    assert enc.shape == (graph.num_nodes, 7) and edge_enc.shape == (graph.num_edges, 7)
    inputs = graph.node_role == 0
    outputs = graph.node_role == 2
    assert torch.equal(enc[inputs, :4].argmax(-1), graph.node_pos[inputs])
    assert torch.equal(enc[outputs, 4:].argmax(-1), graph.node_pos[outputs])
    assert bool((enc[graph.node_role == 1] == 0).all())
    src, dst = graph.edge_index
    first = graph.edge_layer == 1
    assert torch.equal(edge_enc[first, :4].argmax(-1), graph.node_pos[src[first]])
    assert bool((edge_enc[first, 4:] == 0).all())  # W_1 ends in hidden neurons
    last = graph.edge_layer == 2
    assert torch.equal(edge_enc[last, 4:].argmax(-1), graph.node_pos[dst[last]])
    with pytest.raises(ValueError, match="input position"):
        AddIOPositions(2, 3)(graph.clone())


def test_encodings_batch_and_follow_positions(graph):
    """Computed after a permutation, the encoding is one of positions, not of neurons."""
    perm = random_permutation(graph, generator=torch.Generator().manual_seed(1),
                              permute_io=True)
    permuted = AddIOPositions(3, 2, attr_name="io")(permute(graph, perm))
    reference = AddIOPositions(3, 2, attr_name="io")(graph.clone())
    torch.testing.assert_close(permuted.io, reference.io)  # canonical order: same encoding
    batch = Batch.from_data_list([reference, reference])
    assert batch.io.shape == (2 * graph.num_nodes, 5)
    assert batch.edge_io.shape == (2 * graph.num_edges, 5)


def dataset():
    torch.manual_seed(2)
    return [nft_pyg.from_module(mlp([3, 4, 2], scale=s, shift=t))
            for s, t in ((1.0, 0.5), (2.0, -0.3), (0.5, 1.0))]


def test_weight_statistics_match_direct_computation():
    graphs = dataset()
    stats = WeightStatistics.from_dataset(graphs)
    for l in (1, 2):
        weights = torch.cat([g.edge_attr[g.edge_layer == l].reshape(-1) for g in graphs])
        biases = torch.cat([g.x[g.node_layer == l, 0] for g in graphs])
        torch.testing.assert_close(stats.weight_mean[l - 1], weights.mean())
        torch.testing.assert_close(stats.weight_std[l - 1], weights.std(unbiased=False))
        torch.testing.assert_close(stats.bias_mean[l - 1], biases.mean())
        torch.testing.assert_close(stats.bias_std[l - 1], biases.std(unbiased=False))
        assert int(stats.weight_count[l - 1]) == weights.numel()


def test_normalize_weights_standardises_and_inverts():
    graphs = dataset()
    stats = WeightStatistics.from_dataset(graphs)
    transform = NormalizeWeights(stats)
    normalised = [transform(g.clone()) for g in graphs]
    for l in (1, 2):
        weights = torch.cat([g.edge_attr[g.edge_layer == l].reshape(-1) for g in normalised])
        biases = torch.cat([g.x[g.node_layer == l, 0] for g in normalised])
        torch.testing.assert_close(weights.mean(), torch.tensor(0.0, dtype=torch.float64))
        torch.testing.assert_close(weights.std(unbiased=False),
                                   torch.tensor(1.0, dtype=torch.float64))
        torch.testing.assert_close(biases.mean(), torch.tensor(0.0, dtype=torch.float64))
    assert bool((normalised[0].x[graphs[0].node_layer == 0] == 0).all())
    restored = transform.inverse(normalised[0].clone())
    torch.testing.assert_close(restored.edge_attr, graphs[0].edge_attr)
    torch.testing.assert_close(restored.x, graphs[0].x)
    # per-layer constants: the transform commutes with neuron permutations
    perm = random_permutation(graphs[0], generator=torch.Generator().manual_seed(3))
    a = transform(permute(graphs[0], perm))
    b = permute(transform(graphs[0].clone()), perm)
    torch.testing.assert_close(a.edge_attr, b.edge_attr)
    torch.testing.assert_close(a.x, b.x)
    with pytest.raises(ValueError, match="weight layers"):
        transform(nft_pyg.from_module(mlp([2, 3, 3, 2])))
    with pytest.raises(ValueError, match="raw graph"):
        transform(AddLayerEncoding(2)(graphs[0].clone()))


def test_normalize_keeps_kernel_padding_zero():
    torch.manual_seed(4)
    graphs = [nft_pyg.from_module(cnn()) for _ in range(2)]
    stats = WeightStatistics.from_dataset(graphs)
    # padding excluded: the 1x1 conv's statistics come from its single entry per edge
    layer2 = torch.cat([g.edge_attr[g.edge_layer == 2, 0] for g in graphs])
    torch.testing.assert_close(stats.weight_mean[1], layer2.mean())
    out = NormalizeWeights(stats)(graphs[0].clone())
    assert bool((out.edge_attr[out.edge_layer == 2, 1:] == 0).all())
    assert bool((out.edge_attr[out.edge_layer == 1, 1:] != 0).any())
    nft_pyg.to_module(out)  # still a valid raw graph


def test_statistics_save_load(tmp_path):
    stats = WeightStatistics.from_dataset(dataset())
    path = tmp_path / "stats.pt"
    stats.save(path)
    loaded = WeightStatistics.load(path)
    for key, value in stats.to_dict().items():
        assert torch.equal(getattr(loaded, key), value)
    atomic_save({"weight_mean": torch.zeros(2)}, tmp_path / "bad.pt")
    with pytest.raises(CorruptFileError, match="missing"):
        WeightStatistics.load(tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="empty"):
        WeightStatistics.from_dataset([])


def test_reverse_edges_format(graph):
    out = AddReverseEdges()(graph.clone())
    E = graph.num_edges
    assert out.edge_index.shape == (2, 2 * E)
    assert torch.equal(out.edge_index[:, E:], graph.edge_index.flip(0))
    assert torch.equal(out.edge_dir, torch.cat([torch.zeros(E), torch.ones(E)]).long())
    for key in ("edge_attr", "edge_layer", "edge_kind"):
        assert torch.equal(out[key][E:], graph[key]) and torch.equal(out[key][:E], graph[key])
    back = forward_edges(out)
    for key in ("edge_index", "edge_attr", "edge_layer", "edge_kind", "x"):
        assert torch.equal(back[key], graph[key])
    assert getattr(back, "edge_dir", None) is None
    with pytest.raises(ValueError, match="already"):
        AddReverseEdges()(out)
    with_dir = AddReverseEdges(concat_dir=True)(graph.clone())
    assert torch.equal(with_dir.edge_attr[:, -1], with_dir.edge_dir.double())


def test_reverse_edges_batch_and_operators(graph):
    """edge_dir is not shifted by batching; operators must get the forward edges."""
    reverse = AddReverseEdges()
    loader = DataLoader([reverse(graph.clone()), reverse(graph.clone())], batch_size=2)
    batch = next(iter(loader))
    assert set(batch.edge_dir.tolist()) == {0, 1}
    assert batch.edge_index.max() == batch.num_nodes - 1
    conv = NPConv(1, 2, num_layers=2).double()
    x, edges = conv(graph.x, graph.edge_index, graph.edge_attr, graph)
    fwd = forward_edges(reverse(graph.clone()))
    x2, edges2 = conv(fwd.x, fwd.edge_index, fwd.edge_attr, fwd)
    torch.testing.assert_close(x2, x)
    torch.testing.assert_close(edges2, edges)
    doubled = reverse(graph.clone())
    with pytest.raises(ValueError, match="reverse edges"):  # they would corrupt in/out means
        conv(doubled.x, doubled.edge_index, doubled.edge_attr, doubled)


def test_compose_in_loader(graph):
    transform = Compose([AddLayerEncoding(2), AddReverseEdges(concat_dir=True)])
    loader = DataLoader([graph.clone(), graph.clone()], batch_size=2,
                        )
    batch = transform(next(iter(loader)))
    assert batch.x.shape == (2 * graph.num_nodes, 4)
    assert batch.edge_attr.shape == (4 * graph.num_edges, 1 + 2 + 1)
