"""Training throughput (networks per second) of every classification model:
the Lightning trainer against the hand-written loop it replaced, on the CPU.

Both trainers train the same model (same initialisation) on the same fixed
data set: SIRENs 2-32-32-1 with random weights and labels ``i % 10`` (no
data set build, nothing downloaded). The earlier loop is read from git
(``--legacy-ref``, default the last commit before the move) and run in this
process; the two trainers alternate, model by model, ``--repeats`` times,
and the table takes the fastest repeat of each (on a shared machine, noise
only adds time):

- each trainer runs ``fit`` for 1 and for ``--epochs`` epochs; the
  difference of the process's CPU time (one thread, so on a loaded machine
  closer to what an idle one takes than wall time) over the extra epochs is
  the CPU cost of one epoch (training steps and the validation of the 16
  validation graphs), the rest is the fixed cost of a run (set-up, test);
- *networks/s (CPU)*: training networks per CPU second of an epoch;
  *epoch overhead*: how much more CPU an epoch takes under Lightning, as
  a fraction and in ms;
- *networks/s (wall)*: from each trainer's own ``train_seconds`` (wall
  time of the training steps), ``--epochs`` epochs;
- *extra fixed cost*: Lightning's set-up cost per run over the loop's.

The default epoch (1,024 networks, 32 steps of 32) is short next to the
tables' (118 to 375 steps) but long enough that a cost Lightning pays once
an epoch (its validation loop set-up, hooks) is not mistaken for a cost per
step; ``--num-train 128`` (4 steps) shows that fixed cost on its own.

    python benchmarks/bench_training.py [--quick] [--models mlp,nft] [--legacy-ref REF]
"""
from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import time
import types

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


def fit_lightning(model, splits, epochs: int, batch_size: int, device: str = "cpu") -> dict:
    from nft_pyg.tasks.specs import SPECS
    from nft_pyg.tasks.trainer import TrainConfig, Trainer

    config = TrainConfig(**settings(epochs, batch_size), accelerator=device, devices=1)
    trainer = Trainer(model, SPECS["classification"], *splits, config, progress=False)
    return _timed(trainer)


def _timed(trainer) -> dict:
    started, started_cpu = time.perf_counter(), time.process_time()
    final = trainer.fit()
    return {"fit_s": time.perf_counter() - started,
            "fit_cpu_s": time.process_time() - started_cpu, "train_s": final["train_seconds"]}


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


def fit_legacy(module, model, splits, epochs: int, batch_size: int) -> dict:
    from nft_pyg.tasks.specs import SPECS

    config = module.TrainConfig(**settings(epochs, batch_size))
    trainer = module.Trainer(model, legacy_task(SPECS["classification"]), *splits, config,
                             progress=False)
    return _timed(trainer)


def run(models: list[str], repeats: int, epochs: int, num_train: int, batch_size: int,
        legacy_ref: str) -> dict:
    legacy = legacy_trainer_module(legacy_ref)
    graphs = fixed_dataset(num_train + 32)
    splits = (graphs[:num_train], graphs[num_train:num_train + 16], graphs[num_train + 16:])
    fit_lightning(build("mlp", graphs), splits, 1, batch_size)    # imports, first-use costs
    fits = {"loop": lambda name, e: fit_legacy(legacy, build(name, graphs), splits, e,
                                                batch_size),
            "lightning": lambda name, e: fit_lightning(build(name, graphs), splits, e,
                                                       batch_size)}
    rows, records = [], []
    for name in models:
        times = {(variant, e): [] for variant in fits for e in (1, epochs)}
        for _ in range(repeats):
            for e in (1, epochs):
                for variant, fit in fits.items():
                    times[(variant, e)].append(fit(name, e))
        # the fastest repeat: on a shared machine noise only ever adds time
        best = {key: {k: min(t[k] for t in runs) for k in ("fit_s", "fit_cpu_s", "train_s")}
                for key, runs in times.items()}
        # CPU seconds of one more epoch (slope) and of everything else (set-up, test)
        epoch_cpu = {v: (best[(v, epochs)]["fit_cpu_s"] - best[(v, 1)]["fit_cpu_s"])
                     / (epochs - 1) for v in fits}
        fixed_cpu = {v: best[(v, 1)]["fit_cpu_s"] - epoch_cpu[v] for v in fits}
        wall_rate = {v: num_train * epochs / best[(v, epochs)]["train_s"] for v in fits}
        rows.append([name, f"{num_train / epoch_cpu['loop']:.0f}",
                     f"{num_train / epoch_cpu['lightning']:.0f}",
                     f"{epoch_cpu['lightning'] / epoch_cpu['loop'] - 1:+.1%}",
                     f"{(epoch_cpu['lightning'] - epoch_cpu['loop']) * 1e3:+.0f}",
                     f"{wall_rate['loop']:.0f}", f"{wall_rate['lightning']:.0f}",
                     f"{(fixed_cpu['lightning'] - fixed_cpu['loop']) * 1e3:+.0f}"])
        records.append({"model": name,
                        "runs": {f"{v}/{e}": t for (v, e), t in times.items()},
                        "epoch_cpu_s": epoch_cpu, "fixed_cpu_s": fixed_cpu,
                        "train_networks_per_s_wall": wall_rate})
        print(rows[-1], flush=True)
    table = markdown_table(["model", "loop: networks/s (CPU)", "Lightning: networks/s (CPU)",
                            "epoch overhead (CPU)", "extra ms per epoch (CPU)",
                            "loop: networks/s (wall)", "Lightning: networks/s (wall)",
                            "extra fixed cost, ms (CPU)"],
                           rows)
    return {"machine": machine(), "legacy_ref": legacy_ref, "repeats": repeats,
            "epochs": epochs, "num_train": num_train, "batch_size": batch_size,
            "records": records, "table": table}


def main() -> None:
    from nft_pyg.tasks.models import TASK_MODELS

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="1 repeat, 2 epochs of 64 networks")
    parser.add_argument("--models", default=",".join(TASK_MODELS["classification"]))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--num-train", type=int, default=1024,
                        help="training networks: 1024 with batch 32 is an epoch of 32 steps")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--legacy-ref", default=LEGACY_REF)
    args = parser.parse_args()
    single_thread()
    if args.quick:
        args.repeats, args.epochs, args.num_train = 1, 2, 64
    result = run(args.models.split(","), args.repeats, args.epochs, args.num_train,
                 args.batch_size, args.legacy_ref)
    path = save("training", result, args.quick)
    print(result["table"])
    print(f"saved {path}")


if __name__ == "__main__":
    main()
