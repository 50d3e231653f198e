"""Accuracy of a finished classification run's final weights in eval mode
(PoolNorm's running statistics) and with batch statistics, per split.

    python benchmarks/pool_norm_check.py RUN_FOLDER [--data-root data] [--train-every 20]

``RUN_FOLDER`` holds ``config.json`` and ``last.ckpt`` (or ``checkpoint.pt``; the weights of the
last epoch). A large gap between the two columns means the running
statistics do not fit the weights (see ``TrainConfig.recalibrate_batches``);
equal columns on the training split and on validation mean the model is not
memorising. Batches of 64 in a fixed shuffled order. Not part of CI.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import torch
from torch.utils.data import Subset

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout

from nft_pyg.graph.collate import GraphLoader  # noqa: E402
from nft_pyg.tasks.data import load_splits  # noqa: E402
from nft_pyg.tasks.models import build_model  # noqa: E402
from nft_pyg.tasks.runner import NUM_CLASSES  # noqa: E402
from nft_pyg.tasks.trainer import load_run_weights  # noqa: E402


def accuracy(model, dataset, batch_statistics: bool, batch_size: int = 64) -> float:
    state = copy.deepcopy(model.state_dict())   # batch statistics update the running ones
    model.train(batch_statistics)
    loader = GraphLoader(dataset, batch_size=batch_size, shuffle=True,
                         generator=torch.Generator().manual_seed(0))
    correct = total = 0
    with torch.no_grad():
        for batch in loader:
            correct += int((model(batch).argmax(-1) == batch.y).sum())
            total += batch.num_graphs
    model.load_state_dict(state)
    return correct / total


def check(folder: Path, data_root: Path, train_every: int) -> list[dict]:
    config = json.loads((folder / "config.json").read_text())
    if config.get("task") != "classification":
        raise ValueError(f"{folder / 'config.json'}: task {config.get('task')!r}; this check "
                         "is for classification runs")
    splits = load_splits(config["dataset"], data_root, config["size"], progress=False,
                         **config.get("data_options", {}))
    model = build_model("classification", config["model"], splits["train"], NUM_CLASSES,
                        config.get("model_options", {}))
    model.load_state_dict(load_run_weights(folder))
    train = Subset(splits["train"], range(0, len(splits["train"]), train_every))
    rows = []
    for name, dataset in ((f"train (every {train_every})", train), ("val", splits["val"]),
                          ("test", splits["test"])):
        rows.append({"split": name, "eval_mode": accuracy(model, dataset, False),
                     "batch_statistics": accuracy(model, dataset, True)})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--data-root", type=Path, default=Path("data"))
    parser.add_argument("--train-every", type=int, default=20)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    for row in check(args.run, args.data_root, args.train_every):
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
