"""DigitsTickets (deterministic, resumable, valid graphs) and a tiny end-to-end run."""
import argparse
import json

import torch

from nft_pyg.datasets.digits_tickets import DigitsTickets
from nft_pyg.graph.pruning import entry_mask_to_masks
from nft_pyg.graph.validate import validate
from nft_pyg.tasks.tickets import METHODS, TicketsConfig, add_arguments, main, run_tickets

TINY = dict(num_networks=6, widths=(64, 8, 10), rounds=2, epochs=1, sparsity=0.8,
            num_workers=0, progress=False)


def _graphs(root, **kwargs):
    return {split: [g for g in DigitsTickets(root, split, **{**TINY, **kwargs})]
            for split in ("train", "val", "test")}


def _equal(a, b):
    return all(torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] == b[k]
               for k in a.keys())


def test_dataset_is_valid_deterministic_and_resumable(tmp_path):
    first = _graphs(tmp_path / "a", networks_per_shard=3)
    assert [len(first[s]) for s in ("train", "val", "test")] == [4, 1, 1]
    dataset = DigitsTickets(tmp_path / "a", "train", networks_per_shard=3, **TINY)
    counts = dataset.imp_config.keep_counts()
    for graph in first["train"]:
        validate(graph)
        for mask in (graph.ticket_mask, graph.random_mask):
            assert [int(m.sum()) for m in entry_mask_to_masks(mask, graph.layout).values()] \
                == counts
        assert 0 <= float(graph.imp_accuracy) <= 1 and graph.round_accuracy.shape == (1, 3)
    # a lost shard and processed files are rebuilt, identically
    dataset.shard_path(1).unlink()
    for name in dataset.processed_file_names:
        (tmp_path / "a" / "processed" / name).unlink()
    again = _graphs(tmp_path / "a", networks_per_shard=3)
    other_root = _graphs(tmp_path / "b", networks_per_shard=3)
    for split in first:
        for a, b, c in zip(first[split], again[split], other_root[split]):
            assert _equal(a, b) and _equal(a, c)


def test_tiny_end_to_end_run(tmp_path):
    config = TicketsConfig(root=str(tmp_path / "data"), num_networks=6, hidden_widths="8",
                           rounds=2, imp_epochs=1, sparsity=0.8, epochs=2, hidden_channels=4,
                           latent_channels=2, batch_size=2, num_workers=0,
                           out=str(tmp_path / "run"))
    results = run_tickets(config)
    assert set(results["test_accuracy"]) == set(METHODS)
    assert all(0.0 <= value <= 1.0 for value in results["test_accuracy"].values())
    assert 0.0 <= results["overlap_with_imp"]["cvae"] <= 1.0
    assert results["sparse_round_trip_error"] < 1e-5
    assert len(results["history"]) == 2
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["test_accuracy"] == results["test_accuracy"]
    # the command-line face gives the same numbers
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--root", config.root, "--num-networks", "6", "--hidden-widths",
                              "8", "--rounds", "2", "--imp-epochs", "1", "--sparsity", "0.8",
                              "--epochs", "2", "--hidden-channels", "4",
                              "--latent-channels", "2", "--batch-size", "2",
                              "--num-workers", "0"])
    assert main(args)["test_accuracy"] == results["test_accuracy"]


def test_tiny_cnn_end_to_end_run(tmp_path):
    config = TicketsConfig(root=str(tmp_path / "data"), arch="cnn", num_networks=5,
                           hidden_widths="2,2", rounds=1, imp_epochs=1, sparsity=0.5,
                           epochs=1, hidden_channels=4, latent_channels=2, batch_size=2,
                           num_workers=0)
    results = run_tickets(config)
    graph = DigitsTickets(config.root, "test", arch="cnn", widths=(1, 2, 2, 10),
                          num_networks=5, rounds=1, epochs=1, sparsity=0.5, num_workers=0,
                          progress=False)[0]
    validate(graph)
    assert graph.ticket_mask.shape == (graph.num_edges, 16)  # flatten edges: 4x4 maps
    assert all(0.0 <= value <= 1.0 for value in results["test_accuracy"].values())
    assert results["sparse_round_trip_error"] < 1e-5
