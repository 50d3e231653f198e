"""Readers for weight datasets the user already has on disk.

- :func:`read_small_cnn_zoo`: the Small CNN Zoo of Unterthiner et al.,
  "Predicting Neural Network Accuracy from Weights" (arXiv 2002.11448):
  ``weights.npy`` (one row per checkpoint, every parameter of the network
  flattened in TensorFlow order), ``layout.csv`` (which columns hold which
  variable) and ``metrics.csv.gz`` / ``metrics.csv`` (one row per
  checkpoint: test accuracy, train accuracy, step, ``config.*``
  hyper-parameters).
- :func:`read_siren_folder`: folders of SIREN state dicts, one ``.pth`` per
  network with the class label in the path, as released with DWSNets
  (Navon et al., 2023) and used by NFN (Zhou et al., 2023), e.g.
  ``mnist_png_training_2_23646/checkpoints/model_final.pth`` (label 2).

Both return lists of raw :class:`~nft_pyg.NeuronGraph` and raise
:class:`MalformedFileError` naming the file and what is wrong with it.
Nothing is unpickled: ``.pth`` files are read with ``weights_only=True``
and ``.npy`` files with ``allow_pickle=False``.
"""
from __future__ import annotations

import ast
import csv
import gzip
import json
import math
import os
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..graph.convert import from_state_dict, layout_of
from ..graph.layout import Layout
from ..graph.neuron_graph import NeuronGraph
from ..utils.io import CorruptFileError, safe_load

__all__ = ["MalformedFileError", "read_small_cnn_zoo", "small_cnn_zoo_layout",
           "tf_to_torch_state_dict", "read_siren_folder", "siren_layout", "label_from_path"]


class MalformedFileError(ValueError):
    """A file of a published dataset format does not have the expected form."""


# --- Small CNN Zoo ---------------------------------------------------------------
LAYOUT_COLUMNS = ("varname", "start_idx", "end_idx", "shape")
#: ``config.activation`` values of the zoo -> torch modules
ZOO_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU,
    "elu": nn.ELU, "swish": nn.SiLU, "silu": nn.SiLU, "linear": nn.Identity,
}
_METRIC_FILES = ("metrics.csv.gz", "metrics.csv")


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", newline="") as handle:
            reader = csv.DictReader(handle)
            rows = list(reader)
            header = list(reader.fieldnames or [])
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as err:
        raise MalformedFileError(f"{path}: not a readable CSV file ({err})") from None
    return header, rows


def _require_columns(path: Path, header: Sequence[str], needed: Iterable[str]) -> None:
    missing = [name for name in needed if name not in header]
    if missing:
        raise MalformedFileError(f"{path}: missing column(s) {missing}; found {list(header)}")


def _parse_shape(path: Path, line: int, text: str) -> tuple[int, ...]:
    try:
        shape = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError):
        shape = None
    if isinstance(shape, int):
        shape = (shape,)
    if not isinstance(shape, (tuple, list)) or not all(isinstance(n, int) and n > 0
                                                        for n in shape):
        raise MalformedFileError(f"{path}, row {line}: shape {text!r} is not a tuple of "
                                 "positive integers")
    return tuple(shape)


def _zoo_variables(path: Path) -> dict[str, dict[str, Any]]:
    """``layout.csv`` -> {varname: {"start", "end", "shape"}} with checks."""
    header, rows = _read_csv(path)
    _require_columns(path, header, LAYOUT_COLUMNS)
    if not rows:
        raise MalformedFileError(f"{path}: no variables listed")
    variables = {}
    for line, row in enumerate(rows, start=2):
        try:
            start, end = int(row["start_idx"]), int(row["end_idx"])
        except (TypeError, ValueError):
            raise MalformedFileError(f"{path}, row {line}: start_idx/end_idx "
                                     f"{row['start_idx']!r}/{row['end_idx']!r} are not "
                                     "integers") from None
        shape = _parse_shape(path, line, row["shape"] or "")
        if end - start != math.prod(shape) or start < 0:
            raise MalformedFileError(f"{path}, row {line}: '{row['varname']}' spans columns "
                                     f"[{start}, {end}) but its shape {shape} has "
                                     f"{math.prod(shape)} entries")
        variables[row["varname"]] = {"start": start, "end": end, "shape": shape}
    return variables


