"""The winning-ticket task: train a :class:`~nft_pyg.nn.models.ticket_vae.TicketVAE`
on :class:`~nft_pyg.datasets.digits_tickets.DigitsTickets` and score its masks
by training the initialisations under them.

:func:`run_tickets` is the whole job (the ``nft-pyg train tickets``
subcommand); :func:`add_arguments` / :func:`main` are its command-line face.
"""
from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ..datasets.digits_tickets import DigitsTickets
from ..graph.collate import GraphLoader as DataLoader
from ..graph.collate import collate_graphs
from ..graph.convert import to_state_dict
from ..graph.pruning import entry_mask_to_masks, masks_to_entry_mask, prune, to_pruned_module
from ..nn.models.ticket_vae import TicketVAE
from ..tickets.imp import (
    StackedCNN,
    StackedMLP,
    StackedNet,
    TrainConfig,
    digits_split,
    masked_accuracy,
    topk_masks,
)
from ..utils.io import atomic_save, atomic_write_text
from ..utils.threads import one_thread

#: mask sources compared by :func:`evaluate_masks`
METHODS = ("dense", "imp", "cvae", "random", "init_magnitude")


@dataclass
class TicketsConfig:
    """Settings of :func:`run_tickets` (dataset, model, optimisation)."""

    root: str = "data/digits_tickets"
    size: str = "small"
    seed: int = 0
    sparsity: float = 0.95
    num_networks: int | None = None
    arch: str = "mlp"
    hidden_widths: str | None = None
    rounds: int = 5
    imp_epochs: int | None = None
    mode: str = "hnp"
    hidden_channels: int = 16
    latent_channels: int = 4
    num_nf_layers: int = 2
    epochs: int = 40
    batch_size: int = 4
    lr: float = 3e-3
    beta: float = 1.0
    pos_weight: float = 5.0
    num_workers: int = 2
    out: str | None = None
    progress: bool = False


def load_splits(config: TicketsConfig) -> dict[str, Any]:
    widths = None
    if config.hidden_widths is not None:
        hidden = [int(w) for w in config.hidden_widths.split(",") if w.strip()]
        widths = (64 if config.arch == "mlp" else 1, *hidden, 10)
    kwargs = dict(size=config.size, seed=config.seed, sparsity=config.sparsity,
                  rounds=config.rounds, arch=config.arch, widths=widths,
                  epochs=config.imp_epochs,
                  num_networks=config.num_networks, num_workers=config.num_workers,
                  progress=config.progress)
    return {split: DigitsTickets(config.root, split, **kwargs)
            for split in ("train", "val", "test")}


def train_model(model: TicketVAE, train_set, config: TicketsConfig, val_set=None
                ) -> list[dict[str, float]]:
    """Adam on the negative ELBO; returns one row of mean losses per epoch
    (with ``val_set``, also the overlap of the predicted masks with the
    validation tickets). The model keeps its last epoch's parameters: picking
    the epoch of best validation overlap was tried and gave worse accuracies
    (overlap is a weak proxy for how well a mask trains)."""
    generator = torch.Generator().manual_seed(config.seed)
    loader = DataLoader(train_set, batch_size=config.batch_size, shuffle=True,
                        generator=generator)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    history = []
    for epoch in range(1, config.epochs + 1):
        model.train()
        totals = {"loss": 0.0, "bce": 0.0, "kl": 0.0}
        for batch in loader:
            losses = model.loss(batch, batch.ticket_mask, beta=config.beta,
                                pos_weight=config.pos_weight)
            optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            optimizer.step()
            for key in totals:
                totals[key] += losses[key].item() / len(loader)
        row = {"epoch": epoch, **totals}
        if val_set is not None:
            row["val_overlap"] = float(mask_overlap(model, val_set).mean())
        history.append(row)
    return history


@torch.no_grad()
def predicted_masks(model: TicketVAE, graphs: Sequence) -> list:
    """The deterministic-path mask ``[E, S]`` of each graph, with the IMP
    ticket's per-layer counts."""
    model.eval()
    batch = collate_graphs(list(graphs))
    masks = model.predict_mask(batch)
    sizes = [g.edge_attr.size(0) for g in graphs]
    return list(masks.split(sizes))


def mask_overlap(model: TicketVAE, graphs) -> torch.Tensor:
    """``[B]``: fraction of each IMP ticket's weights the predicted mask keeps."""
    graphs = list(graphs)
    return torch.stack([(mask & g.ticket_mask).sum() / g.ticket_mask.sum()
                        for mask, g in zip(predicted_masks(model, graphs), graphs)])


