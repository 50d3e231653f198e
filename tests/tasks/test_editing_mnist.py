"""INR editing (dilation) on real MNIST digits: the editing task on MNISTINR."""
from __future__ import annotations

import json

import pytest
import torch

from nft_pyg.datasets import MNISTINR
from nft_pyg.graph.collate import collate_graphs
from nft_pyg.tasks.runner import run_task
from nft_pyg.tasks.specs import dilate, render_graph

TINY = dict(size="tiny", extra_fits=0, steps=20, num_workers=0, progress=False)


def tiny_splits(root, **options):
    return {split: MNISTINR(root, split, **{**TINY, **options})
            for split in ("train", "val", "test")}


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    return tiny_splits(tmp_path_factory.mktemp("mnist"))


def test_the_dilated_digit_is_the_target(splits):
    batch = collate_graphs([splits["test"][i] for i in range(4)])
    target = dilate(batch.image)
    # a 3x3 max filter thickens the strokes: more ink, never less
    assert bool((target >= batch.image).all())
    assert float(target.mean()) > 1.3 * float(batch.image.mean())
    with torch.no_grad():
        unedited = (render_graph(batch) - target).pow(2).mean()
    assert float(unedited) > 0.02    # the source INR is far from the dilated digit


@pytest.mark.parametrize("model", ["mlp", "nfn_np"])
def test_editing_runs_on_mnist_and_draws_its_edits(model, splits, tmp_path):
    final = run_task("editing", model, splits=splits, dataset="mnist_inr", size="tiny",
                     run_dir=tmp_path / model, progress=False, epochs=1,
                     model_options={"hidden": [16]} if model == "mlp" else {"hidden": 8})
    assert final["test_mse"] > 0 and final["test_mse_unedited"] > 0
    assert (tmp_path / model / "edits.png").stat().st_size > 0
    config = json.loads((tmp_path / model / "config.json").read_text())
    assert config["dataset"] == "mnist_inr"


def test_editing_refuses_dwsnets_inrs(tmp_path):
    shifted = tiny_splits(tmp_path, recipe="dwsnets", steps=2)
    with pytest.raises(ValueError, match="recipe='nfn'"):
        run_task("editing", "mlp", splits=shifted, dataset="mnist_inr", run_dir=tmp_path / "r",
                 progress=False, epochs=1)


def test_a_task_refuses_a_dataset_of_another_kind(splits, tmp_path):
    with pytest.raises(ValueError, match="generalization"):
        run_task("generalization", "mlp", splits=splits, dataset="mnist_inr",
                 run_dir=tmp_path / "r", progress=False, epochs=1)
