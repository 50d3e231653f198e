"""benchmarks/learning_curves.py reads run records and draws them."""
from __future__ import annotations

import json
from pathlib import Path

from benchmark_scripts import load_script

learning_curves = load_script("learning_curves")


def write_run(root: Path, model: str, seed: int, values: list[float]) -> None:
    folder = root / "classification_mnist" / model / str(seed)
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"num_train": 100,
                                                    "train": {"batch_size": 32}}))
    records = [{"epoch": i + 1, "val_accuracy": v} for i, v in enumerate(values)]
    records.append({"final": True, "test_accuracy": max(values)})
    (folder / "metrics.jsonl").write_text("\n".join(map(json.dumps, records)))


def test_curves_are_read_in_optimiser_steps(tmp_path):
    write_run(tmp_path, "mlp", 0, [0.1, 0.12])
    write_run(tmp_path, "nfn_np", 1, [0.2, 0.3, 0.35])
    found = learning_curves.curves("classification_mnist", tmp_path)
    # 100 training INRs in batches of 32: 4 steps an epoch
    assert found[("mlp", 0)] == [(4, 0.1), (8, 0.12)]
    assert found[("nfn_np", 1)] == [(4, 0.2), (8, 0.3), (12, 0.35)]
    out = learning_curves.plot("classification_mnist", tmp_path / "curves.png", tmp_path)
    assert out.stat().st_size > 0
