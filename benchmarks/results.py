"""Run every table x model x seed of ``results_config.json`` and write
``docs/results.md`` from the finished runs.

    python benchmarks/results.py run [--task classification] [--model nft] [--seed 1] [--config ...]
    python benchmarks/results.py report

A table is one task on one dataset; its name is the task's or it names the
task in ``"task"`` (so a task can have several tables), and its runs live in
``runs/<table>/<model>/<seed>/``.

``run`` skips runs that already finished and resumes interrupted ones (each
run folder has its checkpoint), so it can be stopped and restarted at will.
Both commands take ``--data-root`` (default ``data``) and ``--runs-root``
(default ``benchmarks/runs``). The run records there (``config.json`` and
``metrics.jsonl`` of every run) are committed with the report, so the tables
can be regenerated and extended by later runs; checkpoints are not
(``.gitignore``). Not part of CI: these are real trainings.
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import re
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout

from nft_pyg.tasks.data import TASK_DATASET, load_splits  # noqa: E402
from nft_pyg.tasks.results import HEADLINE, collect_runs, summarize  # noqa: E402
from nft_pyg.tasks.runner import run_folder, run_task  # noqa: E402

CONFIG = Path(__file__).with_name("results_config.json")


def benchmark_model_factory(model: str):
    """The builder of a benchmark-only model (not a model of the package),
    or ``None`` for the package's models: ``nfn_package``, the published
    ``nfn`` package's layers in the reference configuration
    (``benchmarks/nfn_reference.py``)."""
    if model == "nfn_package":
        sys.path.insert(0, str(Path(__file__).parent))
        import nfn_reference
        return nfn_reference.build
    return None
#: the committed run records behind docs/results.md
RUNS = Path(__file__).with_name("runs")

#: what the papers report, on THEIR data (MNIST / CIFAR-10 / Fashion-MNIST
#: SIRENs, the Small CNN Zoo). Filled only with numbers we could verify.
PAPER_NUMBERS = """\
Numbers reported by the papers belong here, labelled as theirs: they are
on **their** data (SIRENs of image datasets such as MNIST; the Small CNN
Zoo of Unterthiner et al.), with their architectures and budgets. They are not
comparable to ours in absolute value (other data, far larger datasets and
budgets); only the ordering of the models is.

**Zhou et al. 2023a (NFN, NeurIPS 2023, arXiv 2302.14040).** Every value
below is theirs, on their data, copied as printed from a full-text copy of
the NeurIPS 2023 version; table numbers are those of that version (the
arXiv versions may number them differently). Table 3's values are repeated
identically in its appendix Table 17. Spreads as the paper states them:
Table 2 max and min over two runs; Tables 3 and 5 standard error (three
runs; over initializations); Table 6 prints no spread.

Predicting generalization, Small CNN Zoo (theirs, on their data; test Kendall tau, higher is better):

| paper | table | dataset | model | reported (theirs) |
|---|---|---|---|---|
| NFN 2023a | Table 2 | CIFAR-10-GS | NFN-HNP | 0.934 ± 0.001 |
| NFN 2023a | Table 2 | CIFAR-10-GS | NFN-NP | 0.922 ± 0.001 |
| NFN 2023a | Table 2 | CIFAR-10-GS | StatNN | 0.915 ± 0.002 |
| NFN 2023a | Table 2 | SVHN-GS | NFN-HNP | 0.931 ± 0.005 |
| NFN 2023a | Table 2 | SVHN-GS | NFN-NP | 0.856 ± 0.001 |
| NFN 2023a | Table 2 | SVHN-GS | StatNN | 0.843 ± 0.000 |

INR classification, SIRENs of images (theirs, on their data; test accuracy %, higher is better; Table 3 has no DWSNets column):

| paper | table | dataset | model | reported (theirs) |
|---|---|---|---|---|
| NFN 2023a | Table 3 | MNIST | NFN-HNP | 92.5 ± 0.071 |
| NFN 2023a | Table 3 | MNIST | NFN-NP | 92.9 ± 0.218 |
| NFN 2023a | Table 3 | MNIST | MLP | 14.5 ± 0.035 |
| NFN 2023a | Table 3 | MNIST | MLP-Aug | 21.0 ± 0.172 |
| NFN 2023a | Table 3 | FashionMNIST | NFN-HNP | 72.7 ± 1.53 |
| NFN 2023a | Table 3 | FashionMNIST | NFN-NP | 75.6 ± 1.07 |
| NFN 2023a | Table 3 | FashionMNIST | MLP | 12.5 ± 0.111 |
| NFN 2023a | Table 3 | FashionMNIST | MLP-Aug | 15.9 ± 0.181 |
| NFN 2023a | Table 3 | CIFAR-10 | NFN-HNP | 44.1 ± 0.471 |
| NFN 2023a | Table 3 | CIFAR-10 | NFN-NP | 46.6 ± 0.072 |
| NFN 2023a | Table 3 | CIFAR-10 | MLP | 16.9 ± 0.250 |
| NFN 2023a | Table 3 | CIFAR-10 | MLP-Aug | 18.9 ± 0.432 |

