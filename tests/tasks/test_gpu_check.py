"""benchmarks/gpu_check.py: its CPU fallback runs and writes its summary."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_check_cpu_fallback_writes_its_summary(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu",
         "--quick", "--out", str(tmp_path), "--test-timeout", "300",
         "--tests-k", "cpu and test_batches_are_moved_to_the_device"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads((tmp_path / "gpu_check_quick_cpu.json").read_text())
    assert result["device"] == "cpu"
    tests = result["tests"]
    assert tests["exit_code"] == 0 and tests["counts"]["passed"] == 1, tests
    operators = {r["operator"]: r for r in result["operators"]["records"]}
    assert set(operators) == {"NP", "HNP", "NFT"}
    for record in operators.values():
        assert "error" not in record, record
        assert record["timing_s"]["graph"]["median"] > 0 < record["timing_s"]["nfn"]["median"]
    training = result["training"]["records"]
    assert [r["model"] for r in training] == ["mlp", "statnn"]
    assert all(r["32-true"]["networks_per_s"] > 0 for r in training)
    summary = (tmp_path / "gpu_check_quick_cpu.md").read_text()
    assert "graph / nfn" in summary and "networks/s" in summary and "1 passed" in summary
