"""Training throughput (networks per second) of every classification model:
the Lightning trainer against the hand-written loop it replaced, on the CPU.

Both trainers train the same model (same initialisation) on the same fixed
data set: SIRENs 2-32-32-1 with random weights and labels ``i % 10`` (no
data set build, nothing downloaded). The earlier loop is read from git
(``--legacy-ref``, default the last commit before the move) and run in this
process; the two trainers alternate, model by model, ``--repeats`` times,
each training ``--epochs`` epochs:

- *epoch (CPU)*: the process's CPU time (one thread, so on a loaded machine
  closer to what an idle one takes than wall time) from the start of one
  training epoch to the start of the next: the training steps, the
  validation of the 16 validation graphs and whatever a trainer does between
  epochs. Each fit gives ``epochs - 1`` such epochs; the table takes the
  fastest of all ``repeats x (epochs - 1)`` (on a shared machine noise only
  ever adds time, and one epoch is short enough to fall between two bursts
  of another process);
- *networks/s (CPU)*: training networks per CPU second of that epoch;
  *epoch overhead*: how much more CPU an epoch takes under Lightning, as
  a fraction and in ms; *median overhead*: the same from the medians of the
  epochs (more exposed to noise);
- *networks/s (wall)*: from each trainer's own ``train_seconds`` (wall
  time of the training steps), the fastest fit;
- *extra fixed cost*: Lightning's CPU cost of a run beyond its epochs
  (set-up, the test evaluation) over the loop's.

The default epoch (1,024 networks, 32 steps of 32) is short next to the
tables' (118 to 375 steps) but long enough that a cost Lightning pays once
an epoch (its validation loop set-up, hooks) is not mistaken for a cost per
step; ``--num-train 128`` (4 steps) shows that fixed cost on its own.

    python benchmarks/bench_training.py [--quick] [--models mlp,nft] [--legacy-ref REF]
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import torch
from common import ROOT, machine, markdown_table, save, single_thread, siren

#: the last commit whose nft_pyg/tasks/trainer.py is the hand-written loop
LEGACY_REF = "93aec5a"


def legacy_trainer_module(ref: str = LEGACY_REF) -> types.ModuleType:
    """``nft_pyg/tasks/trainer.py`` of git ``ref``, imported as a module of
    ``nft_pyg.tasks`` (its relative imports resolve against this checkout)."""
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{ref}:nft_pyg/tasks/trainer.py"],
                            capture_output=True, text=True, check=True).stdout
    name = "nft_pyg.tasks._legacy_trainer"
    # the atomic io it imports moved from nft_pyg.datasets.io to nft_pyg.utils.io
    source = source.replace("from ..datasets.io import", "from ..utils.io import")
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(name, None))
    module.__package__ = "nft_pyg.tasks"
    sys.modules[name] = module
    exec(compile(source, f"{ref}:nft_pyg/tasks/trainer.py", "exec"), module.__dict__)
    return module


def fixed_dataset(count: int, seed: int = 0) -> list:
    """``count`` random SIRENs 2-32-32-1 as graphs with labels ``i % 10``."""
    from nft_pyg.graph.convert import from_module

    torch.manual_seed(seed)
    graphs = []
    for i in range(count):
        graph = from_module(siren())
        graph.y = torch.tensor([i % 10])
        graphs.append(graph)
    return graphs


def build(name: str, graphs, seed: int = 0):
    from nft_pyg.tasks.models import build_model

    torch.manual_seed(seed)
    return build_model("classification", name, graphs, 10)


def settings(epochs: int, batch_size: int) -> dict:
    # no PoolNorm recalibration: it is the same code in both trainers
    return dict(epochs=epochs, batch_size=batch_size, lr=1e-3, eval_batch_size=64,
                recalibrate_batches=0)


class EpochClock:
    """CPU time (``time.process_time``) at the start of every training epoch;
    under callgrind (``--instructions``) a dump of the instruction counters
    instead, labelled ``label/k`` at the start of epoch ``k``."""

    def __init__(self, label: str = ""):
        self.label, self.starts = label, []

    def mark(self) -> None:
        if under_callgrind():
            subprocess.run(["callgrind_control", "--dump", f"{self.label}/{len(self.starts)}",
                            str(os.getpid())], check=True, capture_output=True)
        self.starts.append(time.process_time())

    def epochs(self) -> list[float]:
        """CPU seconds from the start of each epoch to the start of the next."""
        return [b - a for a, b in zip(self.starts, self.starts[1:])]


#: set in the environment of the run that ``--instructions`` starts under callgrind
UNDER_CALLGRIND = "NFT_PYG_BENCH_UNDER_CALLGRIND"


def under_callgrind() -> bool:
    return os.environ.get(UNDER_CALLGRIND) == "1"


def count_instructions(args: argparse.Namespace, folder: Path) -> dict:
    """Runs this script under callgrind (one repeat: the counts do not vary)
    and returns the instructions of every timed epoch, by model and trainer."""
    command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={folder}/cg.%p",
               sys.executable, __file__, "--instructions", "--repeats", "1",
               "--epochs", str(args.epochs), "--models", args.models,
               "--num-train", str(args.num_train), "--batch-size", str(args.batch_size),
               "--legacy-ref", args.legacy_ref]
    subprocess.run(command, check=True, capture_output=True,
                   env={**os.environ, UNDER_CALLGRIND: "1"})
    return read_instruction_dumps(folder)


def read_instruction_dumps(folder: Path) -> dict[str, dict[str, list[int]]]:
    """Instructions of every timed epoch in callgrind's dumps in ``folder``."""
    counts: dict[str, dict[str, list[int]]] = {}
    for dump in sorted(folder.glob("cg.*.*"), key=lambda path: int(path.suffix[1:])):
        text = dump.read_text()
        label = re.search(r"^desc: Trigger: dump (.*)$", text, re.M)
        total = re.search(r"^totals: (\d+)", text, re.M)
        if label is None or total is None:
            continue
        model, variant, epoch = label.group(1).split("/")
        if int(epoch) > 0 and model != "warm-up":   # the dump at epoch k's start: epoch k - 1
            counts.setdefault(model, {}).setdefault(variant, []).append(int(total.group(1)))
    return counts