INR editing (theirs, on their data; test MSE against the image-space edit, lower is better):

| paper | table | dataset | model | reported (theirs) |
|---|---|---|---|---|
| NFN 2023a | Table 6 | Dilate (MNIST) | MLP | 0.306 |
| NFN 2023a | Table 6 | Dilate (MNIST) | MLP-Aug | 0.307 |
| NFN 2023a | Table 6 | Dilate (MNIST) | NFN-PT | 0.197 |
| NFN 2023a | Table 6 | Dilate (MNIST) | NFN-HNP | 0.070 |
| NFN 2023a | Table 6 | Dilate (MNIST) | NFN-NP | 0.068 |
| NFN 2023a | Table 6 | Contrast (CIFAR-10) | MLP | 0.031 |
| NFN 2023a | Table 6 | Contrast (CIFAR-10) | MLP-Aug | 0.029 |
| NFN 2023a | Table 6 | Contrast (CIFAR-10) | NFN-PT | 0.029 |
| NFN 2023a | Table 6 | Contrast (CIFAR-10) | NFN-HNP | 0.021 |
| NFN 2023a | Table 6 | Contrast (CIFAR-10) | NFN-NP | 0.020 |

Winning tickets at 95 % sparsity (theirs, on their data; test accuracy % after training with the mask, higher is better):

| paper | table | dataset | model | reported (theirs) |
|---|---|---|---|---|
| NFN 2023a | Table 5 | MNIST (MLPs) | Dense | 97.8 ± 0.0 |
| NFN 2023a | Table 5 | MNIST (MLPs) | IMP | 96.2 ± 0.04 |
| NFN 2023a | Table 5 | MNIST (MLPs) | Random | 89.6 ± 0.36 |
| NFN 2023a | Table 5 | MNIST (MLPs) | NFN-NP | 94.8 ± 0.01 |
| NFN 2023a | Table 5 | MNIST (MLPs) | NFN-PT | 95.0 ± 0.01 |
| NFN 2023a | Table 5 | CIFAR-10 (CNNs) | Dense | 63.1 ± 0.06 |
| NFN 2023a | Table 5 | CIFAR-10 (CNNs) | IMP | 44.0 ± 0.06 |
| NFN 2023a | Table 5 | CIFAR-10 (CNNs) | Random | 21.1 ± 0.26 |
| NFN 2023a | Table 5 | CIFAR-10 (CNNs) | NFN-NP | 41.4 ± 0.08 |
| NFN 2023a | Table 5 | CIFAR-10 (CNNs) | NFN-PT | 42.6 ± 0.07 |

The ordering in these tables: NFN-HNP and NFN-NP far above the MLPs on
INR classification and far below them in editing error; NFN-HNP above
NFN-NP above StatNN on generalization prediction.

**Zhou et al. 2023b (NFT, NeurIPS 2023, arXiv 2305.13546): not filled.**
Its INR classification table (Inr2Array with the NFT encoder against NFN,
DWSNets and others) and its editing MSE table could not be read in this
session: only the opening of its stored full text was reachable, and no
other full-text copy of the paper was found. Values attributed to it by
later papers exist but are not copied here, as they were not read in the
NFT paper itself. Its abstract states that Inr2Array improves INR
classification accuracy by up to +17 % over existing methods.
"""


def load_config(path: Path) -> dict:
    return json.loads(path.read_text())


def table_task(config: dict, table: str) -> str:
    """The task a table of the config runs: its ``task`` key, else its name
    (so one task can have several tables, e.g. on two datasets)."""
    task = config["tasks"][table].get("task", table)
    if task not in TASK_DATASET:
        raise ValueError(f"results_config.json: table {table!r} runs task {task!r}; "
                         f"expected one of {sorted(TASK_DATASET)} (set its \"task\" key)")
    return task


def table_dataset(config: dict, table: str) -> str:
    """The dataset of a table: its ``dataset`` key, else its task's default."""
    return config["tasks"][table].get("dataset", TASK_DATASET[table_task(config, table)])


def task_data(config: dict, table: str) -> tuple[str, dict]:
    """Dataset size and options of ``table``: its own ``size`` / ``data_options``
    if it has them, else the config's (per dataset)."""
    spec = config["tasks"][table]
    size = spec.get("size", config["size"])
    options = spec.get("data_options", config.get("data_options", {})
                       .get(table_dataset(config, table), {}))
    return size, options


