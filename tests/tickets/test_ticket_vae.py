"""TicketVAE: equivariant mask generation, exact per-layer counts, losses, errors."""
import pytest
import torch
from torch import nn
from torch_geometric.data import Batch

from nft_pyg import from_module
from nft_pyg.nn.models.ticket_vae import TicketVAE, topk_per_layer
from nft_pyg.symmetry import permute, permute_features, random_permutation


def _graph(seed, widths=(5, 7, 6, 3)):
    torch.manual_seed(seed)
    layers = []
    for index, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if index < len(widths) - 2:
            layers.append(nn.ReLU())
    graph = from_module(nn.Sequential(*layers).double())
    graph.ticket_mask = torch.rand(graph.num_edges, 1) < 0.3
    return graph


def _cnn_graph(seed):
    torch.manual_seed(seed)
    module = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Conv2d(3, 4, 3), nn.ReLU(),
                           nn.Flatten(), nn.Linear(4 * 2 * 2, 3)).double()
    graph = from_module(module)
    graph.ticket_mask = (torch.rand(graph.num_edges, 9) < 0.3) & (graph.edge_attr != 0)
    return graph


def _model(mode, graph):
    torch.manual_seed(0)
    return TicketVAE.for_layout(graph.layout, mode=mode, hidden_channels=6,
                                latent_channels=3).double().eval()


@pytest.mark.parametrize("mode, make", [("hnp", _graph), ("np", _graph), ("hnp", _cnn_graph)])
def test_mask_generation_is_equivariant_to_hidden_permutations(mode, make):
    graph = make(0)
    model = _model(mode, graph)
    perm = random_permutation(graph, generator=torch.Generator().manual_seed(1))
    permuted = permute(graph, perm)  # moves ticket_mask with the edges
    with torch.no_grad():
        # deterministic path z = 0
        logits = model.sample_logits(graph)
        _, expected_logits = permute_features(graph, None, logits, perm)
        torch.testing.assert_close(model.sample_logits(permuted), expected_logits,
                                   atol=1e-10, rtol=1e-10)
        mask = model.predict_mask(graph)
        _, expected = permute_features(graph, None, mask, perm)
        assert torch.equal(model.predict_mask(permuted), expected)
        # sampled path: the same noise, moved with the edges
        noise = model.sample_noise(graph, torch.Generator().manual_seed(2))
        _, moved_noise = permute_features(graph, None, noise, perm)
        _, expected = permute_features(graph, None, model.predict_mask(graph, noise=noise), perm)
        assert torch.equal(model.predict_mask(permuted, noise=moved_noise), expected)
        # encoder: posterior means move with the edges too
        mu, _ = model.encode(graph, graph.ticket_mask)
        _, expected_mu = permute_features(graph, None, mu, perm)
        torch.testing.assert_close(model.encode(permuted, permuted.ticket_mask)[0],
                                   expected_mu, atol=1e-10, rtol=1e-10)
    # the mask is not trivially invariant: a non-identity permutation moves it
    assert not torch.equal(model.predict_mask(permuted), mask) or perm.is_identity()


def test_masks_keep_exactly_the_ticket_counts_per_network_and_layer():
    graphs = [_graph(0), _graph(1)]
    batch = Batch.from_data_list(graphs)
    model = _model("hnp", graphs[0])
    with torch.no_grad():
        mask = model.predict_mask(batch)
    assert mask.shape == batch.ticket_mask.shape
    group = batch.batch[batch.edge_index[0]] * 3 + batch.edge_layer - 1
    for g in range(6):
        assert int(mask[group == g].sum()) == int(batch.ticket_mask[group == g].sum())
    counts = torch.tensor([[1, 2, 3], [4, 5, 6]])
    with torch.no_grad():
        custom = model.predict_mask(batch, counts=counts)
    assert [int(custom[group == g].sum()) for g in range(6)] == list(range(1, 7))


def test_topk_per_layer_matches_sorting_each_group():
    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(40, 2, generator=generator)
    valid = torch.rand(40, 2, generator=generator) < 0.8
    group = torch.randint(0, 3, (40,), generator=generator)
    counts = torch.tensor([2, 5, 0])
    keep = topk_per_layer(scores, valid, group, counts)
    for g in range(3):
        entries = (group == g).unsqueeze(1) & valid
        chosen = scores[entries].topk(int(counts[g])).values
        assert torch.equal(scores[keep & entries].sort().values, chosen.sort().values)
    assert not bool((keep & ~valid).any())


def test_mask_and_latent_are_used():
    graph = _graph(0)
    model = _model("hnp", graph)
    with torch.no_grad():
        mu, _ = model.encode(graph, graph.ticket_mask)
        other, _ = model.encode(graph, ~graph.ticket_mask)
        assert not torch.allclose(mu, other)
        z = model.sample_noise(graph, torch.Generator().manual_seed(0))
        assert not torch.allclose(model.sample_logits(graph), model.sample_logits(graph, z))


def test_loss_is_finite_and_trains_every_stack():
    graph = _graph(0)
    model = _model("hnp", graph).train()
    losses = model.loss(Batch.from_data_list([graph, _graph(1)]),
                        torch.cat([graph.ticket_mask, _graph(1).ticket_mask]), beta=0.5)
    assert all(torch.isfinite(value) for value in losses.values())
    torch.testing.assert_close(losses["loss"], losses["bce"] + 0.5 * losses["kl"])
    losses["loss"].backward()
    for stack in (model.encoder, model.decoder):
        assert any(p.grad is not None and bool(p.grad.abs().sum() > 0)
                   for p in stack.parameters())


def test_errors():
    graph = _graph(0)
    with pytest.raises(ValueError, match="mode"):
        TicketVAE(3, mode="pt")
    with pytest.raises(ValueError, match="num_inputs"):
        TicketVAE(3, mode="hnp")
    model = _model("np", graph)
    with pytest.raises(ValueError, match="mask has shape"):
        model.encode(graph, torch.ones(3, 1))
    with pytest.raises(ValueError, match="raw graph"):
        model.encode(graph.clone().update({"x": torch.zeros(graph.num_nodes, 2)}),
                     graph.ticket_mask)
