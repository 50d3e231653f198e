"""The training tables of ``docs/results.md``: run them, pack their records,
write the report.

    python benchmarks/results.py run [--task TABLE] [--model MODEL] [--seed N]
    python benchmarks/results.py pack
    python benchmarks/results.py report

``results_config.json`` lists the tables. A table is one task on one dataset
(its name is the task's, or it names the task in ``"task"``, so a task can
have several tables), with its models, seeds, data and training options.

``run`` trains every (table, model, seed) into its own run folder,
``<runs-root>/<table>/<model>/<seed>/`` (default root ``benchmarks/runs``, not
committed): ``config.json``, ``metrics.jsonl`` and a checkpoint, so a run
that is stopped resumes where it was, and a finished run made with the
config's settings is not run again. ``pack`` keeps, of those folders, the
runs made as the config says and writes them, with the records already
packed, into one compact file per table, ``benchmarks/records/<table>.json``
(each run's settings and its final record); those files are what is
committed. ``report`` writes ``docs/results.md`` from the packed records and
the config alone, so the same records always give the same page. Not part of
CI: these are real trainings.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout

from nft_pyg.tasks.data import TASK_DATASET, load_splits  # noqa: E402
from nft_pyg.tasks.results import HEADLINE, summarize  # noqa: E402
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


#: where ``run`` writes its run folders (not committed)
RUNS = Path(__file__).with_name("runs")
#: the committed records behind docs/results.md, one file per table
RECORDS = Path(__file__).with_name("records")
#: settings of a run folder's config.json that a record does not keep (the
#: model's repr follows from the code and the model options)
NOT_RECORDED = ("name", "model_repr")

#: what the papers report, on THEIR data (MNIST / CIFAR-10 / Fashion-MNIST
#: SIRENs, the Small CNN Zoo). Filled only with numbers we could verify.
PAPER_NUMBERS = """\
The numbers the papers report, labelled as theirs: they are
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

Predicting generalization, Small CNN Zoo (theirs, on their data; test Kendall tau,
higher is better):

| paper | table | dataset | model | reported (theirs) |
|---|---|---|---|---|
| NFN 2023a | Table 2 | CIFAR-10-GS | NFN-HNP | 0.934 ± 0.001 |
| NFN 2023a | Table 2 | CIFAR-10-GS | NFN-NP | 0.922 ± 0.001 |
| NFN 2023a | Table 2 | CIFAR-10-GS | StatNN | 0.915 ± 0.002 |
| NFN 2023a | Table 2 | SVHN-GS | NFN-HNP | 0.931 ± 0.005 |
| NFN 2023a | Table 2 | SVHN-GS | NFN-NP | 0.856 ± 0.001 |
| NFN 2023a | Table 2 | SVHN-GS | StatNN | 0.843 ± 0.000 |

INR classification, SIRENs of images (theirs, on their data; test accuracy %,
higher is better; Table 3 has no DWSNets column):

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

Winning tickets at 95 % sparsity (theirs, on their data; test accuracy % after
training with the mask, higher is better):

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

**Zhou et al. 2023b (NFT, NeurIPS 2023, arXiv 2305.13546): not quoted.** Its INR
classification table (Inr2Array with the NFT encoder against NFN, DWSNets
and others) and its editing table are not copied here: only values read in
a paper's own text are quoted, and its full text was not available to us.
Its abstract states that Inr2Array improves INR classification accuracy by
up to +17 % over existing methods.
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
RECORDED_BEFORE_THE_OPTION = {"recalibrate_batches": 0, "lr_schedule": "constant",
                              "warmup_steps": 0}


def mismatches(folder: Path, want: dict) -> list[str]:
    """The settings in which the run in ``folder`` differs from ``want``
    (:func:`intended`); empty when it was run as the config says."""
    path = folder / "config.json"
    if not path.exists():
        return ["no config.json"]
    return settings_mismatches(json.loads(path.read_text()), want)


def settings_mismatches(have: dict, want: dict) -> list[str]:
    """The settings in which a run's ``config.json`` ``have`` differs from ``want``."""
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
                                 resume=not stale, overwrite=bool(stale),
                                 progress=progress,
                                 model_options=want["model_options"],
                                 model_factory=benchmark_model_factory(model),
                                 **spec.get("train", {}))
                print(json.dumps(final), flush=True)


def record_of(folder: Path) -> dict:
    """The packed form of a finished run folder: its settings and final record."""
    settings = json.loads((folder / "config.json").read_text())
    finals = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()
              if line.strip() and json.loads(line).get("final")]
    return {"model": settings["model"], "seed": settings["seed"],
            "settings": {k: v for k, v in settings.items() if k not in NOT_RECORDED},
            "final": {k: v for k, v in finals[-1].items() if k != "final"}}


def read_records(path: Path) -> list[dict]:
    """The runs packed in the table file ``path`` (none if there is no file)."""
    return json.loads(path.read_text())["runs"] if path.exists() else []


