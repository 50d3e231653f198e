"""DigitsCNNZoo on a tiny configuration (built in-process, one thread)."""
import pytest
import torch

from nft_pyg import to_module
from nft_pyg.datasets import DigitsCNNZoo
from nft_pyg.datasets.digits_cnn_zoo import HPARAMS, OPTIMIZERS, zoo_cnn
from nft_pyg.datasets.generated import split_counts
from nft_pyg.graph.types import Activation

TINY = dict(num_runs=6, epochs=2, checkpoints=(0, 2), widths=(4,), batch_size=128,
            num_workers=0, progress=False)


@pytest.fixture(scope="module")
def zoo_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("zoo")
    DigitsCNNZoo(root, **TINY)
    return root


def splits(root, **kwargs):
    return {split: DigitsCNNZoo(root, split=split, **{**TINY, **kwargs})
            for split in ("train", "val", "test")}


def test_sizes_and_attributes(zoo_root):
    data = splits(zoo_root)
    assert [len(data[s]) for s in ("train", "val", "test")] == [2 * n for n in split_counts(6)]
    graph = data["train"][0]
    assert graph.layout_obj.neuron_layer_sizes == [1, 4, 4, 4, 10]
    assert graph.hparams.shape == (1, len(HPARAMS))
    assert graph.y.shape == graph.train_accuracy.shape == graph.epoch.shape == (1,)
    for split in data.values():
        for graph in split:
            assert 0.0 <= graph.y.item() <= 1.0 and 0.0 <= graph.train_accuracy.item() <= 1.0
    epochs = [g.epoch.item() for g in data["train"]]
    assert set(epochs) == {0, 2} and epochs.count(0) == epochs.count(2)


def test_splits_are_by_run(zoo_root):
    data = splits(zoo_root)
    runs = {split: {g.run_id.item() for g in ds} for split, ds in data.items()}
    assert not runs["train"] & runs["val"] and not runs["train"] & runs["test"] \
        and not runs["val"] & runs["test"]
    assert runs["train"] | runs["val"] | runs["test"] == set(range(6))
    for ds in data.values():  # every run keeps all its checkpoints in its split
        for run in {g.run_id.item() for g in ds}:
            assert sorted(g.epoch.item() for g in ds if g.run_id.item() == run) == [0, 2]


def test_stored_accuracy_is_the_graphs_accuracy(zoo_root):
    """Rebuild each checkpoint from its graph and re-measure its test accuracy."""
    train = DigitsCNNZoo(zoo_root, **TINY)
    _, _, test_x, test_y = train._digits()
    for graph in train:
        module = to_module(graph).eval()
        with torch.no_grad():
            accuracy = (module(test_x).argmax(1) == test_y).float().mean().item()
        assert accuracy == pytest.approx(graph.y.item(), abs=2 / 450)
        hparams = graph.hparams[0]
        assert int(hparams[HPARAMS.index("width")]) == 4
        assert OPTIMIZERS[int(hparams[HPARAMS.index("optimizer")])] in OPTIMIZERS
        act = Activation(int(hparams[HPARAMS.index("activation")]))
        assert set(graph.node_act[graph.node_layer == 1].tolist()) == {int(act)}
    trained = [g for g in train if g.epoch.item() == 2]
    assert max(g.train_accuracy.item() for g in trained) > 0.3  # training does something


def test_determinism(zoo_root, tmp_path):
    again = DigitsCNNZoo(tmp_path, **TINY)
    first = DigitsCNNZoo(zoo_root, **TINY)
    assert len(again) == len(first)
    for a, b in zip(first, again):
        assert torch.equal(a.edge_attr, b.edge_attr) and torch.equal(a.x, b.x)
        assert torch.equal(a.y, b.y) and torch.equal(a.hparams, b.hparams)
    other = DigitsCNNZoo(tmp_path, **{**TINY, "num_runs": 5})  # another config: own files
    assert other.fingerprint != first.fingerprint


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="size must be one of"):
        DigitsCNNZoo(tmp_path, size="huge")
    with pytest.raises(ValueError, match="checkpoints must be increasing"):
        DigitsCNNZoo(tmp_path, **{**TINY, "checkpoints": (0, 5)})
    with pytest.raises(ValueError, match="split must be one of"):
        DigitsCNNZoo(tmp_path, split="dev", **TINY)


def test_zoo_cnn_shapes():
    module = zoo_cnn(8, "tanh", dropout=0.2)
    assert module(torch.zeros(3, 1, 8, 8)).shape == (3, 10)
