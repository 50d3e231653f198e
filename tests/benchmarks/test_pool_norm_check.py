"""benchmarks/pool_norm_check.py: a finished run's accuracy in eval mode and
with batch statistics, per split."""
from __future__ import annotations

import json

import pytest
from benchmark_scripts import load_script

from nft_pyg.tasks.runner import run_task

TINY = {"num_images": 12, "steps": 5, "extra_fits": 0, "hidden": [4]}


def test_check_of_a_tiny_pool_norm_run(tmp_path):
    check = load_script("pool_norm_check")
    folder = tmp_path / "run"
    run_task("classification", "nfn_np", size="small", data_root=tmp_path / "data",
             run_dir=folder, progress=False, data_options=TINY, epochs=2, batch_size=4,
             model_options={"hidden": 4, "num_nf_layers": 1})
    rows = check.check(folder, tmp_path / "data", train_every=2)
    assert [row["split"] for row in rows] == ["train (every 2)", "val", "test"]
    for row in rows:
        assert 0.0 <= row["eval_mode"] <= 1.0 and 0.0 <= row["batch_statistics"] <= 1.0
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "task": "editing"}))
    with pytest.raises(ValueError, match="config.json: task 'editing'"):
        check.check(folder, tmp_path / "data", train_every=2)


def test_batch_statistics_leave_the_running_ones_as_they_were(tmp_path):
    import torch

    from nft_pyg.datasets import DigitsINR
    from nft_pyg.graph.collate import collate_graphs
    from nft_pyg.tasks.models import build_model

    check = load_script("pool_norm_check")
    data = DigitsINR(str(tmp_path / "inr"), "train", size="small", progress=False,
                     num_workers=0, **TINY)
    model = build_model("classification", "nfn_np", data, 10, {"hidden": 4, "num_nf_layers": 1})
    model.train()
    model(collate_graphs([data[i] for i in range(4)]))   # running statistics away from init
    before = {k: v.clone() for k, v in model.state_dict().items()}
    eval_mode = check.accuracy(model, data, batch_statistics=False)
    check.accuracy(model, data, batch_statistics=True)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert check.accuracy(model, data, batch_statistics=False) == eval_mode
