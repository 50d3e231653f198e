"""``benchmarks/bench_training.py`` runs: the hand-written loop it compares
against still imports from git, and both trainers train the same model."""
from __future__ import annotations

import math
import subprocess

import pytest
from benchmark_scripts import ROOT, load_script


def test_bench_training_compares_the_two_trainers():
    bench_training = load_script("bench_training")
    if subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", bench_training.LEGACY_REF],
                      capture_output=True).returncode:
        pytest.skip("a shallow clone without the loop's commit")
    with pytest.raises(ValueError, match="epochs >= 2"):
        bench_training.run(["mlp"], repeats=1, epochs=1, num_train=32, batch_size=16,
                           legacy_ref=bench_training.LEGACY_REF)
    result = bench_training.run(["mlp"], repeats=1, epochs=2, num_train=32, batch_size=16,
                                legacy_ref=bench_training.LEGACY_REF)
    (record,) = result["records"]
    assert set(record["epoch_cpu_s"]) == {"loop", "lightning"}
    assert all(len(run["epoch_cpu_s"]) == 1 for runs in record["runs"].values() for run in runs)
    assert all(math.isfinite(v) for v in record["epoch_cpu_s"].values())
    assert all(v > 0 for v in record["train_networks_per_s_wall"].values())
    assert result["table"].count("\n") == 2 and "| mlp |" in result["table"]


def test_instruction_counts_are_read_from_callgrind_dumps(tmp_path):
    """``--instructions``: the dump at the start of epoch k holds epoch k - 1;
    the first dump of a fit (set-up) and the warm-up fit are left out."""
    bench_training = load_script("bench_training")
    dumps = {"warm-up/lightning/1": 5, "mlp/loop/0": 99, "mlp/loop/1": 100, "mlp/loop/2": 102,
             "mlp/lightning/0": 77, "mlp/lightning/1": 110, "mlp/lightning/2": 112}
    for number, (label, total) in enumerate(dumps.items(), start=1):
        (tmp_path / f"cg.42.{number}").write_text(
            f"version: 1\ncreator: callgrind-3.19.0\ncmd: python\npart: {number}\n"
            f"desc: Trigger: dump {label}\n\npositions: line\nevents: Ir\n"
            f"summary: {total}\n\ntotals: {total}\n")
    (tmp_path / "cg.42").write_text("desc: Trigger: Program termination\ntotals: 7\n")
    counts = bench_training.read_instruction_dumps(tmp_path)
    assert counts == {"mlp": {"loop": [100, 102], "lightning": [110, 112]}}
    table, _ = bench_training.instruction_table(counts, num_train=64, batch_size=32)
    assert "| mlp | 0.000 | 0.000 | +9.9% | +0.00 |" in table
