"""Networks from the wild (tests/graph/wild_networks.py): every one either
converts to a graph of the same function (exact round trip, the function kept
under random function-preserving hidden permutations) or is refused with a
message that names the module and what it computes."""
import copy

import pytest
import torch
from torch import nn
from torch_geometric.data import Batch
from wild_networks import CONVERTING, REFUSED

import nft_pyg
from nft_pyg.graph import UnsupportedModuleError, validate
from nft_pyg.symmetry.permutation import permute, random_permutation


def randomized(module: nn.Module, seed: int) -> nn.Module:
    """Random weights and norm statistics (so no layer is an identity), eval mode."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in list(module.named_parameters()) + list(module.named_buffers()):
            if not tensor.is_floating_point() or tensor.dim() == 0:
                continue
            values = torch.rand(tensor.shape, generator=generator) * 0.5 + 0.5 \
                if name.endswith(("running_var", "weight_g")) else \
                torch.randn(tensor.shape, generator=generator) * 0.5
            tensor.copy_(values)
    return module.eval()


def build(name):
    factory, shape = CONVERTING[name]
    torch.manual_seed(0)
    # float64: a sine of 30 x magnifies float32 rounding past any useful tolerance
    inputs = torch.randn(*shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    return randomized(factory(), 1).double(), inputs


@pytest.mark.parametrize("name", sorted(CONVERTING))
def test_converts_to_the_same_function(name):
    module, inputs = build(name)
    graph = nft_pyg.from_module(module)
    validate(graph)
    rebuilt = nft_pyg.to_module(graph).eval()
    with torch.no_grad():
        expected = module(inputs)
        assert torch.allclose(rebuilt(inputs), expected, rtol=1e-10, atol=1e-10), name
    # exact round trip through the state dict
    again = nft_pyg.from_state_dict(nft_pyg.to_state_dict(graph), graph.layout)
    for key in graph.keys():
        value = graph[key]
        same = torch.equal(value, again[key]) if isinstance(value, torch.Tensor) \
            else value == again[key]
        assert same, key
    # and through the rebuilt module
    assert torch.equal(nft_pyg.from_module(rebuilt).edge_attr, graph.edge_attr)


@pytest.mark.parametrize("name", sorted(CONVERTING))
def test_random_hidden_permutations_keep_the_function(name):
    module, inputs = build(name)
    graph = nft_pyg.from_module(module)
    with torch.no_grad():
        expected = module(inputs)
    generator = torch.Generator().manual_seed(3)
    for _ in range(3):
        permuted = permute(graph, random_permutation(graph, generator))
        validate(permuted)
        with torch.no_grad():
            got = nft_pyg.to_module(permuted).eval()(inputs)
        assert torch.allclose(got, expected, rtol=1e-9, atol=1e-9), name


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refused_with_the_exact_error(name):
    factory, message = REFUSED[name]
    module = factory()
    with pytest.raises(UnsupportedModuleError) as info:
        nft_pyg.from_module(module)
    text = str(info.value)
    assert "Supported: Linear" in text and "<root>" not in text and "''" not in text
    if message is None:
        assert text.startswith("module 1 (OpaqueWrong): it was registered as relu but "
                               "computes something else on random inputs"), text
    else:
        assert text.split(" Supported: ")[0] == message, text


def test_the_siren_paper_layers_hold_a_linear_layer_and_a_sine_with_w0():
    module, _ = build("siren paper SineLayer net")
    layout = nft_pyg.Layout.coerce(nft_pyg.from_module(module).layout)
    steps = [(step["kind"], step.get("act"), step.get("params")) for step in layout.steps]
    assert steps[:2] == [("linear", None, None), ("act", "SINE", {"w0": 30.0})]
    assert layout.steps[0]["name"] == "net.0.linear"  # the state-dict name of the weight


def test_a_residual_stream_is_permuted_together():
    module, _ = build("small ResNet (BasicBlock, BatchNorm)")
    graph = nft_pyg.from_module(module)
    layout = nft_pyg.Layout.coerce(graph.layout)
    assert layout.residuals() == [(1, 3), (3, 5)]
    perm = random_permutation(graph, torch.Generator().manual_seed(0))
    assert torch.equal(perm[1], perm[3]) and torch.equal(perm[3], perm[5])
    assert not torch.equal(perm[1], torch.arange(8))
    residual = graph.edge_kind == int(nft_pyg.graph.EdgeKind.RESIDUAL)
    assert int(residual.sum()) == 16 and bool((graph.edge_attr[residual, 0] == 1).all())


def test_a_stream_through_the_input_is_not_permuted():
    module, _ = build("residual MLP on the input")
    perm = random_permutation(nft_pyg.from_module(module))
    assert torch.equal(perm[2], torch.arange(4))


def test_weight_norm_graph_holds_the_effective_weight():
    module, inputs = build("weight_norm MLP")
    graph = nft_pyg.from_module(module)
    module(inputs)  # the old-style weight_norm refreshes .weight in its forward pre-hook
    assert torch.equal(graph.edge_attr[:32, 0], module[0].weight.detach().reshape(-1))
    state = nft_pyg.to_state_dict(graph)
    assert "0.weight" in state and "0.weight_g" not in state


def test_editing_a_residual_edge_is_refused():
    module, _ = build("residual MLP")
    graph = nft_pyg.from_module(module)
    graph.edge_attr[-1, 0] = 2.0
    with pytest.raises(ValueError, match="residual edges carry the fixed weight 1"):
        nft_pyg.to_module(graph)


def test_residual_graphs_batch_and_unbatch():
    graphs = [nft_pyg.from_module(build(name)[0]) for name in
              ("residual MLP", "siren paper SineLayer net", "residual MLP on the input")]
    batch = Batch.from_data_list(graphs)
    validate(batch)
    for graph, back in zip(graphs, batch.to_data_list()):
        assert torch.equal(graph.edge_index, back.edge_index)
    perms = random_permutation(batch, torch.Generator().manual_seed(1))
    validate(permute(batch, perms))


def test_the_converted_module_is_not_changed():
    module, inputs = build("small ResNet (BasicBlock, BatchNorm)")
    before = copy.deepcopy(module.state_dict())
    nft_pyg.from_module(module)
    assert all(torch.equal(before[key], value) for key, value in module.state_dict().items())


@pytest.mark.parametrize("name", sorted(CONVERTING))
def test_from_modules_batches_like_graph_by_graph_collation(name):
    first, _ = build(name)
    torch.manual_seed(0)
    second = randomized(CONVERTING[name][0](), 7).double()
    batch = nft_pyg.graph.from_modules([first, second])
    expected = Batch.from_data_list([nft_pyg.from_module(first), nft_pyg.from_module(second)])
    for key in ("x", "edge_index", "edge_attr", "node_norm", "edge_kind", "edge_layer",
                "node_act", "batch", "ptr"):
        assert torch.equal(batch[key], expected[key]), key
    assert list(batch.layout) == list(expected.layout)
