"""The nft-pyg command line on a tiny DigitsINR: build, train, resume, results."""
from __future__ import annotations

import json

from nft_pyg.cli import main

TINY = ["--data-option", "num_images=6", "--data-option", "steps=3",
        "--data-option", "extra_fits=0", "--data-option", "hidden=[4]"]


def test_build_train_resume_results(tmp_path, capsys):
    data, runs = str(tmp_path / "data"), str(tmp_path / "runs")
    assert main(["data", "build", "digits_inr", "--root", data, "--workers", "0", *TINY]) == 0
    assert "train: 4 graphs" in capsys.readouterr().out
    common = ["train", "classification", "--model", "mlp", "--data-root", data,
              "--runs-root", runs, "--no-progress", "--option", "hidden=[8]", *TINY]
    assert main([*common, "--epochs", "1"]) == 0
    folder = tmp_path / "runs" / "classification" / "mlp" / "0"
    assert json.loads((folder / "config.json").read_text())["model_options"] == {"hidden": [8]}
    assert main([*common, "--epochs", "2", "--resume"]) == 0
    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert [r.get("epoch") for r in records] == [1, 2, None] and records[-1]["final"]
    capsys.readouterr()
    assert main(["results", "--runs-root", runs]) == 0
    table = capsys.readouterr().out
    assert "### classification" in table and "| mlp | small | 1 |" in table


def test_train_rejects_a_model_of_another_task(capsys):
    assert main(["train", "generalization", "--model", "inr2array"]) == 2
    assert "not a model of generalization" in capsys.readouterr().err
