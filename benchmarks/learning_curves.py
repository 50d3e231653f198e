"""Learning curves of a results table: the validation metric after every
epoch of every run, against optimiser steps, one line per (model, seed).

    python benchmarks/learning_curves.py classification_mnist [--out PATH]

Reads ``benchmarks/runs/<table>/<model>/<seed>/{config.json,metrics.jsonl}``
(the records ``results.py run`` writes) and saves
``docs/_static/<table>_curves.png``. The runs evaluate the validation split
after every epoch (the test split only at the best epoch), so the curves are
of validation accuracy / MSE; the table's cells are test metrics.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNS = Path(__file__).with_name("runs")


def curves(table: str, runs_root: Path = RUNS) -> dict[tuple[str, int], list[tuple[int, float]]]:
    """``{(model, seed): [(steps, validation metric), ...]}`` of a table's runs."""
    found = {}
    for metrics in sorted((runs_root / table).glob("*/*/metrics.jsonl")):
        folder = metrics.parent
        config = json.loads((folder / "config.json").read_text())
        steps_per_epoch = math.ceil(config["num_train"] / config["train"]["batch_size"])
        key = next(k for k in ("val_accuracy", "val_mse", "val_kendall_tau")
                   if k in metrics.read_text())
        points = [(record["epoch"] * steps_per_epoch, record[key])
                  for record in map(json.loads, metrics.read_text().splitlines())
                  if "epoch" in record and key in record]
        found[(folder.parent.name, int(folder.name))] = points
    return found


def plot(table: str, out: Path, runs_root: Path = RUNS) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    data = curves(table, runs_root)
    if not data:
        raise SystemExit(f"learning_curves: no runs of table {table!r} under {runs_root}")
    figure = Figure(figsize=(7, 4.2))
    FigureCanvasAgg(figure)
    axis = figure.subplots()
    models = sorted({model for model, _ in data})
    colours = {m: f"C{i}" for i, m in enumerate(models)}
    for (model, seed), points in sorted(data.items()):
        steps, values = zip(*points)
        axis.plot(steps, values, marker="o", markersize=3, color=colours[model],
                  linestyle=("-", "--", ":")[seed % 3], label=f"{model} (seed {seed})")
    is_mse = "editing" in table
    if not is_mse:   # ten balanced classes
        axis.axhline(0.1, color="grey", linewidth=0.8, linestyle="--", label="chance")
    axis.set_xlabel("optimiser steps")
    axis.set_ylabel("validation MSE" if is_mse else "validation accuracy")
    axis.set_title(f"{table}: validation metric after every epoch")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, ncol=2)
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("table")
    parser.add_argument("--runs-root", type=Path, default=RUNS)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    out = args.out or ROOT / "docs" / "_static" / f"{args.table}_curves.png"
    print(plot(args.table, out, args.runs_root))
    return 0


if __name__ == "__main__":
    sys.exit(main())
