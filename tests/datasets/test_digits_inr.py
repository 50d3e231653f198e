"""DigitsINR on a tiny configuration (built in-process, one thread)."""
import pytest
import torch

from nft_pyg import to_module
from nft_pyg.datasets import DigitsINR
from nft_pyg.datasets.digits_inr import digit_images
from nft_pyg.inr import make_grid, psnr

TINY = dict(num_images=8, extra_fits=2, steps=30, resolution=12, hidden=(8,), lr=1e-2,
            images_per_shard=3, num_workers=0, progress=False)


@pytest.fixture(scope="module")
def inr_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("inr")
    DigitsINR(root, **TINY)
    return root


def splits(root):
    return {split: DigitsINR(root, split=split, **TINY) for split in ("train", "val", "test")}


def test_counts_and_attributes(inr_root):
    data = splits(inr_root)
    # 8 digits: 6 / 1 / 1; training digits get 1 + 2 fits
    assert [len(data[s]) for s in ("train", "val", "test")] == [18, 1, 1]
    images, labels = digit_images(12)
    for ds in data.values():
        for graph in ds:
            source = graph.source_id.item()
            assert graph.image.shape == (1, 1, 12, 12)
            assert torch.equal(graph.image[0], images[source])
            assert graph.y.item() == labels[source].item()
            assert graph.layout_obj.neuron_layer_sizes == [2, 8, 1]
    fits = sorted(g.fit_id.item() for g in data["train"])
    assert fits == [0] * 6 + [1] * 6 + [2] * 6
    assert {g.fit_id.item() for g in data["val"]} == {0}


def test_splits_are_by_source_image(inr_root):
    data = splits(inr_root)
    sources = {split: {g.source_id.item() for g in ds} for split, ds in data.items()}
    assert not sources["train"] & sources["val"] and not sources["train"] & sources["test"]
    assert not sources["val"] & sources["test"]
    assert len(sources["train"] | sources["val"] | sources["test"]) == 8


def test_graphs_render_their_image(inr_root, tmp_path):
    """The stored PSNR is the PSNR of the SIREN rebuilt from the graph, and the
    copies of one digit are different networks."""
    train = DigitsINR(inr_root, **TINY)
    for graph in list(train)[:6]:
        # nft_pyg.inr.render_module rejects to_module's Sine (a second Sine class)
        with torch.no_grad():
            rendered = to_module(graph)(make_grid(12)).view(1, 12, 12)
        error = (rendered - graph.image[0]).pow(2).mean()
        assert psnr(error).item() == pytest.approx(graph.psnr.item(), abs=1e-3)
    untrained = DigitsINR(tmp_path, **{**TINY, "steps": 0})
    for fitted, initial in zip(train, untrained):
        assert fitted.source_id.item() == initial.source_id.item()
        assert fitted.psnr.item() > initial.psnr.item() + 1.0
    copies = [g for g in train if g.source_id.item() == train[0].source_id.item()]
    assert len(copies) == 3 and not torch.equal(copies[0].edge_attr, copies[1].edge_attr)


def test_determinism(inr_root, tmp_path):
    first = DigitsINR(inr_root, **TINY)
    again = DigitsINR(tmp_path, **TINY)
    for a, b in zip(first, again):
        assert torch.equal(a.edge_attr, b.edge_attr) and torch.equal(a.x, b.x)
        assert a.source_id.item() == b.source_id.item()
    other_seed = DigitsINR(tmp_path, seed=1, **TINY)
    assert {g.source_id.item() for g in other_seed} != {g.source_id.item() for g in first}


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="num_images must be in"):
        DigitsINR(tmp_path, **{**TINY, "num_images": 2})
    with pytest.raises(ValueError, match="size must be one of"):
        DigitsINR(tmp_path, size="medium")


def test_image_views(inr_root, tmp_path):
    """Training digits get moved copies, each fitted once to its own image;
    val / test keep the plain digits, and a dataset without views keeps the
    files (fingerprint) it had before views existed."""
    viewed = {**TINY, "extra_fits": 0, "image_views": 2}
    data = {split: DigitsINR(tmp_path, split=split, **viewed) for split in ("train", "val", "test")}
    assert [len(data[s]) for s in ("train", "val", "test")] == [18, 1, 1]
    images, _ = digit_images(12)
    train = data["train"]
    assert sorted(g.view_id.item() for g in train) == [0] * 6 + [1] * 6 + [2] * 6
    assert {g.fit_id.item() for g in train} == {0}
    for graph in train:
        source, view = graph.source_id.item(), graph.view_id.item()
        moved = not torch.equal(graph.image[0], images[source])
        assert moved == (view > 0)
        with torch.no_grad():   # each INR was fitted to its own (moved) image
            rendered = to_module(graph)(make_grid(12)).view(1, 12, 12)
        assert psnr((rendered - graph.image[0]).pow(2).mean()).item() == \
            pytest.approx(graph.psnr.item(), abs=1e-3)
    copies = [g.image for g in train if g.source_id.item() == train[0].source_id.item()]
    assert not torch.equal(copies[1], copies[2])
    assert all(g.view_id.item() == 0 for s in ("val", "test") for g in data[s])
    assert "image_views" not in DigitsINR(inr_root, **TINY).config()
    with pytest.raises(ValueError, match="image_views must be >= 0"):
        DigitsINR(tmp_path, **{**TINY, "image_views": -1})


def test_shared_first_layers_are_shared_across_shards_and_the_rest_is_not(tmp_path):
    options = {**TINY, "steps": 0, "extra_fits": 1, "shared_init": False,
               "shared_first_layers": 1}
    graphs = [g for split in ("train", "val", "test")
              for g in DigitsINR(tmp_path, split=split, **options)]     # 3 shards
    params = [[p.detach() for p in to_module(g).parameters()] for g in graphs]
    first_weight, first_bias, second_weight = params[0][0], params[0][1], params[0][2]
    assert all(torch.equal(p[0], first_weight) and torch.equal(p[1], first_bias)
               for p in params)
    assert sum(torch.equal(p[2], second_weight) for p in params) == 1
    assert DigitsINR(tmp_path, **options).config()["shared_first_layers"] == 1
    assert "shared_first_layers" not in DigitsINR(tmp_path, **{**options,
                                                               "shared_first_layers": 0}
                                                  ).config()
    with pytest.raises(ValueError, match="shared_first_layers=1 needs shared_init=False"):
        DigitsINR(tmp_path, **{**options, "shared_init": True})
    with pytest.raises(ValueError, match="must be in 1..1"):
        DigitsINR(tmp_path, **{**options, "shared_first_layers": 2})


def test_bias_init_zero_starts_every_fit_from_zero_biases(tmp_path):
    options = {**TINY, "steps": 0, "extra_fits": 0, "shared_init": False, "bias_init": "zero"}
    graphs = list(DigitsINR(tmp_path, **options))
    assert all(torch.count_nonzero(p) == 0 for g in graphs
               for name, p in to_module(g).named_parameters() if name.endswith("bias"))
    assert DigitsINR(tmp_path, **options).config()["bias_init"] == "zero"
    assert "bias_init" not in DigitsINR(tmp_path, **{**options, "bias_init": "uniform"}).config()
    with pytest.raises(ValueError, match="DigitsINR: bias_init must be one of"):
        DigitsINR(tmp_path, **{**options, "bias_init": "normal"})