def _stack_masks(entry_masks: Sequence, graphs: Sequence) -> list:
    per_graph = [list(entry_mask_to_masks(mask, g.layout).values())
                 for mask, g in zip(entry_masks, graphs)]
    return [torch.stack(layer) for layer in zip(*per_graph)]


def _is_cnn(graph) -> bool:
    return any(layer.kind == "conv" for layer in graph.layout_obj.weight_layers())


def stacked_init(graphs: Sequence) -> StackedNet:
    """The initialisations of ``graphs`` (one architecture of
    :mod:`~nft_pyg.tickets.imp`) as a :class:`StackedMLP` / :class:`StackedCNN`."""
    states = [list(to_state_dict(g).values()) for g in graphs]
    tensors = [torch.stack(values) for values in zip(*states)]
    kind = StackedCNN if _is_cnn(graphs[0]) else StackedMLP
    return kind(tensors[0::2], tensors[1::2])


def evaluate_masks(graphs: Sequence, entry_masks: dict[str, Sequence], train: TrainConfig,
                   data_seed: int) -> dict[str, torch.Tensor]:
    """Test accuracy ``[B]`` of each graph's initialisation trained under each
    mask source, with the graph's own ``train_seed`` (its IMP data order).

    ``entry_masks[name]`` holds one ``[E, S]`` mask per graph; ``"dense"``,
    ``"imp"`` and ``"random"`` are read from the dataset.
    """
    graphs = list(graphs)
    data = digits_split(data_seed)
    results = {name: torch.zeros(len(graphs)) for name in entry_masks}
    seeds = [int(g.train_seed) for g in graphs]
    with one_thread():
        for seed in sorted(set(seeds)):
            rows = [i for i, s in enumerate(seeds) if s == seed]
            chosen = [graphs[i] for i in rows]
            init = stacked_init(chosen)
            for name, masks in entry_masks.items():
                stacked = _stack_masks([masks[i] for i in rows], chosen)
                results[name][rows] = masked_accuracy(init, stacked, data, train, seed)
    results["dense"] = torch.cat([g.dense_accuracy for g in graphs])
    results["imp"] = torch.cat([g.imp_accuracy for g in graphs])
    results["random"] = torch.cat([g.random_accuracy for g in graphs])
    return results


def init_magnitude_masks(graphs: Sequence) -> list:
    """Baseline: keep the largest ``|w|`` of the initialisation, IMP's per-layer counts."""
    out = []
    for g in graphs:
        state = to_state_dict(g)
        tickets = entry_mask_to_masks(g.ticket_mask, g.layout)
        scores = [state[key].abs().unsqueeze(0) for key in tickets]
        counts = [int(mask.sum()) for mask in tickets.values()]
        masks = [m[0] for m in topk_masks(scores, counts)]
        out.append(masks_to_entry_mask(dict(zip(tickets, masks)), g.layout))
    return out


def check_sparse_round_trip(graph, mask) -> float:
    """Largest difference between the stacked masked MLP and the module rebuilt
    from the pruned graph (``prune`` then ``to_pruned_module``) on the digits."""
    pruned = prune(graph, mask)
    module, _ = to_pruned_module(pruned)
    init = stacked_init([graph])
    masks = _stack_masks([mask], [graph])
    inputs = digits_split(0)[2][:64].to(graph.edge_attr.dtype)
    with torch.no_grad():
        expected = init.logits(inputs, [m.to(inputs.dtype) for m in masks])[0]
        images = inputs.view(-1, 1, 8, 8) if _is_cnn(graph) else inputs
        return float((module(images) - expected).abs().max())


