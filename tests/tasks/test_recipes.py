"""The papers' recipes (``--recipe``): each builds its model at the recipe's
width and takes an optimisation step; the command line applies them."""
from __future__ import annotations

import json
from dataclasses import fields

import pytest
import torch

from nft_pyg.cli import main
from nft_pyg.datasets import MNISTINR
from nft_pyg.graph.collate import collate_graphs
from nft_pyg.tasks.models import build_model
from nft_pyg.tasks.recipes import RECIPES, epochs_for, get_recipe
from nft_pyg.tasks.specs import SPECS
from nft_pyg.tasks.trainer import TrainConfig

TINY = dict(size="tiny", extra_fits=0, steps=5, num_workers=0, progress=False)


@pytest.fixture(scope="module")
def tiny_train(tmp_path_factory):
    return MNISTINR(tmp_path_factory.mktemp("mnist"), "train", **TINY)


def test_the_recipes_of_the_papers():
    assert {"nfn-paper", "nfn-np-paper", "nft-paper", "inr2array-paper",
            "nfn-dilate-paper"} <= set(RECIPES)
    nfn = get_recipe("nfn-paper")
    assert (nfn.model, nfn.model_options["hidden"], nfn.model_options["num_nf_layers"]) == \
        ("nfn_hnp", 512, 3)
    assert nfn.data_options == {"extra_fits": 10, "recipe": "nfn"} and nfn.size == "full"
    # 200k steps of batch 32 over 44,000 training INRs
    assert nfn.train["epochs"] * 44_000 // 32 >= 200_000 > (nfn.train["epochs"] - 1) * 44_000 // 32
    assert epochs_for(200_000, 64) == 291
    for recipe in RECIPES.values():
        assert set(recipe.train) <= {f.name for f in fields(TrainConfig)}
        assert recipe.reference and recipe.departures
    with pytest.raises(ValueError, match="unknown recipe 'nfn'"):
        get_recipe("nfn")


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_each_recipe_builds_and_steps(name, tiny_train):
    """The recipe's model at its full width takes one AdamW step (the trainer's
    optimiser, the recipe's learning rate and weight decay) on two INRs."""
    recipe = get_recipe(name)
    torch.manual_seed(0)
    out = 10 if recipe.task == "classification" else 1
    model = build_model(recipe.task, recipe.model, tiny_train, out, recipe.model_options)
    if recipe.model.startswith("nfn_"):
        assert f"{recipe.model_options['hidden']}" in repr(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.train["lr"],
                                  weight_decay=recipe.train["weight_decay"])
    before = [p.detach().clone() for p in model.parameters()]
    batch = collate_graphs([tiny_train[0], tiny_train[1]])
    model.train()
    loss = SPECS[recipe.task].loss(model, batch)
    assert torch.isfinite(loss)
    loss.backward()
    optimizer.step()
    moved = sum(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert moved > len(before) // 2


def test_cli_trains_a_recipe_with_overrides(tmp_path, capsys):
    data, runs = tmp_path / "data", str(tmp_path / "runs")
    data.mkdir()   # the CLI refuses a data root that does not exist
    args = ["train", "classification", "--recipe", "nfn-np-paper", "--data-root", str(data),
            "--runs-root", runs, "--no-progress", "--epochs", "1", "--option", "hidden=8",
            "--data-option", "per_class=5", "--data-option", "extra_fits=0",
            "--data-option", "steps=5"]
    assert main(args) == 0
    config = json.loads((tmp_path / "runs/classification/nfn_np/0/config.json").read_text())
    assert config["dataset"] == "mnist_inr" and config["size"] == "full"
    assert config["model_options"]["hidden"] == 8                      # the override
    assert config["model_options"]["head_hidden"] == [1000, 1000]      # the recipe's
    assert config["train"]["epochs"] == 1 and config["train"]["lr"] == 1e-3
    # the reference's warm-up, and no clipping (None reaches the trainer as None)
    assert config["train"]["warmup_steps"] == 10_000 and config["train"]["grad_clip"] is None
    assert config["data_options"] == {"extra_fits": 0, "recipe": "nfn", "per_class": 5,
                                      "steps": 5}
    assert main(args + ["--overwrite", "--grad-clip", "0.5", "--warmup-steps", "0"]) == 0
    config = json.loads((tmp_path / "runs/classification/nfn_np/0/config.json").read_text())
    assert config["train"]["grad_clip"] == 0.5 and config["train"]["warmup_steps"] == 0
    capsys.readouterr()
    assert main(["train", "classification", "--recipe", "nfn-dilate-paper"]) == 2
    assert "recipe of task 'editing'" in capsys.readouterr().err
    assert main(["train", "classification", "--recipe", "nfn-paper", "--model", "mlp"]) == 2
    assert "contradicts" in capsys.readouterr().err
    assert main(["train", "classification"]) == 2
    assert "give --model" in capsys.readouterr().err
