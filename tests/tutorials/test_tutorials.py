"""Run every tutorial script on its small settings, as a user would.

Each tutorial runs in a subprocess (``python tutorials/<name>.py``) with
``MPLBACKEND=Agg`` and a temporary working directory, so its outputs land
under that directory; the test checks that it exits 0 and wrote the files
the tutorial promises.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TUTORIALS = ROOT / "tutorials"

# tutorial script -> files it must write (relative to its --out folder)
EXPECTED_OUTPUTS = {
    "01_convert.py": ["mlp.png", "cnn.png"]
    + (["escnn_channels.png"] if importlib.util.find_spec("escnn") else []),
    "02_nf_layers.py": ["summary.json"],
    "03_nft_inr2array.py": ["results.json", "reconstruction.png", "latents_train.pt"],
    "04_mixing_gnn.py": ["results.json"],
    "05_edit_inrs.py": ["results.json", "edit.png"],
    "06_wild_networks.py": ["summary.json"],
}
# seconds; a small run takes well under a minute on an idle CI core
TIMEOUT = 300


def run_tutorial(script: str, out: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["MPLBACKEND"] = "Agg"
    env.pop("NFT_PYG_FULL", None)  # small settings whatever the caller's environment
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    if os.environ.get("PYTEST_XDIST_WORKER"):
        env["OMP_NUM_THREADS"] = "1"  # one core per xdist worker, as in conftest
    return subprocess.run([sys.executable, str(TUTORIALS / script), "--out", str(out)],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT,
                          check=False)


def test_every_tutorial_is_tested():
    scripts = sorted(path.name for path in TUTORIALS.glob("[0-9]*.py"))
    assert scripts, f"no tutorial scripts found in {TUTORIALS}"
    assert sorted(EXPECTED_OUTPUTS) == scripts


def test_every_tutorial_has_a_docs_page():
    pages = ROOT / "docs" / "tutorials"
    for script in EXPECTED_OUTPUTS:
        page = pages / f"{Path(script).stem}.md"
        assert page.is_file(), f"missing docs page {page}"
        assert f"% tutorial: {script}" in page.read_text(encoding="utf-8")


@pytest.mark.parametrize("script", sorted(EXPECTED_OUTPUTS))
def test_tutorial_runs(script, tmp_path):
    out = tmp_path / "outputs"
    result = run_tutorial(script, out, tmp_path)
    assert result.returncode == 0, (
        f"{script} exited with {result.returncode}\n--- stdout ---\n{result.stdout[-4000:]}"
        f"\n--- stderr ---\n{result.stderr[-4000:]}")
    for name in EXPECTED_OUTPUTS[script]:
        path = out / name
        assert path.is_file() and path.stat().st_size > 0, f"{script} did not write {path}"
