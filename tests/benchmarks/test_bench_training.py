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
    result = bench_training.run(["mlp"], repeats=1, epochs=2, num_train=32, batch_size=16,
                                legacy_ref=bench_training.LEGACY_REF)
    (record,) = result["records"]
    assert set(record["epoch_cpu_s"]) == {"loop", "lightning"}
    assert all(math.isfinite(v) for v in record["epoch_cpu_s"].values())
    assert all(v > 0 for v in record["train_networks_per_s_wall"].values())
    assert result["table"].count("\n") == 2 and "| mlp |" in result["table"]
