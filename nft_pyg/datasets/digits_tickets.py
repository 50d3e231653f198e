"""``DigitsTickets``: initialisations of small MLPs / CNNs and their IMP winning tickets.

Each item is the raw neuron graph of an initialisation :math:`\\theta_0` of a
``64-32-32-10`` ReLU MLP (by default) or a small CNN for the 8x8 scikit-learn digits,
with the mask iterative magnitude pruning finds for it
(:mod:`nft_pyg.tickets.imp`: train, prune, rewind to :math:`\\theta_0`,
``rounds`` times) and the test accuracies of the dense network, the IMP
ticket and a random mask with the same per-layer counts, all trained from
:math:`\\theta_0` with the same data order. See ``docs/tickets.md``.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..graph.convert import from_state_dict, layout_of
from ..graph.layout import Layout
from ..graph.neuron_graph import NeuronGraph
from ..graph.pruning import masks_to_entry_mask
from ..tickets.imp import ARCHS, IMPConfig, TrainConfig, digits_split, run_imp, weight_names
from ..utils.threads import one_thread
from .generated import SPLITS, GeneratedDataset, assign_splits

#: default layer widths (MLP) / channels (CNN) of each architecture
DEFAULT_WIDTHS = {"mlp": (64, 32, 32, 10), "cnn": (1, 8, 8, 10)}
SIZES: dict[str, dict[str, Any]] = {
    "small": {"num_networks": 64, "epochs": 5},
    "full": {"num_networks": 1024, "epochs": 10},
}


class DigitsTickets(GeneratedDataset):
    r"""Initialisations of digits MLPs paired with their IMP winning tickets.

    Each graph is a raw :class:`~nft_pyg.NeuronGraph` of an initialisation
    (dense: every edge present) with

    - ``ticket_mask`` ``[E, S]`` (bool): the IMP mask per kernel entry,
      ``True`` = kept (biases are never pruned; ``S = 1`` for MLPs, padding
      entries ``False``);
    - ``random_mask`` ``[E, S]`` (bool): a uniformly random mask with the
      ticket's per-layer counts;
    - ``dense_accuracy``, ``imp_accuracy``, ``random_accuracy`` ``[1]``: test
      accuracy (450 held-out digits) after training :math:`\theta_0` densely,
      under the ticket, under the random mask;
    - ``round_accuracy`` ``[1, rounds + 1]``: test accuracy after each IMP
      round (0: dense);
    - ``train_seed`` ``[1]`` (long): the seed of the minibatch order every
      training of this network used (to train it under other masks with the
      same data order, :func:`nft_pyg.tickets.imp.masked_accuracy`);
    - ``network_id`` ``[1]`` (long).

    Splits are by network (70 / 15 / 15 %). Everything is deterministic
    given ``seed`` (one thread per shard).

    Args:
        root (str): dataset folder.
        split (str): ``"train"``, ``"val"`` or ``"test"``.
        size (str): ``"small"`` (64 networks, 5 epochs per training; about
            half a minute on 2 cores) or ``"full"`` (1024 networks, 10 epochs).
        seed (int): inits, data split of the networks, minibatch orders,
            random masks.
        sparsity (float): fraction of the hidden layers' weights IMP prunes
            (default 0.95); the output layer is pruned at ``output_rate``
            times the per-round rate.
        rounds (int): IMP rounds (default 5).
        output_rate (float): see above (default 0.5).
        arch (str): ``"mlp"`` (default) or ``"cnn"`` (see
            :mod:`nft_pyg.tickets.imp`).
        widths (Sequence[int]): layer widths (MLP, default ``64-32-32-10``)
            or ``(1, c_1, c_2, 10)`` channels (CNN, default ``(1, 8, 8, 10)``).
        num_networks, epochs: override the size's values.
        lr (float), batch_size (int): Adam learning rate and minibatch size.
        networks_per_shard (int): networks trained together (default 32).
        transform, num_workers, progress: see
            :class:`~nft_pyg.datasets.generated.GeneratedDataset`.
    """

    name = "digits_tickets"

    def __init__(self, root: str, split: str = "train", size: str = "small", seed: int = 0,
                 sparsity: float = 0.95, rounds: int = 5, output_rate: float = 0.5,
                 arch: str = "mlp", widths: Sequence[int] | None = None,
                 num_networks: int | None = None,
                 epochs: int | None = None, lr: float = 1e-2, batch_size: int = 64,
                 networks_per_shard: int = 32, transform: Callable | None = None,
                 num_workers: int = 2, progress: bool = True):
        if size not in SIZES:
            raise ValueError(f"DigitsTickets: size must be one of {sorted(SIZES)}, "
                             f"got {size!r}")
        if arch not in ARCHS:
            raise ValueError(f"DigitsTickets: arch must be one of {ARCHS}, got {arch!r}")
        widths = DEFAULT_WIDTHS[arch] if widths is None else widths
        preset = SIZES[size]
        self.size, self.seed = size, int(seed)
        self.num_networks = int(num_networks if num_networks is not None
                                else preset["num_networks"])
        if int(networks_per_shard) < 1:
            raise ValueError(f"DigitsTickets: networks_per_shard must be >= 1, "
                             f"got {networks_per_shard}")
        self.networks_per_shard = int(networks_per_shard)
        train = TrainConfig(epochs=int(epochs if epochs is not None else preset["epochs"]),
                            batch_size=int(batch_size), lr=float(lr))
        self.imp_config = IMPConfig(widths=tuple(int(w) for w in widths),
                                    sparsity=float(sparsity), rounds=int(rounds),
                                    output_rate=float(output_rate), train=train, arch=arch)
        self.network_splits = assign_splits(self.num_networks, self.seed + 1, "DigitsTickets")
        self.layout = layout_of(self.imp_config.module())
        super().__init__(root, split, transform, num_workers, progress)

    def config(self) -> dict[str, Any]:
        return {"num_networks": self.num_networks, "seed": self.seed,
                "networks_per_shard": self.networks_per_shard,
                "imp": self.imp_config.to_dict(), "version": 1}

    @property
    def num_shards(self) -> int:
        return -(-self.num_networks // self.networks_per_shard)

    def shard_networks(self, index: int) -> list[int]:
        start = index * self.networks_per_shard
        return list(range(start, min(start + self.networks_per_shard, self.num_networks)))

    def train_seed(self, index: int) -> int:
        """Seed of the minibatch order of shard ``index``."""
        return self.seed * 1_000_003 + 2 * index + 1

    def generate_shard(self, index: int) -> dict[str, Any]:
        networks = self.shard_networks(index)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + 2 * index)
        with one_thread():
            init = self.imp_config.init(len(networks), generator)
            result = run_imp(init, self.imp_config, digits_split(self.seed),
                             seed=self.train_seed(index),
                             mask_seed=self.seed * 1_000_003 + 2 * index + 2)
        return {"networks": torch.tensor(networks), "weights": init.weights,
                "biases": init.biases, "masks": result["masks"],
                "random_masks": result["random_masks"],
                "dense_accuracy": result["dense_accuracy"],
                "imp_accuracy": result["imp_accuracy"],
                "random_accuracy": result["random_accuracy"],
                "round_accuracy": result["round_accuracy"],
                "train_seed": self.train_seed(index)}

    def shard_graphs(self, shard: dict[str, Any]) -> dict[str, list[NeuronGraph]]:
        graphs: dict[str, list[NeuronGraph]] = {split: [] for split in SPLITS}
        names = weight_names(self.imp_config.widths, self.imp_config.arch)
        for r, network in enumerate(shard["networks"].tolist()):
            graph = network_graph(self.layout, [w[r] for w in shard["weights"]],
                                  [b[r] for b in shard["biases"]])
            graph.ticket_mask = masks_to_entry_mask(
                {name: m[r] for name, m in zip(names, shard["masks"])}, self.layout)
            graph.random_mask = masks_to_entry_mask(
                {name: m[r] for name, m in zip(names, shard["random_masks"])}, self.layout)
            for key in ("dense_accuracy", "imp_accuracy", "random_accuracy"):
                graph[key] = shard[key][r].view(1).float()
            graph.round_accuracy = shard["round_accuracy"][:, r].view(1, -1).float()
            graph.train_seed = torch.tensor([int(shard["train_seed"])])
            graph.network_id = torch.tensor([network])
            graphs[self.network_splits[network]].append(graph)
        return graphs


def network_graph(layout: Layout, weights: Sequence[torch.Tensor],
                  biases: Sequence[torch.Tensor]) -> NeuronGraph:
    """The raw graph of one network of ``layout`` from its weights and biases."""
    state = {}
    for layer, weight, bias in zip(layout.weight_layers(), weights, biases):
        state[f"{layer.name}.weight"] = weight
        state[f"{layer.name}.bias"] = bias
    return from_state_dict(state, layout)


__all__ = ["DigitsTickets", "SIZES", "DEFAULT_WIDTHS", "network_graph"]
