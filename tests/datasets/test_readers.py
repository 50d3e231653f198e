"""Readers of published formats: tiny files written in exactly those formats."""
import csv
import gzip
import json
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nft_pyg import to_module
from nft_pyg.datasets.readers import (
    MalformedFileError,
    label_from_path,
    read_siren_folder,
    read_small_cnn_zoo,
)
from nft_pyg.graph.types import Activation, EdgeKind

# --- Small CNN Zoo -------------------------------------------------------------------
TF_LAYERS = (("sequential/conv2d", (3, 3, 1, 4)), ("sequential/conv2d_1", (3, 3, 4, 5)),
             ("sequential/conv2d_2", (3, 3, 5, 4)), ("sequential/dense", (4, 10)))


def tf_networks(count, seed=0):
    """Random zoo networks as TF-layout numpy arrays."""
    rng = np.random.default_rng(seed)
    return [{name: (rng.standard_normal(shape), rng.standard_normal(shape[-1]))
             for name, shape in TF_LAYERS} for _ in range(count)]


def write_zoo(folder: Path, nets, activations, gz=True):
    """weights.npy / layout.csv / metrics.csv(.gz) as released: variables listed in
    alphabetical order (bias before kernel), each row one flattened network."""
    folder.mkdir(parents=True, exist_ok=True)
    entries, start = [], 0
    for name, shape in TF_LAYERS:
        for kind, var_shape in (("bias", (shape[-1],)), ("kernel", shape)):
            size = int(np.prod(var_shape))
            entries.append((f"{name}/{kind}:0", start, start + size, var_shape))
            start += size
    rows = []
    for net in nets:
        flat = []
        for name, _, _, _ in entries:
            layer, kind = name.rsplit("/", 1)
            kernel, bias = net[layer]
            flat.append((bias if kind.startswith("bias") else kernel).reshape(-1))
        rows.append(np.concatenate(flat))
    np.save(folder / "weights.npy", np.stack(rows))
    with open(folder / "layout.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["varname", "start_idx", "end_idx", "size", "shape"])
        for name, begin, end, shape in entries:
            writer.writerow([name, begin, end, end - begin, str(shape)])
    opener = gzip.open if gz else open
    with opener(folder / ("metrics.csv.gz" if gz else "metrics.csv"), "wt", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["config.activation", "config.learning_rate", "step", "test_accuracy",
                         "train_accuracy"])
        for i, act in enumerate(activations):
            writer.writerow([act, 0.01 * (i + 1), 100 * i, 0.5 + 0.1 * i, 0.6 + 0.1 * i])


def tf_forward(net, images, activation):
    """The zoo's Keras network written out in torch on NHWC images."""
    act = {"relu": F.relu, "tanh": torch.tanh}[activation]
    h = images.permute(0, 3, 1, 2)
    for name, _ in TF_LAYERS[:-1]:
        kernel, bias = (torch.from_numpy(a) for a in net[name])
        # TF conv: out[y, x, o] = sum_{i, j, c} in[2y + i, 2x + j, c] * k[i, j, c, o]
        patches = h.unfold(2, 3, 2).unfold(3, 3, 2)  # [B, C, H', W', 3, 3]
        h = act(torch.einsum("bcyxij,ijco->boyx", patches, kernel) + bias.view(1, -1, 1, 1))
    kernel, bias = (torch.from_numpy(a) for a in net[TF_LAYERS[-1][0]])
    return h.mean(dim=(2, 3)) @ kernel + bias


def test_small_cnn_zoo_matches_the_tf_network(tmp_path):
    nets = tf_networks(3)
    activations = ["relu", "tanh", "relu"]
    write_zoo(tmp_path, nets, activations)
    graphs = read_small_cnn_zoo(tmp_path)
    assert len(graphs) == 3
    images = torch.randn(4, 16, 16, 1, dtype=torch.float64)
    for net, act, graph in zip(nets, activations, graphs):
        module = to_module(graph).eval()
        expected = tf_forward(net, images, act)
        assert torch.allclose(module(images.permute(0, 3, 1, 2)), expected, atol=1e-10)
    graph = graphs[1]
    assert graph.layout_obj.neuron_layer_sizes == [1, 4, 5, 4, 10]
    assert set(graph.node_act[(graph.node_layer > 0) & (graph.node_layer < 4)].tolist()) == \
        {int(Activation.TANH)}
    assert (graph.edge_kind[graph.edge_layer < 4] == int(EdgeKind.CONV)).all()
    # exact copy of one kernel entry: TF k[i, j, c, o] is torch weight[o, c, i, j]
    kernel = nets[1]["sequential/conv2d_1"][0]
    weight = to_module(graph)[2].weight
    assert weight[3, 2, 0, 1].item() == kernel[0, 1, 2, 3]
    assert graph.y.item() == pytest.approx(0.6)
    assert graph.train_accuracy.item() == pytest.approx(0.7)
    assert graph.step.item() == 100 and graph.row.item() == 1
    assert json.loads(graph.metrics)["config.learning_rate"] == "0.02"


def test_small_cnn_zoo_rows_and_plain_csv(tmp_path):
    nets = tf_networks(4, seed=1)
    write_zoo(tmp_path, nets, ["relu"] * 4, gz=False)
    graphs = read_small_cnn_zoo(tmp_path, rows=[3, 1])
    assert [g.row.item() for g in graphs] == [3, 1]
    assert torch.equal(to_module(graphs[0])[0].bias,
                       torch.from_numpy(nets[3]["sequential/conv2d"][1]))
    assert [g.row.item() for g in read_small_cnn_zoo(tmp_path, rows=slice(1, 3))] == [1, 2]


def _rewrite_csv(path: Path, edit):
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows(edit(rows))


def test_small_cnn_zoo_missing_layout_column(tmp_path):
    write_zoo(tmp_path, tf_networks(1), ["relu"])
    _rewrite_csv(tmp_path / "layout.csv", lambda rows: [row[:4] for row in rows])  # no shape
    with pytest.raises(MalformedFileError, match=r"layout.csv: missing column\(s\) \['shape'\]"):
        read_small_cnn_zoo(tmp_path)


def test_small_cnn_zoo_missing_metrics_column(tmp_path):
    write_zoo(tmp_path, tf_networks(1), ["relu"], gz=False)
    _rewrite_csv(tmp_path / "metrics.csv", lambda rows: [row[:3] for row in rows])
    with pytest.raises(MalformedFileError, match="missing column.*test_accuracy"):
        read_small_cnn_zoo(tmp_path)


def test_small_cnn_zoo_wrong_shapes(tmp_path):
    write_zoo(tmp_path, tf_networks(1), ["relu"])
    _rewrite_csv(tmp_path / "layout.csv",
                 lambda rows: [rows[0]] + [r[:4] + ["(3, 3, 2, 4)"] if r[0].endswith(
                     "conv2d/kernel:0") else r for r in rows[1:]])
    with pytest.raises(MalformedFileError, match="spans columns .* has 72 entries"):
        read_small_cnn_zoo(tmp_path)
    write_zoo(tmp_path, tf_networks(1), ["relu"])
    np.save(tmp_path / "weights.npy", np.zeros((1, 100)))
    with pytest.raises(MalformedFileError, match="rows have 100 parameters"):
        read_small_cnn_zoo(tmp_path)
    np.save(tmp_path / "weights.npy", np.zeros(100))
    with pytest.raises(MalformedFileError, match="expected a 2-D array"):
        read_small_cnn_zoo(tmp_path)


def test_small_cnn_zoo_truncated_array_and_row_counts(tmp_path):
    write_zoo(tmp_path, tf_networks(2), ["relu", "relu"])
    data = (tmp_path / "weights.npy").read_bytes()
    (tmp_path / "weights.npy").write_bytes(data[: len(data) - 50])
    with pytest.raises(MalformedFileError, match="weights.npy: not a readable .npy array"):
        read_small_cnn_zoo(tmp_path)
    write_zoo(tmp_path, tf_networks(2), ["relu", "relu"])
    np.save(tmp_path / "weights.npy", np.load(tmp_path / "weights.npy")[:1])
    with pytest.raises(MalformedFileError, match="2 rows but .* has 1 networks"):
        read_small_cnn_zoo(tmp_path)


def test_small_cnn_zoo_missing_file_and_bad_activation(tmp_path):
    with pytest.raises(FileNotFoundError, match="layout.csv"):
        read_small_cnn_zoo(tmp_path)
    write_zoo(tmp_path, tf_networks(1), ["selu"])
    with pytest.raises(ValueError, match="activation 'selu' is not supported"):
        read_small_cnn_zoo(tmp_path)
    assert read_small_cnn_zoo(tmp_path, activation="relu")[0].node_act[5] == int(Activation.RELU)


# --- SIREN folders (DWSNets / NFN releases) -----------------------------------------------
def dwsnets_state_dict(generator):
    """The state dict of DWSNets' INR: seq.0, seq.1 are Siren layers holding their
    own weight/bias, seq.2 is an nn.Linear."""
    return OrderedDict([("seq.0.weight", torch.randn(32, 2, generator=generator)),
                        ("seq.0.bias", torch.randn(32, generator=generator)),
                        ("seq.1.weight", torch.randn(32, 32, generator=generator)),
                        ("seq.1.bias", torch.randn(32, generator=generator)),
                        ("seq.2.weight", torch.randn(1, 32, generator=generator)),
                        ("seq.2.bias", torch.randn(1, generator=generator))])


def write_siren_folder(root: Path, labels):
    generator = torch.Generator().manual_seed(0)
    states = []
    for index, label in enumerate(labels):
        split = "training" if index % 2 else "testing"
        path = root / f"mnist_png_{split}_{label}_{index}" / "checkpoints" / "model_final.pth"
        path.parent.mkdir(parents=True)
        state = dwsnets_state_dict(generator)
        torch.save(state, path)
        states.append((path, state))
    return states


def test_siren_folder_round_trip(tmp_path):
    states = write_siren_folder(tmp_path, [2, 7, 0])
    graphs = read_siren_folder(tmp_path)
    assert len(graphs) == 3
    by_path = {g.path: g for g in graphs}
    coords = torch.rand(10, 2) * 2 - 1
    for path, state in states:
        graph = by_path[path.relative_to(tmp_path).as_posix()]
        assert graph.y.item() == int(path.parts[-3].split("_")[-2])
        module = to_module(graph)
        h = coords
        for i in range(2):
            h = torch.sin(30.0 * F.linear(h, state[f"seq.{i}.weight"], state[f"seq.{i}.bias"]))
        expected = F.linear(h, state["seq.2.weight"], state["seq.2.bias"])
        assert torch.equal(module(coords), expected)
    assert graphs[0].layout_obj.neuron_layer_sizes == [2, 32, 32, 1]


def test_label_from_path():
    assert label_from_path(Path("a/mnist_png_training_2_23646/checkpoints/m.pth")) == 2
    assert label_from_path(Path("cifar/7/inr_3.pth")) == 7
    with pytest.raises(MalformedFileError, match="no class label"):
        label_from_path(Path("inrs/cat/model.pth"))


def test_siren_folder_rejects_a_pickled_module(tmp_path):
    write_siren_folder(tmp_path, [1])
    bad = tmp_path / "mnist_png_training_4_9" / "checkpoints" / "model_final.pth"
    bad.parent.mkdir(parents=True)
    torch.save(torch.nn.Linear(2, 3), bad)  # a whole module: needs unpickling of code
    with pytest.raises(MalformedFileError, match="not a readable weights-only torch file"):
        read_siren_folder(tmp_path)


def test_siren_folder_rejects_non_state_dicts(tmp_path):
    path = tmp_path / "3" / "a.pth"
    path.parent.mkdir()
    torch.save([torch.zeros(2)], path)
    with pytest.raises(MalformedFileError, match="holds a list"):
        read_siren_folder(tmp_path)
    torch.save({"weight": torch.zeros(3, 2), "epoch": 3}, path)
    with pytest.raises(MalformedFileError, match="non-tensor values"):
        read_siren_folder(tmp_path)
    torch.save({"conv.weight": torch.zeros(3, 2, 3, 3)}, path)
    with pytest.raises(MalformedFileError, match="not a SIREN state dict"):
        read_siren_folder(tmp_path)
    path.write_bytes(b"truncated")
    with pytest.raises(MalformedFileError, match="a.pth: not a readable"):
        read_siren_folder(tmp_path)


def test_siren_folder_rejects_mixed_architectures(tmp_path):
    write_siren_folder(tmp_path, [1])
    other = tmp_path / "z" / "5" / "b.pth"
    other.parent.mkdir(parents=True)
    torch.save({"0.weight": torch.zeros(8, 2), "0.bias": torch.zeros(8),
                "1.weight": torch.zeros(1, 8), "1.bias": torch.zeros(1)}, other)
    with pytest.raises(MalformedFileError, match="differs from the first file"):
        read_siren_folder(tmp_path)
    with pytest.raises(FileNotFoundError, match="no file matches"):
        read_siren_folder(tmp_path, pattern="*.pt")