def instruction_table(counts: dict, num_train: int, batch_size: int) -> tuple[str, list]:
    rows, records = [], []
    steps = -(-num_train // batch_size)
    for model, by_variant in counts.items():
        mean = {v: statistics.mean(c) for v, c in by_variant.items()}
        extra = mean["lightning"] - mean["loop"]
        rows.append([model, f"{mean['loop'] / 1e9:.3f}", f"{mean['lightning'] / 1e9:.3f}",
                     f"{extra / mean['loop']:+.1%}", f"{extra / steps / 1e6:+.2f}"])
        records.append({"model": model, "instructions_per_epoch": by_variant})
    table = markdown_table(["model", "loop: instructions an epoch (G)",
                            "Lightning: instructions an epoch (G)", "epoch overhead",
                            "extra instructions a step (M)"], rows)
    return table, records


def fit_lightning(model, splits, epochs: int, batch_size: int, device: str = "cpu",
                  label: str = "") -> dict:
    import lightning.pytorch as pl

    from nft_pyg.tasks.specs import SPECS
    from nft_pyg.tasks.trainer import TrainConfig, Trainer

    clock = EpochClock(f"{label}/lightning")

    class Clock(pl.Callback):
        def on_train_epoch_start(self, trainer, module):
            clock.mark()

    config = TrainConfig(**settings(epochs, batch_size), accelerator=device, devices=1)
    trainer = Trainer(model, SPECS["classification"], *splits, config, progress=False,
                      callbacks=[Clock()])
    return _timed(trainer, clock)


def _timed(trainer, clock: EpochClock) -> dict:
    started, started_cpu = time.perf_counter(), time.process_time()
    final = trainer.fit()
    return {"fit_s": time.perf_counter() - started,
            "fit_cpu_s": time.process_time() - started_cpu, "train_s": final["train_seconds"],
            "epoch_cpu_s": clock.epochs()}


def legacy_task(spec) -> types.SimpleNamespace:
    """``spec`` in the loop's task interface, whose ``evaluate(model, loader)``
    runs the task's torchmetrics over the loader, as the Lightning module does
    (built once, reset for every evaluation)."""
    metrics = spec.metrics()

    def evaluate(model, loader) -> dict[str, float]:
        for metric in metrics.values():
            metric.reset()
        for batch in loader:
            spec.update(model, batch, metrics)
        return {name: float(metric.compute()) for name, metric in metrics.items()}
    return types.SimpleNamespace(loss=spec.loss, evaluate=evaluate, select=spec.select,
                                 maximize=spec.maximize)


def fit_legacy(module, model, splits, epochs: int, batch_size: int, label: str = "") -> dict:
    from nft_pyg.tasks.specs import SPECS

    config = module.TrainConfig(**settings(epochs, batch_size))
    trainer = module.Trainer(model, legacy_task(SPECS["classification"]), *splits, config,
                             progress=False)
    clock, train_epoch = EpochClock(f"{label}/loop"), trainer.train_epoch

    def clocked_epoch(epoch: int) -> float:
        clock.mark()
        return train_epoch(epoch)
    trainer.train_epoch = clocked_epoch
    return _timed(trainer, clock)


def run(models: list[str], repeats: int, epochs: int, num_train: int, batch_size: int,
        legacy_ref: str) -> dict:
    if epochs < 2:
        raise ValueError("an epoch is timed from its start to the next one's: epochs >= 2")
    legacy = legacy_trainer_module(legacy_ref)
    graphs = fixed_dataset(num_train + 32)
    splits = (graphs[:num_train], graphs[num_train:num_train + 16], graphs[num_train + 16:])
    fit_lightning(build("mlp", graphs), splits, 2, batch_size,    # imports, first-use costs
                  label="warm-up")
    fits = {"loop": lambda name: fit_legacy(legacy, build(name, graphs), splits, epochs,
                                            batch_size, label=name),
            "lightning": lambda name: fit_lightning(build(name, graphs), splits, epochs,
                                                    batch_size, label=name)}
    rows, records = [], []
    for name in models:
        runs = {variant: [] for variant in fits}
        for _ in range(repeats):
            for variant, fit in fits.items():
                runs[variant].append(fit(name))
        epoch_times = {v: [t for r in runs[v] for t in r["epoch_cpu_s"]] for v in fits}
        # the fastest epoch: on a shared machine noise only ever adds time
        epoch_cpu = {v: min(epoch_times[v]) for v in fits}
        median_cpu = {v: statistics.median(epoch_times[v]) for v in fits}
        fixed_cpu = {v: min(r["fit_cpu_s"] for r in runs[v]) - epochs * epoch_cpu[v]
                     for v in fits}
        wall_rate = {v: num_train * epochs / min(r["train_s"] for r in runs[v]) for v in fits}
        rows.append([name, f"{num_train / epoch_cpu['loop']:.0f}",
                     f"{num_train / epoch_cpu['lightning']:.0f}",
                     f"{epoch_cpu['lightning'] / epoch_cpu['loop'] - 1:+.1%}",
                     f"{(epoch_cpu['lightning'] - epoch_cpu['loop']) * 1e3:+.0f}",
                     f"{median_cpu['lightning'] / median_cpu['loop'] - 1:+.1%}",
                     f"{wall_rate['loop']:.0f}", f"{wall_rate['lightning']:.0f}",
                     f"{(fixed_cpu['lightning'] - fixed_cpu['loop']) * 1e3:+.0f}"])
        records.append({"model": name, "runs": runs, "epoch_cpu_s": epoch_cpu,
                        "median_epoch_cpu_s": median_cpu, "fixed_cpu_s": fixed_cpu,
                        "train_networks_per_s_wall": wall_rate})
        print(rows[-1], flush=True)
    table = markdown_table(["model", "loop: networks/s (CPU)", "Lightning: networks/s (CPU)",
                            "epoch overhead (CPU)", "extra ms per epoch (CPU)",
                            "median overhead (CPU)", "loop: networks/s (wall)",
                            "Lightning: networks/s (wall)", "extra fixed cost, ms (CPU)"],
                           rows)
    return {"machine": machine(), "legacy_ref": legacy_ref, "repeats": repeats,
            "epochs": epochs, "num_train": num_train, "batch_size": batch_size,
            "records": records, "table": table}


def main() -> None:
    from nft_pyg.tasks.models import TASK_MODELS

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="1 repeat, 3 epochs of 64 networks")
    parser.add_argument("--models", default=",".join(TASK_MODELS["classification"]))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=4,
                        help="epochs a fit (each but the last is timed)")
    parser.add_argument("--num-train", type=int, default=1024,
                        help="training networks: 1024 with batch 32 is an epoch of 32 steps")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--legacy-ref", default=LEGACY_REF)
    parser.add_argument("--out", help="name of the JSON in benchmarks/results/ (default "
                                      "training, or training_instructions)")
    parser.add_argument("--instructions", action="store_true",
                        help="count instructions under valgrind's callgrind instead of "
                             "timing (exact, about 60x slower; needs valgrind)")
    args = parser.parse_args()
    single_thread()
    if args.quick:
        args.repeats, args.epochs, args.num_train = 1, 3, 64
    if args.instructions and not under_callgrind():
        with tempfile.TemporaryDirectory() as folder:
            counts = count_instructions(args, Path(folder))
        table, records = instruction_table(counts, args.num_train, args.batch_size)
        path = save(args.out or "training_instructions", {
            "machine": machine(), "legacy_ref": args.legacy_ref, "epochs": args.epochs,
            "num_train": args.num_train, "batch_size": args.batch_size, "records": records,
            "table": table}, args.quick)
        print(table)
        print(f"saved {path}")
        return
    result = run(args.models.split(","), args.repeats, args.epochs, args.num_train,
                 args.batch_size, args.legacy_ref)
    if under_callgrind():       # the counts are in callgrind's dumps
        return
    path = save(args.out or "training", result, args.quick)
    print(result["table"])
    print(f"saved {path}")


if __name__ == "__main__":
    main()
