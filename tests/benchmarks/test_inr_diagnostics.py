"""benchmarks/inr_diagnostics.py on a tiny DigitsINR: renderings classified,
per-layer change from the initialisation, written as JSON."""
from __future__ import annotations

import json

import torch
from benchmark_scripts import load_script


def test_diagnostics_of_a_tiny_table(tmp_path):
    diagnostics = load_script("inr_diagnostics")
    config = {"size": "small", "seeds": [0],
              "data_options": {"digits_inr": {"num_images": 24, "steps": 20, "extra_fits": 0,
                                              "shared_init": False}},
              "tasks": {"classification": {"models": ["mlp"]},
                        "generalization": {"models": ["mlp"]}}}
    config_path, out = tmp_path / "config.json", tmp_path / "out.json"
    config_path.write_text(json.dumps(config))
    assert diagnostics.main(["--config", str(config_path), "--data-root", str(tmp_path / "data"),
                             "--refit", "4", "--out", str(out)]) == 0
    [row] = json.loads(out.read_text())     # the generalization table is not a classification one
    assert row["table"] == "classification" and row["num_train"] + row["num_test"] <= 24
    for key in ("test_accuracy_renderings", "test_accuracy_images"):
        assert 0.0 <= row[key] <= 1.0
    change = row["relative_change_from_init"]
    assert change["digits"] == 4 and len(change["weights"]) == len(change["biases"]) == 3
    assert all(value > 0 for value in change["weights"] + change["biases"])


def test_renderings_reproduce_the_fitted_images(tmp_path):
    diagnostics = load_script("inr_diagnostics")
    from nft_pyg.datasets import DigitsINR

    dataset = DigitsINR(str(tmp_path / "inr"), "train", size="small", num_images=8, steps=60,
                        extra_fits=0, progress=False, num_workers=0)
    rendered, images, labels = diagnostics.renderings(dataset, batch_size=3)
    assert rendered.shape == images.shape == (len(dataset), 28 * 28)
    assert labels.tolist() == [int(dataset[i].y) for i in range(len(dataset))]
    assert float((rendered - images).pow(2).mean()) < 0.01 * float(images.pow(2).mean())
    assert not torch.equal(rendered[0], rendered[1])


def test_zero_initial_biases_are_reported_by_their_fitted_norms(tmp_path):
    diagnostics = load_script("inr_diagnostics")
    from nft_pyg.datasets import DigitsINR

    dataset = DigitsINR(str(tmp_path / "inr"), "train", size="small", num_images=6, steps=10,
                        extra_fits=0, shared_init=False, bias_init="zero", progress=False,
                        num_workers=0)
    change = diagnostics.layer_displacement(dataset, 3)
    assert "biases" not in change and len(change["bias_norms"]) == 3
    assert all(value > 0 for value in change["weights"] + change["bias_norms"])
