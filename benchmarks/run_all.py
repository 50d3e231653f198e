"""Run the whole benchmark suite, then write the report pieces.

    python benchmarks/run_all.py [--quick] [--skip-runs]

Runs ``bench_operators.py``, ``bench_conversion.py`` and ``bench_scaling.py``
one after the other (never in parallel: they would slow each other down),
each saving ``benchmarks/results/<name>.json``; then writes
``benchmarks/results/tables.md`` (every table, with the machine) and the
plots ``docs/_static/bench_scaling.png`` and ``docs/_static/bench_pruned.png``.
With ``--quick`` everything is suffixed ``_quick`` and stays in
``benchmarks/results/`` (the docs are built from a full run).
``--skip-runs`` only redraws from the saved JSON.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import RESULTS, STATIC, result_name  # noqa: E402

SCRIPTS = ("bench_operators.py", "bench_conversion.py", "bench_scaling.py")


def load(name: str, quick: bool = False) -> dict | None:
    path = RESULTS / f"{result_name(name, quick)}.json"
    return json.loads(path.read_text()) if path.exists() else None


def plot_scaling(scaling: dict, folder: Path = STATIC, suffix: str = "") -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [p for p in scaling["points"] if "error" not in p]
    operators = list(dict.fromkeys(p["operator"] for p in points))
    saved = []
    fig, axes = plt.subplots(2, 2, figsize=(10, 8))
    for column, sweep in enumerate(("width", "depth")):
        for operator in operators:
            chosen = sorted((p for p in points if p["operator"] == operator
                             and p["sweep"] == sweep), key=lambda p: p["num_weights"])
            if not chosen:
                continue
            weights = [p["num_weights"] for p in chosen]
            axes[0, column].loglog(weights, [p["seconds"] for p in chosen], "o-", label=operator)
            axes[1, column].loglog(weights, [max(p["peak_bytes"], 1) / 2 ** 20 for p in chosen],
                                   "o-", label=operator)
        for row, what in enumerate(("forward + backward (s)", "peak memory (MiB)")):
            ax = axes[row, column]
            ax.set_title(f"{sweep} sweep: {what}")
            ax.set_xlabel("weights of the network")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend()
    for ax in axes[0]:
        lo, hi = ax.get_xlim()
        ax.plot([1e3, 1e6], [1e-3, 1.0], "k:", alpha=0.4, label="linear")
        ax.set_xlim(lo, hi)
    fig.suptitle(f"Graph operators, one MLP, C={scaling['channels']} channels, 1 thread")
    fig.tight_layout()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"bench_scaling{suffix}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    saved.append(path)

    pruned = [p for p in points if p["sweep"] == "pruned"]
    if pruned:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for operator in operators:
            graph = sorted((p for p in pruned if p["operator"] == operator
                            and p["path"] == "graph"), key=lambda p: p["num_edges"])
            dense = [p for p in pruned if p["operator"] == operator and p["path"] == "dense"]
            if not graph:
                continue
            line = axes[0].loglog([p["num_edges"] for p in graph],
                                  [p["seconds"] for p in graph], "o-", label=f"{operator} graph")
            axes[1].loglog([p["num_edges"] for p in graph],
                           [max(p["peak_bytes"], 1) / 2 ** 20 for p in graph], "o-",
                           label=f"{operator} graph")
            if dense:
                color = line[0].get_color()
                axes[0].axhline(dense[0]["seconds"], color=color, ls="--",
                                label=f"{operator} dense twin")
                axes[1].axhline(max(dense[0]["peak_bytes"], 1) / 2 ** 20, color=color, ls="--",
                                label=f"{operator} dense twin")
        for ax, what in zip(axes, ("forward + backward (s)", "peak memory (MiB)")):
            ax.set_xlabel("remaining edges (100%, 50%, 10%, 1%)")
            ax.set_title(f"pruned MLP: {what}")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7)
        fig.tight_layout()
        path = folder / f"bench_pruned{suffix}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        saved.append(path)
    return saved


def write_tables(quick: bool = False) -> Path:
    parts = []
    for name, keys in (("operators", ("table", "pruned_table")), ("conversion", ("table",)),
                       ("scaling", ("slope_table", "table"))):
        result = load(name, quick)
        if result is None:
            continue
        parts.append(f"## {name}\n\nmachine: `{json.dumps(result['machine'])}`, "
                     f"quick: {result.get('quick')}\n")
        parts += [result[key] + "\n" for key in keys if key in result]
    path = RESULTS / f"{result_name('tables', quick)}.md"
    path.write_text("\n".join(parts))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--skip-runs", action="store_true")
    parser.add_argument("--only", help="comma-separated subset of " + ", ".join(SCRIPTS))
    args = parser.parse_args()
    if not args.skip_runs:
        for script in (args.only.split(",") if args.only else SCRIPTS):
            command = [sys.executable, str(HERE / script)] + (["--quick"] if args.quick else [])
            print("running", " ".join(command), flush=True)
            subprocess.run(command, check=True)
    print(write_tables(args.quick))
    scaling = load("scaling", args.quick)
    if scaling is not None:
        # quick runs draw next to their JSON, never over the figures of the docs
        folder, suffix = (RESULTS, "_quick") if args.quick else (STATIC, "")
        for path in plot_scaling(scaling, folder, suffix):
            print(path)


if __name__ == "__main__":
    main()
