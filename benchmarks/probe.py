"""One exploratory training run (seed 0 by default) with options the results
config does not set, recorded under ``benchmarks/probes/NAME/``.

    python benchmarks/probe.py NAME TASK MODEL --epochs 20 \\
        [--option fourier_features=16] [--data-option image_views=2] \\
        [--augment sign_flip] [--lr 1e-3] [--lr-schedule cosine] [--resume]

The findings of ``docs/results.md`` that are not in its tables (single-seed
probes of budgets, encodings, data) come from these records; each folder's
``config.json`` has every setting of its run. Not part of CI.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout

from nft_pyg.cli import parse_options  # noqa: E402
from nft_pyg.tasks.data import TASK_DATASET, load_splits  # noqa: E402
from nft_pyg.tasks.runner import run_task  # noqa: E402
from nft_pyg.tasks.trainer import LR_SCHEDULES  # noqa: E402

PROBES = Path(__file__).with_name("probes")
#: its top-level ``data_options`` are the dataset options probes start from
RESULTS_CONFIG = Path(__file__).with_name("results_config.json")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name")
    parser.add_argument("task", choices=tuple(TASK_DATASET))
    parser.add_argument("model")
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--lr-schedule", choices=LR_SCHEDULES, default="constant")
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--recalibrate-batches", type=int, default=None,
                        help="default: TrainConfig's")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--augment", default="", help="comma-separated augmentations")
    parser.add_argument("--option", action="append", metavar="KEY=VALUE", help="model option")
    parser.add_argument("--data-option", action="append", metavar="KEY=VALUE",
                        help="dataset option on top of the results tables' ones")
    parser.add_argument("--data-root", type=Path, default=Path("data"))
    parser.add_argument("--out", type=Path, default=PROBES)
    parser.add_argument("--resume", action="store_true",
                        help="continue the probe from its folder's checkpoint")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    dataset = TASK_DATASET[args.task]
    base = json.loads(RESULTS_CONFIG.read_text()).get("data_options", {}).get(dataset, {})
    data = {**base, **parse_options(args.data_option)}
    splits = load_splits(dataset, args.data_root, "full", progress=False, **data)
    final = run_task(args.task, args.model, seed=args.seed, size="full", splits=splits,
                     data_options=data, run_dir=args.out / args.name, progress=False,
                     model_options=parse_options(args.option),
                     augment=[a for a in args.augment.split(",") if a], epochs=args.epochs,
                     lr=args.lr, lr_schedule=args.lr_schedule, batch_size=args.batch_size,
                     weight_decay=args.weight_decay,
                     recalibrate_batches=args.recalibrate_batches, resume=args.resume)
    print(args.name, json.dumps(final))
    return 0


if __name__ == "__main__":
    sys.exit(main())
