"""``nft-pyg demo`` on a tiny MNISTINR: every step runs and writes its figures."""
from __future__ import annotations

from nft_pyg.tasks import demo


def test_demo_runs_on_real_digits_and_saves_its_figures(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(demo, "DEMO_DATA", {"per_class": 3, "extra_fits": 1, "steps": 5,
                                            "images_per_shard": 10, "num_workers": 0})
    monkeypatch.setattr(demo, "DEMO_MODELS", {"mlp": {"hidden": [8]},
                                              "nfn_np": {"hidden": 4, "num_nf_layers": 1},
                                              "nft": {"hidden": 4, "num_blocks": 1,
                                                      "heads": 1}})
    monkeypatch.setattr(demo, "DEMO_TRAIN", {"batch_size": 8, "lr": 1e-3})
    monkeypatch.setattr(demo, "DEMO_EPOCHS", {"mlp": 1, "nfn_np": 1, "nft": 1})
    rows = demo.run_demo(tmp_path / "out", tmp_path / "data", progress=False)
    assert [row["model"] for row in rows] == ["mlp", "nfn_np", "nft"]
    assert all(0.0 <= row["test accuracy"] <= 1.0 for row in rows)
    for name in ("renderings.png", "siren_graph.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    for model in ("mlp", "nfn_np", "nft"):
        assert (tmp_path / "out" / "classification" / model / "metrics.jsonl").exists()
    # the data are MNISTINR's SIRENs of real digits, one per fit, independent inits
    assert (tmp_path / "data" / "mnist_inr").is_dir()
    out = capsys.readouterr().out
    assert "real MNIST digits" in out and "test accuracy" in out


def test_demo_defaults_are_the_papers_setting():
    """Independent initialisations (MNISTINR has no shared init), the recipe
    of the NFN / NFT papers, and the NF / NFT models beside the MLP."""
    assert "recipe" not in demo.DEMO_DATA or demo.DEMO_DATA["recipe"] == "nfn"
    assert set(demo.DEMO_MODELS) == {"mlp", "nfn_np", "nft"}
    assert set(demo.DEMO_EPOCHS) == set(demo.DEMO_MODELS)
    assert 3 * demo.DEMO_SECONDS <= 480   # the cap on training; the build and figures add more
