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
    assert "### classification" in table
    assert '| mlp | small | extra_fits=0, hidden=[4], num_images=6, steps=3 | 1 |' in table


def test_summaries_never_pool_runs_on_differently_built_datasets():
    from nft_pyg.tasks.results import summarize

    def row(seed, options, accuracy):
        return {"task": "classification", "model": "mlp", "size": "full", "seed": seed,
                "data_options": options, "test_accuracy": accuracy, "train_seconds": 1.0,
                "num_parameters": 10}

    rows = [row(0, {"image_views": 15}, 0.5), row(1, {"image_views": 15}, 0.7),
            row(0, {}, 0.1), row(1, {}, 0.3)]
    summary = {json.dumps(s["data_options"]): s for s in summarize(rows)}
    assert set(summary) == {"{}", '{"image_views": 15}'}
    assert summary['{"image_views": 15}']["test_accuracy"][0] == 0.6
    assert summary["{}"]["test_accuracy"][0] == 0.2 and summary["{}"]["seeds"] == 2


def test_train_rejects_a_model_of_another_task(capsys):
    assert main(["train", "generalization", "--model", "inr2array"]) == 2
    assert "not a model of generalization" in capsys.readouterr().err
