"""benchmarks/results.py: runs are kept, reused only when they were run as
the config says; ``pack`` keeps only those, in one file per table; the report
is written from the packed records alone and reproduces docs/results.md."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from benchmark_scripts import ROOT


def packed_report(results, config: dict, runs: Path, out: Path) -> str:
    """``pack`` the runs into ``records`` beside ``runs``, then ``report``."""
    results.pack(config, runs, runs.parent / "records")
    return results.report(config, runs.parent / "records", out)


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
    assert "| mlp | 1 |" in packed_report(results, tiny_config(1), runs, out)

    # findings quote the table's cells, and a quote of a run that is not there fails
    summary = results.counted(tiny_config(1), tmp_path / "records")
    accuracy = summary[0]["test_accuracy"][0]
    digits = 3 if accuracy >= 0.1 else 4 if accuracy >= 0.01 else 5   # one seed: no spread
    assert results.fill_numbers("mlp: {classification/mlp/test_accuracy} over "
                                "{classification/mlp/seeds} seed", summary) == \
        f"mlp: {accuracy:.{digits}f} over 1 seed"
    with pytest.raises(ValueError, match="no counted run of classification / nft"):
        results.fill_numbers("{classification/nft/test_accuracy}", summary)
    config = {**tiny_config(1), "summary": ["The MLP reaches {classification/mlp/test_accuracy}."]}
    assert "The MLP reaches " in packed_report(results, config, runs, out)

    # the same config again: nothing is retrained
    capsys.readouterr()
    results.run(tiny_config(1), data, runs, None, None, progress=False)
    assert "done already" in capsys.readouterr().out

    # another budget: the old run no longer counts and is run again from scratch
    changed = tiny_config(2)
    assert results.mismatches(folder, results.intended(changed, "classification", "mlp")) \
        == ["train.epochs"]
    assert "| mlp | 0 | not run |" in packed_report(results, changed, runs, out)
    results.run(changed, data, runs, None, None, progress=False)
    assert "restarting" in capsys.readouterr().out
    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert [r.get("epoch") for r in records] == [1, 2, None]
    assert "| mlp | 1 |" in packed_report(results, changed, runs, out)


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
    config["notes"] = ["**Views.** {classification_views/mlp/test_accuracy} against "
                       "{classification/mlp/test_accuracy}."]
    results.run(config, data, runs, ["classification_views"], None, progress=False)
    folder = runs / "classification_views" / "mlp" / "0"
    assert json.loads((folder / "config.json").read_text())["data_options"]["image_views"] == 1
    assert not (runs / "classification").exists()

    quiet = {key: value for key, value in config.items() if key != "notes"}
    text = packed_report(results, quiet, runs, out)
    views_table = text.split("## classification_views")[1]
    assert "| mlp | 1 |" in views_table and "Task `classification`" in views_table
    # the plain table does not count the views run, so quoting it fails
    assert "| mlp | 0 | not run |" in text.split("## classification_views")[0]
    with pytest.raises(ValueError, match="no counted run of classification / mlp"):
        packed_report(results, config, runs, out)
    results.run(config, data, runs, ["classification"], None, progress=False)
    results.pack(config, runs, tmp_path / "records")
    counted = {s["table"]: s for s in results.counted(config, tmp_path / "records")}
    assert counted["classification"]["seeds"] == counted["classification_views"]["seeds"] == 1
    assert "**Views.** " in packed_report(results, config, runs, out)


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


def test_pack_merges_new_runs_into_the_packed_ones_and_keeps_only_what_counts(results,
                                                                             tmp_path):
    data, runs, records = tmp_path / "data", tmp_path / "runs", tmp_path / "records"
    config = {**tiny_config(1), "seeds": [0, 1]}
    results.run(config, data, runs, None, None, progress=False, seeds=[0])
    assert results.pack(config, runs, records) == {"classification": 1}
    packed = json.loads((records / "classification.json").read_text())
    assert packed["table"] == "classification"
    (run,) = packed["runs"]
    assert (run["model"], run["seed"]) == ("mlp", 0)
    assert "model_repr" not in run["settings"] and "final" not in run["final"]
    assert run["final"]["num_parameters"] > 0

    # a later run of another seed, its run folders elsewhere: both seeds packed
    results.run(config, data, tmp_path / "later", None, None, progress=False, seeds=[1])
    assert results.pack(config, tmp_path / "later", records) == {"classification": 2}
    assert [(r["model"], r["seed"]) for r in results.read_records(
        records / "classification.json")] == [("mlp", 0), ("mlp", 1)]
    text = results.report(config, records, tmp_path / "results.md")
    assert "| mlp | 2 |" in text

    # records that no longer count (another budget) and tables no longer in the
    # config are dropped
    (records / "old_table.json").write_text('{"table": "old_table", "runs": []}\n')
    assert results.pack(tiny_config(2), tmp_path / "nothing", records) == {"classification": 0}
    assert sorted(p.name for p in records.iterdir()) == []


def test_the_committed_records_regenerate_docs_results_byte_for_byte(results, tmp_path):
    out = tmp_path / "results.md"
    results.report(results.load_config(results.CONFIG), results.RECORDS, out)
    assert out.read_text() == (ROOT / "docs" / "results.md").read_text()


def test_every_committed_record_counts_for_its_table(results):
    config = results.load_config(results.CONFIG)
    assert sorted(p.stem for p in results.RECORDS.glob("*.json")) == sorted(config["tasks"])
    for table in config["tasks"]:
        for record in results.read_records(results.RECORDS / f"{table}.json"):
            want = results.intended(config, table, record["model"])
            assert results.settings_mismatches(record["settings"], want) == [], (table, record)
