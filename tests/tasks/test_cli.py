"""The nft-pyg command line on a tiny DigitsINR: build, train, resume, results."""
from __future__ import annotations

import json

import pytest
import torch

from nft_pyg.cli import main

TINY = ["--data-option", "num_images=6", "--data-option", "steps=3",
        "--data-option", "extra_fits=0", "--data-option", "hidden=[4]"]


def test_build_train_resume_results(tmp_path, capsys, device):
    """End to end on each device: a dataset, a run, its resumption, the table."""
    data, runs = str(tmp_path / "data"), str(tmp_path / "runs")
    assert main(["data", "build", "digits_inr", "--root", data, "--workers", "0", *TINY]) == 0
    assert "train: 4 graphs" in capsys.readouterr().out
    common = ["train", "classification", "--model", "mlp", "--data-root", data,
              "--runs-root", runs, "--no-progress", "--option", "hidden=[8]", *TINY,
              "--accelerator", device.type]
    assert main([*common, "--epochs", "1"]) == 0
    folder = tmp_path / "runs" / "classification" / "mlp" / "0"
    assert json.loads((folder / "config.json").read_text())["model_options"] == {"hidden": [8]}
    assert main([*common, "--epochs", "2", "--resume"]) == 0
    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert [r.get("epoch") for r in records] == [1, 2, None] and records[-1]["final"]
    capsys.readouterr()
    # a finished run is not overwritten silently; --overwrite starts it again
    before = (folder / "metrics.jsonl").read_text()
    assert main([*common, "--epochs", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "already holds a finished run" in err and "--resume" in err and "--overwrite" in err
    assert len(err.splitlines()) == 1 and (folder / "metrics.jsonl").read_text() == before
    assert main([*common, "--epochs", "2", "--overwrite"]) == 0
    capsys.readouterr()
    assert main(["results", "--runs-root", runs]) == 0
    table = capsys.readouterr().out
    assert "### classification" in table
    assert '| mlp | small | extra_fits=0, hidden=[4], num_images=6, steps=3 | 1 |' in table
    if not torch.cuda.is_available():   # a device that is not there: one line, exit 2
        assert main([*common[:-2], "--epochs", "1", "--overwrite", "--accelerator", "gpu"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "nft-pyg train: error:" in err


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


@pytest.mark.parametrize("option, message", [
    ("bogus=3", "MNISTINR has no option bogus; its options: "),
    ("extra_fits=-1", "MNISTINR: extra_fits and steps must be >= 0"),
])
def test_bad_dataset_options_are_one_line_and_exit_2(tmp_path, capsys, option, message):
    code = main(["data", "build", "mnist_inr", "--root", str(tmp_path), "--data-option", option])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("nft-pyg data: error: ") and message in err
    assert not any(tmp_path.iterdir())                  # nothing was built


def test_train_rejects_a_model_of_another_task(capsys):
    assert main(["train", "generalization", "--model", "inr2array"]) == 2
    assert "not a model of generalization" in capsys.readouterr().err


@pytest.mark.parametrize("arguments, message", [
    (["--epochs", "0"], "argument --epochs: expected a positive integer, got '0'"),
    (["--epochs", "-2"], "argument --epochs: expected a positive integer, got '-2'"),
    (["--batch-size", "0"], "argument --batch-size: expected a positive integer"),
    (["--lr", "0"], "argument --lr: expected a positive number, got '0'"),
    (["--lr=-1e-3"], "argument --lr: expected a positive number"),
    (["--lr", "nan"], "argument --lr: expected a positive number"),
    (["--option", "hidden=abc"], 'model option hidden="abc" of \'mlp\': expected a number'),
    (["--option", "hidden"], "expected KEY=VALUE, got 'hidden'"),
    (["--augment", "sign_flip,flip"], "unknown augmentation(s) 'flip'; choose from permute"),
    (["--data-root", "{tmp}/missing"], "data root '{tmp}/missing' does not exist"),
    (["--resume", "--overwrite"], "not allowed with argument"),
    (["--data-option", "bogus=1"], "DigitsINR has no option bogus; its options: "),
], ids=["epochs_0", "epochs_negative", "batch_size_0", "lr_0", "lr_negative", "lr_nan",
        "option_not_a_number", "option_without_value", "unknown_augmentation",
        "missing_data_root", "resume_and_overwrite", "unknown_data_option"])
def test_bad_train_input_is_one_line_and_exit_2(tmp_path, capsys, arguments, message):
    arguments = [a.replace("{tmp}", str(tmp_path)) for a in arguments]
    code = main(["train", "classification", "--model", "mlp", "--no-progress",
                 "--data-root", str(tmp_path), "--runs-root", str(tmp_path / "runs"),
                 *arguments])
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert message.replace("{tmp}", str(tmp_path)) in err
    assert not (tmp_path / "runs").exists()          # nothing was started
