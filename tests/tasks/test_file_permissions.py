"""Files the project writes get the user's normal permissions (0666 less the
umask), still written atomically (no temporary file left behind)."""
from __future__ import annotations

import os
import stat

import pytest
import torch
from tasks_helpers import TINY_TASK, tiny_graphs, tiny_model

from nft_pyg.tasks.trainer import TrainConfig, Trainer
from nft_pyg.utils.io import atomic_save, atomic_write_text, current_umask

TINY_DATA = {"num_images": 6, "steps": 3, "extra_fits": 0, "hidden": [4]}


@pytest.fixture
def umask():
    """Sets a umask for the test and puts the old one back."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda mask: os.umask(mask)
    os.umask(old)


def _modes(folder) -> dict[str, int]:
    return {str(path.relative_to(folder)): stat.S_IMODE(path.stat().st_mode)
            for path in folder.rglob("*") if path.is_file()}


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_atomic_files_follow_the_umask(tmp_path, umask, mask):
    umask(mask)
    assert current_umask() == mask
    atomic_save({"weights": torch.zeros(2)}, tmp_path / "a.pt")
    atomic_write_text("text\n", tmp_path / "b.txt")
    with open(tmp_path / "plain.txt", "w") as handle:   # what the user's files get
        handle.write("x")
    modes = _modes(tmp_path)
    assert modes == {"a.pt": 0o666 & ~mask, "b.txt": 0o666 & ~mask,
                     "plain.txt": 0o666 & ~mask}


def test_run_folder_and_dataset_files_follow_the_umask(tmp_path, umask):
    from nft_pyg.datasets.digits_inr import DigitsINR

    umask(0o027)
    DigitsINR(str(tmp_path / "data"), "train", size="small", progress=False, num_workers=0,
              **TINY_DATA)
    graphs = tiny_graphs(6)
    config = TrainConfig(epochs=1, batch_size=3, lr=1e-2, accelerator="cpu")
    Trainer(tiny_model(), TINY_TASK, graphs, graphs[:2], graphs[2:4], config,
            run_dir=tmp_path / "run", progress=False).fit()
    modes = _modes(tmp_path)
    assert {"run/config.json", "run/metrics.jsonl", "run/last.ckpt"} <= set(modes)
    assert any(name.startswith("data/") and name.endswith(".pt") for name in modes)
    # the CSV logger's own files are plain open()s: the umask too
    assert set(modes.values()) == {0o640}, modes
    assert not any(".tmp" in name for name in modes)
