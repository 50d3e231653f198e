"""benchmarks/results.py: runs are kept, reused only when they were run as
the config says, and the report counts only those."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "results.py"


@pytest.fixture(scope="module")
def results():
    spec = importlib.util.spec_from_file_location("results_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_config(epochs: int) -> dict:
    return {"size": "small", "seeds": [0],
            "data_options": {"digits_inr": {"num_images": 6, "steps": 3, "extra_fits": 0,
                                            "hidden": [4]}},
            "tasks": {"classification": {"models": ["mlp"],
                                         "model_options": {"mlp": {"hidden": [8]}},
                                         "train": {"epochs": epochs, "batch_size": 4,
                                                   "lr": 1e-3}}}}


def test_runs_are_reused_only_when_run_as_configured(results, tmp_path, capsys):
    data, runs, out = tmp_path / "data", tmp_path / "runs", tmp_path / "results.md"
    folder = runs / "classification" / "mlp" / "0"
    results.run(tiny_config(1), data, runs, None, None, progress=False)
    config = json.loads((folder / "config.json").read_text())
    assert config["model_options"] == {"hidden": [8]} and config["train"]["epochs"] == 1
    want = results.intended(tiny_config(1), "classification", "mlp")
    assert results.mismatches(folder, want) == []
    assert "| mlp | 1 |" in results.report(tiny_config(1), runs, out)

    # findings quote the table's cells, and a quote of a run that is not there fails
    summary = results.summarize(results.collect_runs(runs))
    accuracy = summary[0]["test_accuracy"][0]
    digits = 3 if accuracy >= 0.1 else 4 if accuracy >= 0.01 else 5   # one seed: no spread
    assert results.fill_numbers("mlp: {classification/mlp/test_accuracy} over "
                                "{classification/mlp/seeds} seed", summary) == \
        f"mlp: {accuracy:.{digits}f} over 1 seed"
    with pytest.raises(ValueError, match="no counted run of classification / nft"):
        results.fill_numbers("{classification/nft/test_accuracy}", summary)
    config = {**tiny_config(1), "findings": ["The MLP reaches {classification/mlp/test_accuracy}."]}
    assert "The MLP reaches " in results.report(config, runs, out)

    # the same config again: nothing is retrained
    capsys.readouterr()
    results.run(tiny_config(1), data, runs, None, None, progress=False)
    assert "done already" in capsys.readouterr().out

    # another budget: the old run no longer counts and is run again from scratch
    changed = tiny_config(2)
    assert results.mismatches(folder, results.intended(changed, "classification", "mlp")) \
        == ["train.epochs"]
    assert "| mlp | 0 | not run |" in results.report(changed, runs, out)
    results.run(changed, data, runs, None, None, progress=False)
    assert "restarting" in capsys.readouterr().out
    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert [r.get("epoch") for r in records] == [1, 2, None]
    assert "| mlp | 1 |" in results.report(changed, runs, out)


def test_mismatches_names_each_setting(results, tmp_path):
    want = results.intended(tiny_config(1), "classification", "mlp")
    assert results.mismatches(tmp_path, want) == ["no config.json"]
    have = {"task": "classification", "size": "full", "data_options": want["data_options"],
            "augment": ["sign_flip"],
            "model_options": {}, "train": {"epochs": 1, "batch_size": 4, "lr": 1e-2}}
    (tmp_path / "config.json").write_text(json.dumps(have))
    assert results.mismatches(tmp_path, want) == ["size", "augment", "model_options",
                                                  "train.lr"]
    (tmp_path / "config.json").write_text(json.dumps({**have, "task": "editing"}))
    assert results.mismatches(tmp_path, want)[0] == "task"


def test_a_task_can_have_a_second_table_with_its_own_data(results, tmp_path):
    data, runs, out = tmp_path / "data", tmp_path / "runs", tmp_path / "results.md"
    config = tiny_config(1)
    views = {**config["tasks"]["classification"], "task": "classification",
             "data_options": {**config["data_options"]["digits_inr"], "image_views": 1}}
    config["tasks"]["classification_views"] = views
    config["findings"] = ["**Views.** {classification_views/mlp/test_accuracy} against "
                          "{classification/mlp/test_accuracy}."]
    results.run(config, data, runs, ["classification_views"], None, progress=False)
    folder = runs / "classification_views" / "mlp" / "0"
    assert json.loads((folder / "config.json").read_text())["data_options"]["image_views"] == 1
    assert not (runs / "classification").exists()

    quiet = {key: value for key, value in config.items() if key != "findings"}
    text = results.report(quiet, runs, out)
    views_table = text.split("## classification_views")[1]
    assert "| mlp | 1 |" in views_table and "Task `classification`" in views_table
    # the plain table does not count the views run, so quoting it fails
    assert "| mlp | 0 | not run |" in text.split("## classification_views")[0]
    with pytest.raises(ValueError, match="no counted run of classification / mlp"):
        results.report(config, runs, out)
    results.run(config, data, runs, ["classification"], None, progress=False)
    counted = {s["table"]: s for s in results.counted(config, runs)}
    assert counted["classification"]["seeds"] == counted["classification_views"]["seeds"] == 1
    assert "**Views.** " in results.report(config, runs, out)


def test_run_takes_only_the_seeds_asked_for(results, tmp_path):
    data, runs = tmp_path / "data", tmp_path / "runs"
    config = {**tiny_config(1), "seeds": [0, 1, 2]}
    results.run(config, data, runs, None, None, progress=False, seeds=[1, 5])
    assert sorted(p.name for p in (runs / "classification" / "mlp").iterdir()) == ["1"]


def test_bad_tables_and_repeated_findings_are_named(results, tmp_path):
    config = tiny_config(1)
    config["tasks"]["extra"] = {"models": ["mlp"]}
    with pytest.raises(ValueError, match="table 'extra' runs task 'extra'"):
        results.intended(config, "extra", "mlp")
    with pytest.raises(ValueError, match="findings 0 and 2 both start with \\*\\*A\\.\\*\\*"):
        results.check_findings(["**A.** one", "**B.** two", "**A.** again"])
    results.check_findings(["**A.** one", "no lead", "no lead"])
