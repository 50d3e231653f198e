"""benchmarks/results.py with tables on MNISTINR: a table names its dataset,
its runs record it, and a benchmark-only model (the nfn package's layers)
runs through the same machinery."""
from __future__ import annotations

import json

import pytest


def mnist_config(models: list[str]) -> dict:
    return {"size": "small", "seeds": [0], "data_options": {},
            "tasks": {"classification_mnist": {
                "task": "classification", "dataset": "mnist_inr", "size": "tiny",
                "data_options": {"extra_fits": 0, "steps": 3},
                "models": models,
                "model_options": {"mlp": {"hidden": [8]},
                                  "nfn_package": {"hidden": 4, "mapping_size": 4,
                                                  "head_hidden": 8}},
                "train": {"epochs": 1, "batch_size": 8, "lr": 1e-3}}}}


def test_a_table_on_mnist_inr_runs_records_and_reports(results, tmp_path):
    pytest.importorskip("nfn")
    config = mnist_config(["mlp", "nfn_package"])
    runs, out = tmp_path / "runs", tmp_path / "results.md"
    results.run(config, tmp_path / "data", runs, None, None, progress=False)
    for model in ("mlp", "nfn_package"):
        folder = runs / "classification_mnist" / model / "0"
        assert json.loads((folder / "config.json").read_text())["dataset"] == "mnist_inr"
        assert results.mismatches(folder, results.intended(config, "classification_mnist",
                                                           model)) == []
    assert "NFNPackageClassifier" in (runs / "classification_mnist" / "nfn_package" / "0" /
                                      "config.json").read_text()
    results.pack(config, runs, tmp_path / "records")
    text = results.report(config, tmp_path / "records", out)
    assert "dataset `mnist_inr`" in text
    assert "| mlp | 1 |" in text and "| nfn_package | 1 |" in text


def test_a_run_on_another_dataset_does_not_count(results, tmp_path):
    want = results.intended(mnist_config(["mlp"]), "classification_mnist", "mlp")
    assert want["dataset"] == "mnist_inr"
    have = {"task": "classification", "dataset": "digits_inr", "size": "tiny",
            "data_options": want["data_options"], "model_options": want["model_options"],
            "train": want["train"]}
    (tmp_path / "config.json").write_text(json.dumps(have))
    assert results.mismatches(tmp_path, want) == ["dataset"]
    del have["dataset"]   # records from before datasets were named: the task's default
    (tmp_path / "config.json").write_text(json.dumps(have))
    assert results.mismatches(tmp_path, want) == ["dataset"]