def run_tickets(config: TicketsConfig) -> dict[str, Any]:
    """Build the dataset, train the CVAE, score predicted masks on the test split.

    Returns (and writes to ``config.out/results.json`` if set) the mean test
    accuracy of each mask source (:data:`METHODS`), the overlap of predicted
    and random masks with the IMP tickets, the training history and timings.
    """
    torch.manual_seed(config.seed)
    start = time.time()
    splits = load_splits(config)
    built = time.time()
    train_set = splits["train"]
    model = TicketVAE.for_layout(train_set[0].layout, mode=config.mode,
                                 hidden_channels=config.hidden_channels,
                                 latent_channels=config.latent_channels,
                                 num_nf_layers=config.num_nf_layers)
    history = train_model(model, train_set, config, splits["val"])
    trained = time.time()
    test = [splits["test"][i] for i in range(len(splits["test"]))]
    imp_config = train_set.imp_config
    predicted = predicted_masks(model, test)
    accuracies = evaluate_masks(test, {"cvae": predicted,
                                       "init_magnitude": init_magnitude_masks(test)},
                                imp_config.train, config.seed)
    overlap = {"cvae": float(torch.stack([(p & g.ticket_mask).sum() / g.ticket_mask.sum()
                                          for p, g in zip(predicted, test)]).mean()),
               "random": float(torch.stack([(g.random_mask & g.ticket_mask).sum()
                                            / g.ticket_mask.sum() for g in test]).mean())}
    results = {
        "config": asdict(config), "imp": imp_config.to_dict(),
        "num_networks": {name: len(split) for name, split in splits.items()},
        "test_accuracy": {name: float(accuracies[name].mean()) for name in METHODS},
        "test_accuracy_std": {name: float(accuracies[name].std(correction=int(len(test) > 1)))
                              for name in METHODS},
        "overlap_with_imp": overlap,
        "sparse_round_trip_error": check_sparse_round_trip(test[0], predicted[0]),
        "history": history,
        "seconds": {"dataset": built - start, "training": trained - built,
                    "evaluation": time.time() - trained},
    }
    if config.out is not None:
        out = Path(config.out)
        atomic_write_text(json.dumps(results, indent=2), out / "results.json")
        atomic_save(model.state_dict(), out / "ticket_vae.pt")
    return results


_HELP = {
    "root": "dataset folder (built on first use)",
    "size": "dataset size: small (64 networks) or full (1024)",
    "seed": "seed of the dataset and of the CVAE training",
    "sparsity": "fraction of the hidden layers' weights IMP prunes",
    "num_networks": "override the size's number of networks",
    "arch": "networks of the dataset: mlp (64-32-32-10) or cnn (1-8-8-10 channels)",
    "hidden_widths": "comma-separated hidden widths / channels (default: the arch's)",
    "rounds": "IMP rounds",
    "imp_epochs": "epochs of every training of the networks (default: the size's)",
    "mode": "NF layers of the CVAE: hnp or np",
    "hidden_channels": "channels of the NF layers",
    "latent_channels": "latent channels per weight",
    "num_nf_layers": "NF layers in each of encoder and decoder",
    "epochs": "CVAE training epochs",
    "batch_size": "graphs per CVAE batch",
    "lr": "Adam learning rate of the CVAE",
    "beta": "weight of the KL term",
    "pos_weight": "BCE weight of kept weights (tickets are sparse)",
    "num_workers": "processes generating dataset shards",
    "out": "folder for results.json and the model (optional)",
    "progress": "show progress bars while building the dataset",
}
_CHOICES = {"size": ("small", "full"), "arch": ("mlp", "cnn"), "mode": ("hnp", "np")}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``nft-pyg train tickets`` (one per :class:`TicketsConfig` field)."""
    defaults = TicketsConfig()
    for name, value in asdict(defaults).items():
        flag = "--" + name.replace("_", "-")
        help_text = _HELP[name] + ("" if value is None or isinstance(value, bool)
                                   else " (default: %(default)s)")
        if isinstance(value, bool):
            parser.add_argument(flag, action="store_true", default=value, help=help_text)
        elif name in _CHOICES:
            parser.add_argument(flag, choices=_CHOICES[name], default=value, help=help_text)
        elif value is None:
            kind = int if name in ("num_networks", "imp_epochs") else str
            parser.add_argument(flag, type=kind, default=None, help=help_text)
        else:
            parser.add_argument(flag, type=type(value), default=value, help=help_text)


def main(args: argparse.Namespace) -> dict[str, Any]:
    """Run :func:`run_tickets` from parsed :func:`add_arguments` options and print
    the result table."""
    fields = TicketsConfig.__dataclass_fields__
    config = TicketsConfig(**{name: getattr(args, name) for name in fields
                              if hasattr(args, name)})
    results = run_tickets(config)
    print(format_results(results))
    return results


def format_results(results: dict[str, Any]) -> str:
    accuracy, spread = results["test_accuracy"], results["test_accuracy_std"]
    lines = ["mask source    | test accuracy", "---------------+--------------"]
    for name in METHODS:
        lines.append(f"{name:<14} | {100 * accuracy[name]:.1f} +- {100 * spread[name]:.1f} %")
    overlap = results["overlap_with_imp"]
    lines.append(f"overlap with the IMP ticket: cvae {100 * overlap['cvae']:.1f} %, "
                 f"random {100 * overlap['random']:.1f} %")
    return "\n".join(lines)


__all__ = ["TicketsConfig", "run_tickets", "add_arguments", "main", "format_results",
           "evaluate_masks", "predicted_masks", "mask_overlap", "init_magnitude_masks",
           "METHODS"]
