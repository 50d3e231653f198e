"""Shared pieces of the benchmark suite: networks, batches, operators, timing.

Every comparison is made inside one process on the same inputs, with the
repetitions of the compared variants interleaved (A, B, C, A, B, C, ...) so
that load from other processes hits all of them alike; results are medians
and are reported as ratios. ``nfn`` (the published reference implementation,
``pip install nft_pyg[bench]``) is imported here only, never by the package.
"""
from __future__ import annotations

import inspect
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout
import nft_pyg
from nft_pyg.graph.accessors import is_input_neuron
from nft_pyg.graph.convert import from_modules
from nft_pyg.graph.modules import Sine
from nft_pyg.tensor.weight_space import WeightSpace

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
STATIC = ROOT / "docs" / "_static"


# --- networks ------------------------------------------------------------------
def siren(widths=(2, 32, 32, 1), w0: float = 30.0) -> nn.Sequential:
    """A SIREN ``widths[0]-...-widths[-1]`` (Sine after every hidden layer)."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(widths) - 2:
            layers.append(Sine(w0))
    return nn.Sequential(*layers)


def small_cnn() -> nn.Sequential:
    """The Digits CNN zoo architecture (one network of the zoo)."""
    return nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Conv2d(8, 16, 3), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))


def mlp(widths) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def num_weights(widths) -> int:
    return sum(a * b + b for a, b in zip(widths[:-1], widths[1:]))


# --- feature graphs and their dense / nfn views ---------------------------------
class Case:
    """``B`` networks of one layout as a feature graph with ``C`` channels.

    ``x`` / ``edge_attr`` are random features (what an encoder would output);
    ``ws`` holds the same numbers as a folded :class:`WeightSpace`, the input
    of the dense twins and (as ``nfn.common.WeightSpaceFeatures``) of ``nfn``.
    Kernel positions of a CNN are folded into the channels, so all three
    paths see ``C`` channels on every weight layer.
    """

    def __init__(self, name: str, networks: list[nn.Module], channels: int, seed: int = 0):
        self.name, self.channels = name, channels
        self.batch = from_modules(networks)
        generator = torch.Generator().manual_seed(seed)
        num_nodes, num_edges = self.batch.num_nodes, self.batch.edge_index.size(1)
        self.x = torch.randn(num_nodes, channels, generator=generator)
        self.x[is_input_neuron(self.batch)] = 0.0     # no biases there
        self.edge_attr = torch.randn(num_edges, channels, generator=generator)
        self.ws = WeightSpace.from_features(self.batch, self.x, self.edge_attr)
        layout = self.batch.get_example(0).layout_obj
        self.sizes = layout.neuron_layer_sizes
        self.num_layers = len(self.sizes) - 1
        self.num_weights = sum(w[0, 0].numel() + b[0, 0].numel()
                               for w, b in zip(self.ws.weights, self.ws.biases))

    def pruned(self, fraction: float, seed: int = 0) -> PrunedCase:
        return PrunedCase(self, fraction, seed)


def keep_mask(batch, fraction: float, seed: int = 0) -> torch.Tensor:
    """``[E]`` bool: a random ``1 - fraction`` of the edges of every weight layer
    of every graph, at least one per layer (as magnitude pruning per layer would)."""
    generator = torch.Generator().manual_seed(seed)
    num_layers = int(batch.edge_layer.max())
    group = batch.batch[batch.edge_index[0]] * num_layers + batch.edge_layer - 1
    score = torch.rand(group.numel(), generator=generator)
    order = torch.sort(score).indices
    order = order[torch.sort(group[order], stable=True).indices]   # by group, then score
    sizes = torch.bincount(group, minlength=int(group.max()) + 1)
    starts = torch.cumsum(sizes, 0) - sizes
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel()) - starts[group[order]]
    kept = (sizes.double() * (1.0 - fraction)).round().long().clamp(min=1)
    return rank < kept[group]


class PrunedCase:
    """``case`` with a ``fraction`` of each layer's edges removed from the graph
    (the dense paths keep computing on the full tensors, pruned entries zero)."""

    def __init__(self, case: Case, fraction: float, seed: int = 0):
        self.name, self.channels, self.fraction = case.name, case.channels, fraction
        self.sizes, self.num_layers = case.sizes, case.num_layers
        keep = keep_mask(case.batch, fraction, seed)
        batch = case.batch.clone()
        for key in ("edge_index",):
            batch[key] = batch[key][:, keep]
        for key in ("edge_attr", "edge_layer", "edge_kind"):
            batch[key] = batch[key][keep]
        self.batch, self.x, self.edge_attr = batch, case.x, case.edge_attr[keep]
        self.num_edges = int(keep.sum())


def requires_grad(case) -> tuple[torch.Tensor, torch.Tensor, WeightSpace | None]:
    x = case.x.clone().requires_grad_()
    edge_attr = case.edge_attr.clone().requires_grad_()
    ws = getattr(case, "ws", None)
    if ws is not None:
        ws = WeightSpace([w.clone().requires_grad_() for w in ws.weights],
                         [b.clone().requires_grad_() for b in ws.biases], ws.layout)
    return x, edge_attr, ws


def nfn_spec(sizes):
    from nfn.common import ArraySpec, NetworkSpec
    return NetworkSpec([ArraySpec((b, a)) for a, b in zip(sizes[:-1], sizes[1:])],
                       [ArraySpec((b,)) for b in sizes[1:]])


# --- operators ----------------------------------------------------------------------
OPERATORS = ("NP", "HNP", "NFT")
HEADS = 8


def build_operator(kind: str, channels: int, sizes) -> nn.Module:
    from nft_pyg.nn.conv.np_conv import NPConv
    num_layers = len(sizes) - 1
    if kind == "NP":
        return NPConv(channels, channels, num_layers)
    if kind == "HNP":
        from nft_pyg.nn.conv.hnp_conv import HNPConv
        return HNPConv(channels, channels, num_layers, sizes[0], sizes[-1])
    if kind == "NFT":
        from nft_pyg.nn.conv.nft_attention import NFTAttention
        return NFTAttention(channels, heads=HEADS)
    if kind == "Pointwise":
        from nft_pyg.nn.conv.pointwise_conv import PointwiseConv
        return PointwiseConv(channels, channels, num_layers)
    raise ValueError(kind)


def build_reference(kind: str, channels: int, sizes) -> nn.Module:
    """The ``nfn`` layer of the same kind and size."""
    from nfn.layers import HNPLinear, NPAttention, NPLinear
    spec = nfn_spec(sizes)
    if kind == "NP":
        return NPLinear(spec, channels, channels)
    if kind == "HNP":
        return HNPLinear(spec, channels, channels)
    if kind == "NFT":
        return NPAttention(spec, channels, num_heads=HEADS)
    raise ValueError(kind)


def _total(tensors) -> torch.Tensor:
    return sum(t.sum() for t in tensors)


def graph_step(op: nn.Module, case) -> Callable[[], None]:
    """Forward + backward of the graph path (gradients w.r.t. the features). The
    batch's ``WeightGraphIndex`` is built once, outside the timed step, as a
    model builds it once per batch for all its layers."""
    from nft_pyg.nn.structure import WeightGraphIndex
    x, edge_attr, _ = requires_grad(case)
    batch = case.batch
    index = WeightGraphIndex.from_data(batch)
    pyg_style = len(inspect.signature(op.forward).parameters) == 4

    def step():
        x.grad = edge_attr.grad = None
        if pyg_style:   # conv(x, edge_index, edge_attr, index)
            x_out, edge_out = op(x, batch.edge_index, edge_attr, index)[:2]
        else:
            x_out, edge_out = op(x, edge_attr, batch)[:2]
        (x_out.sum() + edge_out.sum()).backward()
    return step


def dense_step(op: nn.Module, case: Case) -> Callable[[], None]:
    _, _, ws = requires_grad(case)

    def step():
        out = op.forward_dense(ws)
        _total(out.weights + out.biases).backward()
    return step


def reference_step(ref: nn.Module, case: Case) -> Callable[[], None]:
    from nfn.common import WeightSpaceFeatures
    _, _, ws = requires_grad(case)
    features = WeightSpaceFeatures(ws.weights, ws.biases)

    def step():
        out = ref(features)
        _total(list(out.weights) + list(out.biases)).backward()
    return step


# --- timing -------------------------------------------------------------------------
def interleaved(fns: dict[str, Callable[[], None]], repeats: int,
                warmup: int = 1) -> dict[str, dict[str, float]]:
    """Median / min / max seconds of each function, runs interleaved A, B, ... A, B."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    cpu: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            times[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    # wall time is what a user waits; on a loaded machine the process's CPU time
    # (single-threaded work) is closer to what the same run takes on an idle one
    return {name: {"median": statistics.median(t), "min": min(t), "max": max(t),
                   "cpu_median": statistics.median(cpu[name]), "repeats": len(t)}
            for name, t in times.items()}


def machine() -> dict[str, object]:
    info = {"python": sys.version.split()[0], "torch": torch.__version__,
            "platform": platform.platform(), "processor": platform.processor() or "",
            "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
            "nft_pyg": nft_pyg.__version__}
    try:
        from importlib.metadata import version

        info["nfn"] = version("nfn")
    except Exception:  # the reference is optional for the conversion benchmark
        info["nfn"] = None
    try:
        with open("/proc/cpuinfo") as handle:
            names = [line.split(":", 1)[1].strip() for line in handle
                     if line.startswith("model name")]
        info["cpu"] = names[0] if names else ""
    except OSError:
        info["cpu"] = ""
    try:
        info["load_average"] = os.getloadavg()
    except OSError:
        pass
    return info


def result_name(name: str, quick: bool = False) -> str:
    """Quick runs never overwrite the full results the docs are built from."""
    return f"{name}_quick" if quick else name


def save(name: str, payload: dict, quick: bool = False) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{result_name(name, quick)}.json"
    path.write_text(json.dumps(payload, indent=1, default=str))
    return path


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    def cell(value):
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
        return str(value)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def single_thread() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
