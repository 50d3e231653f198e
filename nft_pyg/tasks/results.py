"""Collect finished runs (``runs/<task>/<model>/<seed>/``) into tables."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

from .trainer import CONFIG, METRICS

#: the headline metric of each task and whether larger is better
HEADLINE = {"classification": [("test_accuracy", "accuracy", True)],
            "generalization": [("test_kendall_tau", "Kendall tau", True),
                               ("test_r2", "R^2", True)],
            "editing": [("test_mse", "test MSE", False),
                        ("test_mse_unedited", "MSE unedited", False)]}


def collect_runs(runs_root: str | os.PathLike = "runs") -> list[dict]:
    """One row per finished run: task, model, seed, size, the final record."""
    rows = []
    for metrics in sorted(Path(runs_root).glob(f"*/*/*/{METRICS}")):
        folder = metrics.parent
        config_path = folder / CONFIG
        if not config_path.exists():
            continue
        config = json.loads(config_path.read_text())
        finals = [json.loads(line) for line in metrics.read_text().splitlines()
                  if line.strip() and json.loads(line).get("final")]
        if not finals:
            continue
        rows.append({"task": config.get("task"), "model": config.get("model"),
                     "seed": config.get("seed"), "size": config.get("size"),
                     "data_options": config.get("data_options", {}),
                     "run": str(folder), **finals[-1]})
    return rows


def mean_std(values: list[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, std


def summarize(rows: list[dict]) -> list[dict]:
    """Group rows by (task, size, data options, model): mean and sample std of
    each headline metric, mean train seconds, parameter count, number of
    seeds. Runs on datasets built with other options are never pooled."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        options = json.dumps(row.get("data_options", {}), sort_keys=True)
        groups.setdefault((row["task"], row["size"], options, row["model"]), []).append(row)
    summary = []
    for (task, size, options, model), runs in sorted(groups.items()):
        entry = {"task": task, "size": size, "data_options": json.loads(options),
                 "model": model, "seeds": len(runs),
                 "num_parameters": runs[0].get("num_parameters"),
                 "train_seconds": mean_std([r["train_seconds"] for r in runs])[0]}
        for key, _, _ in HEADLINE.get(task, []):
            values = [r[key] for r in runs if r.get(key) is not None]
            if values:
                entry[key] = mean_std(values)
        summary.append(entry)
    return summary


def results_table(rows: list[dict], digits: int = 3) -> str:
    """A Markdown table per task of :func:`summarize` (mean ± std over seeds)."""
    lines = []
    summary = summarize(rows)
    for task in sorted({s["task"] for s in summary}):
        metrics = HEADLINE.get(task, [])
        lines += [f"### {task}", "",
                  "| model | size | data options | seeds | "
                  + " | ".join(label for _, label, _ in metrics) + " | train s | parameters |",
                  "|---|---|---|---|" + "---|" * len(metrics) + "---|---|"]
        for s in (s for s in summary if s["task"] == task):
            cells = []
            for key, _, _ in metrics:
                if key in s:
                    mean, std = s[key]
                    cells.append(f"{mean:.{digits}f} ± {std:.{digits}f}" if abs(mean) >= 1e-2
                                 else f"{mean:.2e} ± {std:.1e}")
                else:
                    cells.append("-")
            options = ", ".join(f"{k}={json.dumps(v)}" for k, v in s["data_options"].items())
            lines.append(f"| {s['model']} | {s['size']} | {options or '-'} | {s['seeds']} | "
                         + " | ".join(cells)
                         + f" | {s['train_seconds']:.0f} | {s['num_parameters']:,} |")
        lines.append("")
    return "\n".join(lines)