def is_finished(folder: Path) -> bool:
    metrics = folder / "metrics.jsonl"
    return metrics.exists() and any(json.loads(line).get("final") for line in
                                    metrics.read_text().splitlines() if line.strip())


def intended(config: dict, table: str, model: str) -> dict:
    """What a run of ``model`` in ``table`` must have been run with to count
    for the current config: task, size, data / model options, augmentations
    and every training option the config sets."""
    spec = config["tasks"][table]
    size, options = task_data(config, table)
    train = dict(spec.get("train", {}))
    augment = list(train.pop("augment", []))
    return {"task": table_task(config, table), "dataset": table_dataset(config, table),
            "size": size, "data_options": options,
            "augment": augment,
            "model_options": spec.get("model_options", {}).get(model, {}), "train": train}


#: training options that runs recorded before the option existed ran with
RECORDED_BEFORE_THE_OPTION = {"recalibrate_batches": 0, "lr_schedule": "constant"}


def mismatches(folder: Path, want: dict) -> list[str]:
    """The settings in which the run in ``folder`` differs from ``want``
    (:func:`intended`); empty when it was run as the config says."""
    path = folder / "config.json"
    if not path.exists():
        return ["no config.json"]
    have = json.loads(path.read_text())
    # records without a dataset ran on their task's default one
    missing = {"augment": [], "dataset": TASK_DATASET.get(have.get("task"))}
    wrong = [key for key in ("task", "dataset", "size", "data_options", "augment",
                             "model_options")
             if have.get(key, missing.get(key, {})) != want[key]]
    trained = {**RECORDED_BEFORE_THE_OPTION, **have.get("train", {})}
    wrong += [f"train.{key}" for key, value in want["train"].items() if trained.get(key) != value]
    return wrong


def run(config: dict, data_root: Path, runs_root: Path, tables: list[str] | None,
        models: list[str] | None, progress: bool, seeds: list[int] | None = None) -> None:
    """Train every (table, seed, model) of ``config`` that has no finished run
    made with its settings; ``tables`` / ``models`` / ``seeds`` restrict them
    (``seeds``: to those of the config's seeds, so that two processes can run
    the seeds of one table side by side)."""
    for table, spec in config["tasks"].items():
        if tables and table not in tables:
            continue
        task = table_task(config, table)
        size, options = task_data(config, table)
        dataset = table_dataset(config, table)
        splits = load_splits(dataset, data_root, size, progress=progress, **options)
        for seed in spec.get("seeds", config["seeds"]):
            if seeds is not None and seed not in seeds:
                continue
            for model in spec["models"]:
                if models and model not in models:
                    continue
                folder = run_folder(runs_root, table, model, seed)
                want = intended(config, table, model)
                stale = mismatches(folder, want) if folder.exists() else []
                if is_finished(folder) and not stale:
                    print(f"done already: {folder}", flush=True)
                    continue
                if stale:   # run with other settings: start it again, from scratch
                    print(f"restarting {folder}: differs in {', '.join(stale)}", flush=True)
                print(f"running {table} / {model} / seed {seed}", flush=True)
                final = run_task(task, model, seed=seed, size=size, splits=splits,
                                 data_options=options, run_dir=folder, dataset=dataset,
                                 resume=not stale and (folder / "checkpoint.pt").exists(),
                                 progress=progress,
                                 model_options=want["model_options"],
                                 model_factory=benchmark_model_factory(model),
                                 **spec.get("train", {}))
                print(json.dumps(final), flush=True)


def _cell(stats: tuple[float, float] | None, seeds: int = 2) -> str:
    if stats is None:
        return "-"
    mean, std = stats
    digits = 3 if abs(mean) >= 0.1 else 4 if abs(mean) >= 0.01 else 5
    if seeds < 2:  # one run has no spread
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


#: ``{table/model/metric}`` in a finding: the table's cell for it (mean ± std)
NUMBER = re.compile(r"\{(\w+)/(\w+)/(\w+)\}")


def fill_numbers(text: str, summary: list[dict]) -> str:
    """``text`` with every ``{table/model/metric}`` replaced by that mean ± std
    over the counted runs (``metric`` a headline key such as
    ``test_accuracy``, or ``seeds``), so that the prose quotes the tables."""
    entries = {(s.get("table", s["task"]), s["model"]): s for s in summary}

    def cell(match: re.Match) -> str:
        table, model, metric = match.groups()
        entry = entries.get((table, model))
        if entry is None or metric not in entry:
            raise ValueError(f"results_config.json: a finding quotes {match.group(0)}, but no "
                             f"counted run of {table} / {model} has {metric!r}")
        value = entry[metric]
        return str(value) if metric == "seeds" else _cell(value, entry["seeds"])

    return NUMBER.sub(cell, text)


