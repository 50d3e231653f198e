"""``nft-pyg demo`` on a tiny MNISTINR: every step runs and writes its figures."""
from __future__ import annotations

import torch
from tasks_helpers import tiny_graphs

from nft_pyg.tasks import demo


def test_demo_runs_on_real_digits_and_saves_its_figures(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(demo, "DEMO_DATA", {"per_class": 3, "extra_fits": 1, "steps": 5,
                                            "images_per_shard": 10, "num_workers": 0,
                                            "recipe": "dwsnets"})
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
    """Independent initialisations (MNISTINR has no shared init), zero initial
    biases (the DWSNets recipe, as the INRs the papers classify), and the NF /
    NFT models beside the MLP."""
    assert demo.DEMO_DATA["recipe"] == "dwsnets"
    assert set(demo.DEMO_MODELS) == {"mlp", "nfn_np", "nft"}
    assert set(demo.DEMO_EPOCHS) == set(demo.DEMO_MODELS)
    assert 3 * demo.DEMO_SECONDS <= 480   # the cap on training; the build and figures add more


def test_renderings_add_the_recipes_output_shift(tmp_path, monkeypatch):
    """A DWSNets-recipe SIREN fits image - 0.5: the figure shows it plus 0.5."""
    from matplotlib.axes import Axes

    from nft_pyg.tasks import specs

    class Split(list):
        output_shift = 0.5

    graphs = tiny_graphs(2)
    for graph in graphs:
        graph.y, graph.psnr, graph.image = torch.tensor([1]), torch.tensor(30.0), \
            torch.zeros(1, 1, 4, 4)
    monkeypatch.setattr(specs, "render_graph", lambda batch: torch.full((2, 1, 4, 4), 0.25))
    drawn = []
    monkeypatch.setattr(Axes, "imshow", lambda self, image, **kwargs: drawn.append(image))
    demo.save_renderings({"test": Split(graphs)}, tmp_path / "r.png", count=2)
    rendered = drawn[1::2]      # per column: the digit, then its rendering
    assert len(rendered) == 2 and all((image == 0.75).all() for image in rendered)
