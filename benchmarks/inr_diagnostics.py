"""Two measurements of the INRs of the classification tables, as references
for the weight-space models.

    python benchmarks/inr_diagnostics.py [--table classification] [--data-root data]

*What the INRs carry about their digit:* every INR of a table's dataset is
rendered, a multinomial logistic regression (scikit-learn) is fitted on the
training renderings and its test accuracy reported; the same on the digit
images the INRs were fitted to. It checks that labels and INRs belong
together and tells how much of the class is in the function each INR
computes.

*How far fitting moves each layer:* ``--refit N`` digits are fitted again
with the dataset's settings, and the same fits are started from the same
initialisation with a zero budget; per layer the median relative distance
``|W - W0| / |W0|`` between fitted and initial weights (and biases).

Writes ``benchmarks/results/inr_diagnostics.json`` (atomically; ``--out``). Not part of CI.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout

from results import CONFIG, load_config, table_task, task_data  # noqa: E402

from nft_pyg.graph.collate import collate_graphs  # noqa: E402
from nft_pyg.tasks.data import TASK_DATASET, load_splits  # noqa: E402
from nft_pyg.tasks.specs import render_graph  # noqa: E402
from nft_pyg.utils.io import atomic_write_text  # noqa: E402

OUT = Path(__file__).with_name("results") / "inr_diagnostics.json"


def renderings(dataset, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(rendered, images, labels)`` of every INR of ``dataset``, flattened."""
    rendered, images, labels = [], [], []
    for start in range(0, len(dataset), batch_size):
        batch = collate_graphs([dataset[i] for i in range(start, min(start + batch_size,
                                                                      len(dataset)))])
        with torch.no_grad():
            rendered.append(render_graph(batch).clamp(0, 1).flatten(1))
        images.append(batch.image.flatten(1))
        labels.append(batch.y.view(-1))
    return torch.cat(rendered), torch.cat(images), torch.cat(labels)


def linear_accuracy(train: torch.Tensor, train_y: torch.Tensor, test: torch.Tensor,
                    test_y: torch.Tensor) -> float:
    from sklearn.linear_model import LogisticRegression

    classifier = LogisticRegression(max_iter=2000, C=1.0)
    classifier.fit(train.double().numpy(), train_y.numpy())
    return float(classifier.score(test.double().numpy(), test_y.numpy()))


def layer_displacement(dataset, count: int) -> dict:
    """Median ``|W - W0| / |W0|`` per layer over ``count`` digits fitted with
    ``dataset``'s settings (weights and biases), ``W0`` the initialisation.
    Biases that start at zero (``bias_init="zero"``) get their median norm
    ``|b|`` after fitting instead, under ``"bias_norms"``."""
    from nft_pyg.datasets.digits_inr import digit_images
    from nft_pyg.inr.fit import fit_sirens

    images = digit_images(dataset.resolution)[0][:count]
    settings = dict(hidden=dataset.hidden, lr=dataset.lr, w0=dataset.w0, w0_first=dataset.w0,
                    seed=dataset.seed, progress=False, shared_init=dataset.shared_init,
                    bias_init=dataset.bias_init)
    fitted = fit_sirens(images, steps=dataset.steps, **settings)
    start = fit_sirens(images, steps=0, **settings)

    def median_change(after, before):
        return [float(((a - b).flatten(1).norm(dim=1) / b.flatten(1).norm(dim=1)).median())
                for a, b in zip(after, before)]

    change = {"digits": count, "weights": median_change(fitted.weights, start.weights)}
    if dataset.bias_init == "zero":
        change["bias_norms"] = [float(b.norm(dim=1).median()) for b in fitted.biases]
    else:
        change["biases"] = median_change(fitted.biases, start.biases)
    return change


def reference(config: dict, table: str, data_root: Path, refit: int) -> dict:
    size, options = task_data(config, table)
    splits = load_splits(TASK_DATASET[table_task(config, table)], data_root, size,
                         progress=False, **options)
    train_r, train_i, train_y = renderings(splits["train"])
    test_r, test_i, test_y = renderings(splits["test"])
    row = {"table": table, "size": size, "data_options": options,
           "num_train": len(train_y), "num_test": len(test_y),
           "test_accuracy_renderings": linear_accuracy(train_r, train_y, test_r, test_y),
           "test_accuracy_images": linear_accuracy(train_i, train_y, test_i, test_y)}
    if refit:
        row["relative_change_from_init"] = layer_displacement(splits["train"], refit)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--data-root", type=Path, default=Path("data"))
    parser.add_argument("--table", action="append", help="only these tables (repeatable)")
    parser.add_argument("--refit", type=int, default=64,
                        help="digits to refit for the per-layer change (0: skip)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    config = load_config(args.config)
    tables = [t for t in config["tasks"] if table_task(config, t) == "classification"
              and (not args.table or t in args.table)]
    results = [reference(config, table, args.data_root, args.refit) for table in tables]
    for row in results:
        print(json.dumps(row), flush=True)
    atomic_write_text(json.dumps(results, indent=2) + "\n", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