def _zoo_layers(path: Path, variables: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Group the variables into layers (kernel + bias), in network order."""
    layers: dict[str, dict[str, Any]] = {}
    for name, var in variables.items():
        match = re.fullmatch(r"(.*)/(kernel|bias)(:\d+)?", name)
        if match is None:
            raise MalformedFileError(f"{path}: variable '{name}' is neither a '<layer>/kernel' "
                                     "nor a '<layer>/bias'")
        layers.setdefault(match.group(1), {"name": match.group(1)})[match.group(2)] = var
    for layer in layers.values():
        if "kernel" not in layer:
            raise MalformedFileError(f"{path}: layer '{layer['name']}' has a bias but no kernel")
        rank = len(layer["kernel"]["shape"])
        if rank not in (2, 4):
            raise MalformedFileError(f"{path}: kernel of '{layer['name']}' has shape "
                                     f"{layer['kernel']['shape']}; expected (h, w, in, out) "
                                     "for a conv or (in, out) for a dense layer")
        out = layer["kernel"]["shape"][-1]
        if "bias" in layer and layer["bias"]["shape"] != (out,):
            raise MalformedFileError(f"{path}: bias of '{layer['name']}' has shape "
                                     f"{layer['bias']['shape']}, expected ({out},)")
    ordered = sorted(layers.values(), key=lambda layer: layer["kernel"]["start"])
    kinds = [len(layer["kernel"]["shape"]) for layer in ordered]
    if kinds != sorted(kinds, reverse=True):
        raise MalformedFileError(f"{path}: a conv layer follows a dense layer; expected "
                                 "conv layers, global average pooling, then dense layers")
    return ordered


def small_cnn_zoo_layout(layers: list[dict[str, Any]], activation: str,
                         conv_stride: int = 2, conv_padding: int = 0) -> Layout:
    """The :class:`Layout` of a zoo CNN: convs, global average pool, dense layers.

    The zoo's Keras network is ``Conv2D(k, strides=2, padding="valid",
    activation=a)`` layers, ``GlobalAveragePooling2D``, ``Dense``; this is
    ``Conv2d(stride=2, padding=0)`` + activation, ``AdaptiveAvgPool2d(1)``,
    ``Flatten``, ``Linear`` in torch (Keras' dropout does not change the
    weights and is left out). Step names are the TF layer names.
    """
    if activation not in ZOO_ACTIVATIONS:
        raise ValueError(f"Small CNN Zoo: activation {activation!r} is not supported; "
                         f"known: {sorted(ZOO_ACTIVATIONS)}")
    children: OrderedDict[str, nn.Module] = OrderedDict()
    for index, layer in enumerate(layers):
        name = _step_name(layer["name"])
        shape = layer["kernel"]["shape"]
        last = index == len(layers) - 1
        if len(shape) == 4:
            children[name] = nn.Conv2d(shape[2], shape[3], tuple(shape[:2]), stride=conv_stride,
                                       padding=conv_padding, bias="bias" in layer)
            if last or len(layers[index + 1]["kernel"]["shape"]) == 2:
                children[f"{name}_act"] = ZOO_ACTIVATIONS[activation]()
                children["global_pool"] = nn.AdaptiveAvgPool2d(1)
                children["flatten"] = nn.Flatten()
                continue
        else:
            children[name] = nn.Linear(shape[0], shape[1], bias="bias" in layer)
        if not last:
            children[f"{name}_act"] = ZOO_ACTIVATIONS[activation]()
    return layout_of(nn.Sequential(children))


def _step_name(tf_name: str) -> str:
    return re.sub(r"\W", "_", tf_name)


def tf_to_torch_state_dict(row: np.ndarray, layers: list[dict[str, Any]]
                           ) -> OrderedDict[str, torch.Tensor]:
    """One flattened zoo network -> a torch state dict (exact copies).

    Conv kernels go from TF ``(h, w, in, out)`` to torch ``(out, in, h, w)``,
    dense kernels from ``(in, out)`` to ``(out, in)``. TF and torch convs are
    both cross-correlations, so no kernel flip is needed.
    """
    state = OrderedDict()
    for layer in layers:
        name = _step_name(layer["name"])
        kernel = layer["kernel"]
        values = torch.from_numpy(np.array(row[kernel["start"]:kernel["end"]]))
        values = values.reshape(kernel["shape"])
        order = (3, 2, 0, 1) if values.dim() == 4 else (1, 0)
        state[f"{name}.weight"] = values.permute(order).contiguous()
        if "bias" in layer:
            bias = layer["bias"]
            state[f"{name}.bias"] = torch.from_numpy(np.array(row[bias["start"]:bias["end"]]))
    return state


def _load_npy(path: Path) -> np.ndarray:
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise MalformedFileError(f"{path}: not a readable .npy array, truncated or "
                                 f"corrupt ({err})") from None
    if array.ndim != 2:
        raise MalformedFileError(f"{path}: expected a 2-D array [networks, parameters], got "
                                 f"shape {array.shape}")
    if not np.issubdtype(array.dtype, np.floating):
        raise MalformedFileError(f"{path}: expected floating weights, got dtype {array.dtype}")
    return array


def _metrics_file(folder: Path) -> Path:
    for name in _METRIC_FILES:
        if (folder / name).exists():
            return folder / name
    raise FileNotFoundError(f"{folder}: no {' or '.join(_METRIC_FILES)}")


def _float(value: str | None) -> float:
    try:
        return float(value) if value not in (None, "") else math.nan
    except ValueError:
        return math.nan


def read_small_cnn_zoo(folder: str | os.PathLike, rows: Sequence[int] | slice | None = None,
                       activation: str | None = None, conv_stride: int = 2,
                       conv_padding: int = 0) -> list[NeuronGraph]:
    """Read (part of) a Small CNN Zoo folder into neuron graphs.

    Args:
        folder: holds ``weights.npy``, ``layout.csv`` and ``metrics.csv.gz``
            (or ``metrics.csv``), as released by Unterthiner et al. (2020).
        rows: which checkpoints (rows of ``weights.npy``) to read; default
            all. The array is memory-mapped, so reading a few rows of the
            270k is cheap.
        activation: the networks' activation; default: each row's
            ``config.activation`` column.
        conv_stride, conv_padding: the zoo's convs (stride 2, "valid").

    Returns:
        One raw graph per row with ``y`` ``[1]`` (test accuracy),
        ``train_accuracy`` ``[1]`` (NaN if absent), ``step`` ``[1]`` (-1 if
        absent), ``row`` ``[1]`` (row index in ``weights.npy``) and
        ``metrics`` (the row of the metrics file as a JSON string).

    Raises:
        FileNotFoundError: a file is missing.
        MalformedFileError: a file is malformed (missing column, shapes that
            do not add up, truncated array, row counts that differ).
    """
    folder = Path(folder)
    layout_path = folder / "layout.csv"
    if not layout_path.exists():
        raise FileNotFoundError(f"{layout_path}: no such file")
    variables = _zoo_variables(layout_path)
    layers = _zoo_layers(layout_path, variables)
    weights_path = folder / "weights.npy"
    weights = _load_npy(weights_path)
    needed = max(var["end"] for var in variables.values())
    if weights.shape[1] != needed:
        raise MalformedFileError(f"{weights_path}: rows have {weights.shape[1]} parameters but "
                                 f"{layout_path} lists {needed}")
    metrics_path = _metrics_file(folder)
    header, metric_rows = _read_csv(metrics_path)
    _require_columns(metrics_path, header, ["test_accuracy"])
    if activation is None:
        _require_columns(metrics_path, header, ["config.activation"])
    if len(metric_rows) != weights.shape[0]:
        raise MalformedFileError(f"{metrics_path}: {len(metric_rows)} rows but {weights_path} "
                                 f"has {weights.shape[0]} networks")
    indices = range(weights.shape[0])
    indices = indices[rows] if isinstance(rows, slice) else \
        indices if rows is None else [indices[int(i)] for i in rows]

    layouts: dict[str, Layout] = {}
    graphs = []
    for index in indices:
        metrics = metric_rows[index]
        act = activation or metrics["config.activation"]
        if act not in layouts:
            layouts[act] = small_cnn_zoo_layout(layers, act, conv_stride, conv_padding)
        state = tf_to_torch_state_dict(weights[index], layers)
        graph = from_state_dict(state, layouts[act], nonfinite="keep")
        step = _float(metrics.get("step"))
        graph.y = torch.tensor([_float(metrics["test_accuracy"])])
        graph.train_accuracy = torch.tensor([_float(metrics.get("train_accuracy"))])
        graph.step = torch.tensor([int(step) if math.isfinite(step) else -1])
        graph.row = torch.tensor([index])
        graph.metrics = json.dumps(metrics, sort_keys=True)
        graphs.append(graph)
    return graphs


# --- SIREN folders ---------------------------------------------------------------
_LABELLED_DIR = re.compile(r".*_(\d+)_\d+")


def label_from_path(path: Path) -> int:
    """The class label of a released INR, read from its path.

    Understands the DWSNets / NFN naming ``<prefix>_<label>_<index>`` of the
    network's folder (``mnist_png_training_2_23646/checkpoints/
    model_final.pth`` -> 2) and class folders named by the label
    (``3/inr_17.pth`` -> 3); the nearest matching ancestor wins.
    """
    for part in reversed(path.parent.parts):
        if part.isdigit():
            return int(part)
        match = _LABELLED_DIR.fullmatch(part)
        if match:
            return int(match.group(1))
    raise MalformedFileError(f"{path}: no class label in the path (expected a folder named "
                             "'<prefix>_<label>_<index>' or '<label>'); pass label_fn=")


def siren_layout(state_dict: dict[str, torch.Tensor], w0: float = 30.0,
                 w0_first: float | None = None, where: str = "state dict") -> Layout:
    """The :class:`Layout` of a SIREN state dict: its 2-D ``*.weight`` entries,
    in order, are the linear layers; a sine follows each but the last."""
    names = [key[: -len(".weight")] for key, value in state_dict.items()
             if key.endswith(".weight") and isinstance(value, torch.Tensor) and value.dim() == 2]
    if not names:
        raise MalformedFileError(f"{where}: no 2-D '<layer>.weight' tensor; not a SIREN "
                                 "state dict")
    unknown = [key for key in state_dict
               if not any(key in (f"{n}.weight", f"{n}.bias") for n in names)]
    if unknown:
        raise MalformedFileError(f"{where}: entries {unknown[:5]} are not weights or biases "
                                 "of linear layers; not a SIREN state dict")
    steps = []
    for index, name in enumerate(names):
        out, inp = state_dict[f"{name}.weight"].shape
        steps.append({"kind": "linear", "name": name, "in": inp, "out": out,
                      "bias": f"{name}.bias" in state_dict})
        if index < len(names) - 1:
            frequency = w0 if index or w0_first is None else w0_first
            steps.append({"kind": "act", "name": f"{name}.sine", "act": "SINE",
                          "params": {"w0": float(frequency)}})
    try:
        return Layout(steps)
    except ValueError as err:
        raise MalformedFileError(f"{where}: {err}") from None


def read_siren_folder(root: str | os.PathLike, pattern: str = "**/*.pth",
                      label_fn: Callable[[Path], int] = label_from_path, w0: float = 30.0,
                      w0_first: float | None = None, limit: int | None = None
                      ) -> list[NeuronGraph]:
    """Read a folder of SIREN state dicts (one ``.pth`` per network).

    Args:
        root: the dataset folder.
        pattern: glob of the network files below ``root`` (sorted).
        label_fn: path -> class label (default :func:`label_from_path`).
        w0, w0_first: the sine frequencies (30 in DWSNets / NFN; they are
            not stored in the files). ``w0_first`` defaults to ``w0``.
        limit: read at most this many files.

    Returns:
        One raw graph per file with ``y`` ``[1]`` (label, long) and ``path``
        (relative to ``root``). DWSNets' INRs add 0.5 to their output; that
        constant is not a parameter and is not in the graph.

    Raises:
        FileNotFoundError: ``root`` does not exist or holds no matching file.
        MalformedFileError: a file is not a weights-only state dict of
            linear layers, or networks of one folder differ in architecture.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder")
    paths = sorted(root.glob(pattern))[:limit]
    if not paths:
        raise FileNotFoundError(f"{root}: no file matches {pattern!r}")
    graphs, layout = [], None
    for path in paths:
        try:
            state = safe_load(path, expect=dict)
        except CorruptFileError as err:
            raise MalformedFileError(f"{err}; expected a state dict saved with "
                                     "torch.save(module.state_dict())") from None
        if not all(isinstance(value, torch.Tensor) for value in state.values()):
            kinds = sorted({type(v).__name__ for v in state.values()} - {"Tensor"})
            raise MalformedFileError(f"{path}: holds non-tensor values ({kinds}); not a "
                                     "state dict")
        this_layout = siren_layout(state, w0, w0_first, where=str(path))
        if layout is None:
            layout = this_layout
        elif this_layout != layout:
            raise MalformedFileError(f"{path}: architecture {this_layout} differs from the "
                                     f"first file's {layout}")
        try:
            graph = from_state_dict(state, layout)
        except (KeyError, ValueError, TypeError) as err:
            raise MalformedFileError(f"{path}: {err}") from None
        graph.y = torch.tensor([int(label_fn(path))])
        graph.path = path.relative_to(root).as_posix()
        graphs.append(graph)
    return graphs
