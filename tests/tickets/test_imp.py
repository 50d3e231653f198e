"""Batched IMP: stacked MLPs equal their modules, masks keep what they should."""
import pytest
import torch

from nft_pyg.tickets.imp import (
    IMPConfig,
    StackedMLP,
    TrainConfig,
    digits_split,
    magnitude_masks,
    random_masks,
    run_imp,
    topk_masks,
    train_masked,
    weight_names,
)

WIDTHS = (64, 6, 5, 10)


@pytest.mark.parametrize("arch, widths", [("mlp", WIDTHS), ("cnn", (1, 3, 2, 10))])
def test_stacked_logits_equal_each_module(arch, widths):
    config = IMPConfig(widths=widths, arch=arch)
    params = config.init(3, torch.Generator().manual_seed(0))
    masks = [torch.rand(w.shape) < 0.5 for w in params.weights]
    assert [m[0].numel() for m in masks] == config.layer_sizes
    inputs = torch.rand(7, 64)
    logits = params.logits(inputs, [m.float() for m in masks])
    images = inputs if arch == "mlp" else inputs.view(-1, 1, 8, 8)
    for r in range(3):
        module = config.module()
        state = {}
        for name, w, b, m in zip(weight_names(widths, arch), params.weights, params.biases,
                                 masks):
            state[name] = w[r] * m[r]
            state[name.replace("weight", "bias")] = b[r]
        module.load_state_dict(state)
        torch.testing.assert_close(logits[r], module(images), atol=1e-6, rtol=1e-6)


def test_keep_counts():
    config = IMPConfig(widths=(64, 32, 32, 10), sparsity=0.95, rounds=5, output_rate=0.5)
    assert config.keep_counts(0) == [2048, 1024, 320]
    counts = config.keep_counts()
    assert counts[:2] == [round(2048 * 0.05), round(1024 * 0.05)]
    assert 0.05 * 320 < counts[2] < 320  # the output layer is pruned more slowly
    previous = config.keep_counts(0)
    for t in range(1, 6):
        assert all(a <= b for a, b in zip(config.keep_counts(t), previous))
        previous = config.keep_counts(t)
    with pytest.raises(ValueError, match="sparsity"):
        IMPConfig(sparsity=1.0)
    with pytest.raises(ValueError, match="widths"):
        IMPConfig(widths=(10, 5, 10))
    with pytest.raises(ValueError, match="CNN widths"):
        IMPConfig(widths=(64, 5, 10), arch="cnn")
    cnn = IMPConfig(widths=(1, 8, 8, 10), arch="cnn", sparsity=0.95)
    assert cnn.layer_sizes == [72, 576, 1280]
    assert cnn.keep_counts()[:2] == [round(72 * 0.05), round(576 * 0.05)]


def test_magnitude_random_and_topk_masks():
    weight = torch.tensor([[[0.1, -0.5], [0.3, 0.05]]])
    still = torch.tensor([[[True, True], [False, True]]])
    kept = magnitude_masks([weight], [still], [2])[0]
    assert kept.tolist() == [[[True, True], [False, False]]]  # 0.3 is already pruned
    masks = random_masks([torch.Size([4, 6, 5])], [7], torch.Generator().manual_seed(0))
    assert masks[0].flatten(1).sum(1).tolist() == [7] * 4
    top = topk_masks([weight], [1])[0]
    assert top.tolist() == [[[False, False], [True, False]]]


def test_masked_training_keeps_pruned_weights_at_zero_and_is_deterministic():
    data = digits_split(0)
    init = StackedMLP.init(WIDTHS, 2, torch.Generator().manual_seed(1))
    masks = [torch.rand(w.shape, generator=torch.Generator().manual_seed(2)) < 0.3
             for w in init.weights]
    config = TrainConfig(epochs=1, batch_size=128, lr=1e-2)
    first = train_masked(init, masks, data, config, seed=5)
    second = train_masked(init, masks, data, config, seed=5)
    for w, w2, m, w0 in zip(first.weights, second.weights, masks, init.weights):
        assert torch.equal(w, w2)
        assert bool((w[~m] == 0).all())
        assert not torch.equal(w[m], w0[m])  # trained
    # networks train independently: one network alone gives the same result
    alone = train_masked(init.select([1]), [m[1:] for m in masks], data, config, seed=5)
    torch.testing.assert_close(alone.weights[0][0], first.weights[0][1], atol=1e-5, rtol=1e-5)


def test_run_imp_gives_tickets_with_the_planned_counts():
    config = IMPConfig(widths=(64, 8, 10), sparsity=0.8, rounds=2,
                       train=TrainConfig(epochs=2, batch_size=64, lr=2e-2))
    init = StackedMLP.init(config.widths, 2, torch.Generator().manual_seed(0))
    out = run_imp(init, config, digits_split(0), seed=1, mask_seed=2)
    counts = config.keep_counts()
    for masks in (out["masks"], out["random_masks"]):
        assert [m.flatten(1).sum(1).tolist() for m in masks] == [[c, c] for c in counts]
    assert out["round_accuracy"].shape == (3, 2)
    assert torch.equal(out["round_accuracy"][0], out["dense_accuracy"])
    assert bool((out["dense_accuracy"] > 0.5).all())  # two epochs learn the digits
