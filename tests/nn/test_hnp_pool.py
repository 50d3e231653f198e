"""HNPPool: graph == dense twin, explicit values, hidden-permutation
invariance, input/output positions kept, bad inputs."""
import pytest
import torch
from helpers import (
    cnn,
    dense_of,
    folded_raw_features,
    index_maps,
    layer_sizes,
    mlp,
    random_features,
    random_neuron_permutation,
    structure_batch,
)

from nft_pyg.nn.pool.hnp_pool import HNPPool
from nft_pyg.symmetry import NeuronPermutation
from nft_pyg.tensor.weight_space import WeightSpace

torch.set_num_threads(1)


def make_pool(channels, widths):
    return HNPPool(channels, len(widths) - 1, widths[0], widths[-1])


@pytest.mark.parametrize("widths,batch_size", [([3, 2], 2), ([2, 4, 3], 1), ([3, 4, 5, 2], 3),
                                               ([2, 3, 4, 2, 3], 2)])
def test_graph_matches_dense_mlp(widths, batch_size):
    batch = structure_batch([mlp(widths) for _ in range(batch_size)])
    x, edge_attr = random_features(batch, 3)
    pool = make_pool(3, widths)
    pooled = pool(x, edge_attr, batch)
    assert pooled.shape == (batch_size, pool.out_channels)
    expected = pool.forward_dense(dense_of(batch, x, edge_attr))
    assert torch.allclose(pooled, expected, atol=1e-10, rtol=0)


def test_graph_matches_dense_cnn_folded_and_float32():
    modules = [cnn([2, 3, 4], [3, 1]) for _ in range(2)]
    batch = structure_batch(modules)
    x, edge_attr = folded_raw_features(batch)
    width = int(batch.kernel_width[0])
    pool = make_pool(width, layer_sizes(batch.to_data_list()[0]))
    folded = WeightSpace.from_graph(batch).fold_kernels(width)
    assert x.dtype == torch.float32
    assert torch.allclose(pool(x, edge_attr, batch), pool.forward_dense(folded), atol=1e-5)
    x, edge_attr, folded = x.double(), edge_attr.double(), folded.map(torch.Tensor.double)
    assert torch.allclose(pool(x, edge_attr, batch), pool.forward_dense(folded), atol=1e-10,
                          rtol=0)


@pytest.mark.parametrize("widths", [[3, 2], [3, 4, 2], [2, 3, 4, 3]])
def test_values_from_the_module(widths):
    """The pooled raw graph, read straight off the module's parameters."""
    module = mlp(widths)
    batch = structure_batch([module])
    pool = make_pool(1, widths)
    linears = [m for m in module if isinstance(m, torch.nn.Linear)]
    w = [m.weight.detach() for m in linears]
    b = [m.bias.detach() for m in linears]
    if len(linears) == 1:
        expected = torch.cat([w[0].flatten(), b[0]])
    else:
        expected = torch.cat([w[0].mean(0)]
                             + [v.mean().view(1) for v in w[1:-1]]
                             + [w[-1].mean(1)]
                             + [v.mean().view(1) for v in b[:-1]]
                             + [b[-1]])
    assert torch.allclose(pool(batch.x, batch.edge_attr, batch)[0], expected, atol=1e-6)


@pytest.mark.parametrize("modules", [
    [mlp([3, 4, 2]), mlp([3, 6, 2]), mlp([3, 1, 2])],
    [mlp([2, 3, 4, 3]), mlp([2, 5, 2, 3])],
    [cnn([2, 3, 4], [3, 1], head=2)],
])
def test_invariant_to_hidden_permutations_and_batching(modules):
    batch = structure_batch(modules)
    x, edge_attr = random_features(batch, 2)
    pool = make_pool(2, layer_sizes(batch.to_data_list()[0]))
    node_map, edge_map = random_neuron_permutation(batch, "hidden")
    pooled = pool(x, edge_attr, batch)
    assert torch.allclose(pool(x[node_map], edge_attr[edge_map], batch), pooled, atol=1e-12)
    carrier = batch.clone()
    carrier.x, carrier.edge_attr = x, edge_attr
    for row, graph in zip(pooled, carrier.to_data_list()):
        assert torch.allclose(pool(graph.x, graph.edge_attr, graph)[0], row, atol=1e-12)


@pytest.mark.parametrize("widths", [[3, 4], [3, 4, 2], [3, 2, 4, 3]])
@pytest.mark.parametrize("which", ["input", "output"])
def test_keeps_input_and_output_positions(widths, which):
    """Permuting input (output) neurons permutes the position-typed entries:
    the pool is not invariant to it."""
    batch = structure_batch([mlp(widths)])
    x, edge_attr = random_features(batch, 2)
    pool = make_pool(2, widths)
    perms = [torch.arange(n) for n in widths]
    layer = 0 if which == "input" else len(widths) - 1
    perms[layer] = torch.roll(torch.arange(widths[layer]), 1)
    node_map, edge_map = index_maps(batch, NeuronPermutation(perms))
    change = (pool(x[node_map], edge_attr[edge_map], batch) - pool(x, edge_attr, batch)).abs()
    assert change.max() > 1e-3


def test_bad_inputs_and_repr():
    widths = [3, 4, 2]
    batch = structure_batch([mlp(widths)])
    x, edge_attr = random_features(batch, 2)
    pool = make_pool(2, widths)
    assert pool.out_channels == 2 * (3 + 2 * 2 + 1)
    assert repr(pool) == "HNPPool(2, num_layers=2, num_inputs=3, num_outputs=2)"
    with pytest.raises(ValueError, match="HNPPool: expected x with 2 channels"):
        pool(x[:, :1], edge_attr, batch)
    with pytest.raises(ValueError, match="HNPPool: every graph of the batch has "
                                         "num_layers=2 but the module was built for num_layers=3"):
        make_pool(2, [3, 4, 4, 2])(x, edge_attr, batch)
    with pytest.raises(ValueError, match="HNPPool: .* has num_outputs=2 but the module was "
                                         "built for num_outputs=3"):
        make_pool(2, [3, 4, 3])(x, edge_attr, batch)
    with pytest.raises(ValueError, match="HNPPool.forward_dense: expected num_inputs=2"):
        make_pool(2, [2, 4, 2]).forward_dense(dense_of(batch, x, edge_attr))
    with pytest.raises(ValueError, match="HNPPool: num_layers must be >= 1"):
        HNPPool(2, 0, 3, 2)