def _shown(path: Path) -> str:
    """``path`` relative to the checkout when it lies inside it."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def counted(config: dict, runs_root: Path) -> list[dict]:
    """:func:`summarize` of the runs that count for each table of ``config``:
    those in the table's folder that were run as the config says. Each entry
    has the table's name as ``table``."""
    summary, finished = [], collect_runs(runs_root)
    for table, spec in config["tasks"].items():
        rows = [row for row in finished
                if Path(row["run"]).parent.parent.name == table and row["model"] in spec["models"]
                and not mismatches(Path(row["run"]), intended(config, table, row["model"]))]
        summary += [{**entry, "table": table} for entry in summarize(rows)]
    return summary


def check_findings(findings: list[str]) -> None:
    """Each finding once: two paragraphs with the same bold lead are an edit
    that kept the old version."""
    leads: dict[str, int] = {}
    for number, paragraph in enumerate(findings):
        if not paragraph.startswith("**"):
            continue
        lead = paragraph.split("**")[1]
        if lead in leads:
            raise ValueError(f"results_config.json: findings {leads[lead]} and {number} both "
                             f"start with **{lead}**; keep one")
        leads[lead] = number


def report(config: dict, runs_root: Path, out: Path) -> str:
    findings = config.get("findings", [])
    check_findings(findings)
    summary = counted(config, runs_root)
    lines = ["# Results", "",
             "Generated by `python benchmarks/results.py report` from the runs under "
             f"`{_shown(runs_root)}` on {datetime.date.today().isoformat()}; do not edit by "
             "hand.", "",
             f"Machine: {platform.processor() or platform.machine()}, torch "
             f"{torch.__version__}, one torch thread per run, shared with other jobs. Each "
             "cell: mean ± sample standard deviation over seeds (model initialisation and "
             "batch order; the dataset is fixed). Test metrics are taken at the epoch with "
             "the best validation metric. *train s*: training wall-clock seconds per run "
             "(mean); *parameters*: trainable parameters. The budget, data and options of "
             "each table are stated above it (from `benchmarks/results_config.json`).", ""]
    for table, spec in config["tasks"].items():
        task = table_task(config, table)
        metrics = HEADLINE[task]
        size, options = task_data(config, table)
        entries = {s["model"]: s for s in summary if s["table"] == table}
        train = spec.get("train", {})
        lines += [f"## {table}", ""]
        if spec.get("about"):
            lines += [spec["about"], ""]
        lines += [(f"Task `{task}`; d" if task != table else "D")
                  + f"ataset `{table_dataset(config, table)}`, size `{size}`"
                  + (f" with {json.dumps(options)}" if options else "")
                  + f"; training {json.dumps(train)}"
                  + (" (a wall-clock cap per run: fewer epochs for the slower models)"
                     if train.get("max_train_seconds") else " (an epoch budget, no time cap)")
                  + ".", "",
                  "| model | seeds | " + " | ".join(label for _, label, _ in metrics)
                  + " | train s | parameters |",
                  "|---|---|" + "---|" * len(metrics) + "---|---|"]
        for model in spec["models"]:
            s = entries.get(model)
            if s is None:
                lines.append(f"| {model} | 0 | " + " | ".join("not run" for _ in metrics)
                             + " | - | - |")
                continue
            cells = [_cell(s.get(key), s["seeds"]) for key, _, _ in metrics]
            lines.append(f"| {model} | {s['seeds']} | " + " | ".join(cells)
                         + f" | {s['train_seconds']:.0f} | {s['num_parameters']:,} |")
        lines.append("")
    tickets = Path(__file__).with_name("results_tickets.md")
    if tickets.exists():  # measured by `nft-pyg tickets`, not by the runs above
        lines += [tickets.read_text().rstrip(), ""]
    lines += ["## Reported by the papers (their data)", "", PAPER_NUMBERS, ""]
    if findings:
        lines += ["## What the numbers say", ""]
        for paragraph in findings:
            lines += [fill_numbers(paragraph, summary), ""]
    text = "\n".join(lines)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("run", "report"))
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--data-root", type=Path, default=Path("data"))
    parser.add_argument("--runs-root", type=Path, default=RUNS)
    parser.add_argument("--task", action="append",
                        help="only these tables of the config (repeatable)")
    parser.add_argument("--model", action="append", help="only these models (repeatable)")
    parser.add_argument("--seed", type=int, action="append",
                        help="only these of the config's seeds (repeatable)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results.md")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    config = load_config(args.config)
    if args.command == "run":
        run(config, args.data_root, args.runs_root, args.task, args.model,
            not args.no_progress, args.seed)
    else:
        print(report(config, args.runs_root, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
