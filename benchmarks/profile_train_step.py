"""Time and profile one training step of NFN-NP, NFT and Inr2Array on one batch of SIRENs.

    python benchmarks/profile_train_step.py [--batch 32] [--steps 7] [--profile nft]
        [--baseline DIR]

A step is what the trainer does for one batch of the classification task:
collate the graphs, forward (the model of ``nft_pyg.tasks.models.build_model``
with its default sizes: width 32, two NFT blocks, 8 latents for Inr2Array,
whose step also renders and reconstructs at ``--resolution``), loss,
backward, Adam. The batch is 32 SIRENs ``2-32-32-1`` with random labels;
every model gets the same graphs, and the steps are timed interleaved in
one process (median of ``--steps``).

``--baseline DIR`` also times the same steps with an older copy of the
package (``DIR/nft_pyg``, e.g. ``git archive <commit> nft_pyg | tar -x -C DIR``),
imported under another name, in the same interleaved run. ``--profile``
prints where the time of one model's step goes: the torch operators
(``torch.profiler``, self CPU time) and the Python functions (``cProfile``,
own time). Saves ``benchmarks/results/train_step.json``.
"""
from __future__ import annotations

import argparse
import cProfile
import importlib
import io
import pstats
import shutil
import sys
import tempfile
from pathlib import Path

import torch
from common import interleaved, machine, save, single_thread, siren

MODELS = ("nfn_np", "nft", "inr2array")


def import_package(name: str, baseline: str | None):
    """``nft_pyg`` itself, or the baseline copy renamed ``nft_pyg_baseline``."""
    if baseline is None:
        return importlib.import_module(name)
    target = Path(tempfile.mkdtemp()) / "nft_pyg_baseline"
    shutil.copytree(Path(baseline) / "nft_pyg", target)
    sys.path.insert(0, str(target.parent))
    return importlib.import_module("nft_pyg_baseline")


def train_steps(package, graphs, names, resolution: int) -> dict:
    """``{model name: step()}`` for the models of ``package`` on ``graphs``."""
    models = importlib.import_module(f"{package.__name__}.tasks.models")
    specs = importlib.import_module(f"{package.__name__}.tasks.specs")
    collate = importlib.import_module(f"{package.__name__}.graph.collate").collate_graphs
    steps = {}
    for name in names:
        torch.manual_seed(0)
        model = models.build_model("classification", name, graphs, out=10,
                                   resolution=resolution)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

        def step(model=model, optimizer=optimizer):
            optimizer.zero_grad()
            specs.classification_loss(model, collate(graphs)).backward()
            optimizer.step()
        steps[name] = step
    return steps


def profile(step, rows: int = 20) -> tuple[str, str]:
    with torch.profiler.profile() as prof:
        for _ in range(2):
            step()
    kernels = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)
    profiler = cProfile.Profile()
    profiler.runcall(lambda: [step() for _ in range(2)])
    stream = io.StringIO()
    pstats.Stats(profiler, stream=stream).sort_stats("tottime").print_stats(rows)
    return kernels, stream.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=7)
    parser.add_argument("--resolution", type=int, default=28)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--profile", choices=MODELS, default=None)
    parser.add_argument("--baseline", default=None, help="folder holding an older nft_pyg")
    args = parser.parse_args()
    single_thread()
    import nft_pyg
    variants = {}
    for label, package in (("current", nft_pyg),
                           ("baseline", import_package("nft_pyg", args.baseline)
                            if args.baseline else None)):
        if package is None:
            continue
        graphs = [package.from_module(siren()) for _ in range(args.batch)]
        for graph, label_value in zip(graphs, torch.randint(0, 10, (args.batch,)).tolist()):
            graph.y = torch.tensor([label_value])
        for name, step in train_steps(package, graphs, args.models, args.resolution).items():
            variants[f"{name} ({label})"] = step
    timing = interleaved(variants, args.steps)
    for name, times in timing.items():
        print(f"{name:26s} median {times['median'] * 1e3:7.1f} ms  "
              f"(CPU {times['cpu_median'] * 1e3:7.1f} ms)")
    result = {"machine": machine(), "args": vars(args), "timing_s": timing}
    if args.profile:
        kernels, python = profile(variants[f"{args.profile} (current)"])
        print(kernels)
        print(python)
        result.update(torch_profile=kernels, python_profile=python)
    save("train_step", result)


if __name__ == "__main__":
    main()