def write_records(path: Path, table: str, runs: list[dict]) -> None:
    """One table file: a run a line, ordered by model and seed."""
    runs = sorted(runs, key=lambda r: (r["model"], r["seed"]))
    lines = [json.dumps(r, sort_keys=True, ensure_ascii=False) for r in runs]
    text = (f'{{"table": {json.dumps(table)}, "runs": [\n' + ",\n".join(lines) + "\n]}\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(text)
    temp.replace(path)


def pack(config: dict, runs_root: Path, records_root: Path) -> dict[str, int]:
    """Merge the finished runs under ``runs_root`` into the table files of
    ``records_root`` and keep there only runs that count for the config: a
    table's models, run with its settings. A run folder replaces the packed
    run of the same (model, seed). Returns the number of runs per table."""
    counts = {}
    for table, spec in config["tasks"].items():
        path = records_root / f"{table}.json"
        runs = {(r["model"], r["seed"]): r for r in read_records(path)}
        for folder in sorted((runs_root / table).glob("*/*")):
            if folder.is_dir() and is_finished(folder) and (folder / "config.json").exists():
                record = record_of(folder)
                runs[(record["model"], record["seed"])] = record
        kept = []
        for (model, _), record in sorted(runs.items()):
            stale = settings_mismatches(record["settings"], intended(config, table, model)) \
                if model in spec["models"] else ["model not in the table"]
            if stale:
                print(f"not packed: {table} / {model} / seed {record['seed']}: differs in "
                      f"{', '.join(stale)}", flush=True)
            else:
                kept.append(record)
        if kept:
            write_records(path, table, kept)
        elif path.exists():
            path.unlink()
        counts[table] = len(kept)
    for path in sorted(records_root.glob("*.json")):
        if path.stem not in config["tasks"]:   # a table the config no longer has
            path.unlink()
    return counts


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


def counted(config: dict, records_root: Path) -> list[dict]:
    """:func:`summarize` of the packed runs that count for each table of
    ``config``: the table's models, run as the config says. Each entry has
    the table's name as ``table``."""
    summary = []
    for table, spec in config["tasks"].items():
        rows = []
        for record in read_records(records_root / f"{table}.json"):
            settings = record["settings"]
            if record["model"] in spec["models"] and not settings_mismatches(
                    settings, intended(config, table, record["model"])):
                rows.append({"task": settings.get("task"), "model": record["model"],
                             "seed": record["seed"], "size": settings.get("size"),
                             "data_options": settings.get("data_options", {}),
                             **record["final"]})
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


INTRO = """\
Generated by `python benchmarks/results.py report` from `benchmarks/results_config.json`
and the run records in `benchmarks/records/`; do not edit by hand.

Each table trains the models of `nft_pyg.tasks` on one task and one offline
dataset built from the scikit-learn digits (`DigitsINR`: SIRENs fitted to
the digits; `DigitsCNNZoo`: small CNNs trained on them; see
[datasets.md](datasets.md)). Models: `mlp` (an MLP on the flattened
weights), `statnn` (an MLP on per-layer weight statistics), `nfn_np` /
`nfn_hnp` (NF-Layers), `nft` (the Neural Functional Transformer),
`inr2array` (the Inr2Array autoencoder with a classifier on its latents), `gnn` (a
plain `TransformerConv` GNN) and `nfn_gnn` (NP layers mixed with
`TransformerConv` layers). Each cell is the mean ± sample standard
deviation over seeds (model initialisation and batch order; the dataset is
fixed); test metrics are taken at the epoch with the best validation
metric. *train s*: training wall-clock seconds per run (mean);
*parameters*: trainable parameters. Above each table: what it measures and
its data and training settings; below it: what it shows.

To reproduce a table (these are real trainings: minutes to an hour per run
on one CPU thread):

```bash
python benchmarks/results.py run --task generalization_narrow  # builds its dataset first
python benchmarks/results.py pack     # finished runs -> benchmarks/records/
python benchmarks/results.py report   # -> docs/results.md
```

`run` writes one folder per run under `benchmarks/runs/` and resumes
interrupted runs; `--model` and `--seed` (repeatable) run a part of a
table. `nft-pyg results --runs-root benchmarks/runs` tables the run folders
directly."""


def _paragraphs(texts: list[str], summary: list[dict]) -> list[str]:
    lines = []
    for text in texts:
        lines += [fill_numbers(text, summary), ""]
    return lines


def report(config: dict, records_root: Path, out: Path) -> str:
    """Write the results page from ``config`` and the packed records alone."""
    check_findings(config.get("summary", []) + config.get("notes", []))
    summary = counted(config, records_root)
    lines = ["# Results", "", INTRO, ""]
    if config.get("machine"):
        lines += [f"The records were made on: {config['machine']}.", ""]
    if config.get("summary"):
        lines += ["## Summary", ""] + _paragraphs(config["summary"], summary)
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
        lines += _paragraphs(spec.get("shows", []), summary)
    tickets = Path(__file__).with_name("results_tickets.md")
    if tickets.exists():  # measured by `nft-pyg tickets`, not by the runs above
        lines += [tickets.read_text().rstrip(), ""]
    lines += ["## Reported by the papers (their data)", "", PAPER_NUMBERS, ""]
    if config.get("notes"):
        lines += ["## Initial biases, initialisations and PoolNorm", ""]
        lines += _paragraphs(config["notes"], summary)
    text = "\n".join(lines).rstrip("\n") + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("run", "pack", "report"))
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--data-root", type=Path, default=Path("data"))
    parser.add_argument("--runs-root", type=Path, default=RUNS,
                        help="run folders: written by run, read by pack")
    parser.add_argument("--records", type=Path, default=RECORDS,
                        help="packed records: written by pack, read by report")
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
    elif args.command == "pack":
        for table, count in pack(config, args.runs_root, args.records).items():
            print(f"{table}: {count} runs", flush=True)
    else:
        report(config, args.records, args.out)
        print(f"wrote {_shown(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
