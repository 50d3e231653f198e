"""Scaling of each graph operator with the number of weights, and with pruning.

Each point runs in a fresh subprocess (one network, ``C`` channels, forward
+ backward): time is the median of a few steps; peak memory is the largest
resident-set size seen by a 1 ms sampler during one step, minus the RSS just
before it (all inputs built), so it counts what the operator allocates.

- width sweep: MLP ``2-w-w-1``, ``w`` from 32 to 1000 (1e3 .. 1e6 weights);
- depth sweep: MLP ``2-64-...-64-1`` with 1 .. 250 hidden 64x64 layers;
- pruning: MLP ``2-500-500-1`` (2.5e5 weights; ``2-200-200-1`` for
  NFTAttention) with 0 / 50 / 90 / 99 % of each layer's edges removed, graph
  path against the dense twin on the full tensors.

NFTAttention is swept up to ~1e5 weights only: its cost is quadratic in the
layer width by definition (attention among the ``n_{i-1} + 1 + n_{i+1}``
tokens of each layer), on the graph and on the dense path alike.

    python benchmarks/bench_scaling.py [--quick]
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHANNELS = 8
WIDTHS = (32, 100, 316, 1000)
DEPTHS = (1, 10, 100, 250)
#: attention cost grows with the square of the token count (layer width):
#: NFTAttention is swept up to these sizes only
NFT_MAX_WEIGHTS = 1.2e5
#: HNPConv's depth sweep stops here until its per-layer copy of all edge
#: features is gone (O(L * E * C), see docs/performance.md): 250 layers take
#: minutes
HNP_MAX_DEPTH_WEIGHTS = 5e5
PRUNE_WIDTH = 500
NFT_PRUNE_WIDTH = 200
PRUNE_FRACTIONS = (0.0, 0.5, 0.9, 0.99)
TIMEOUT_S = 90


# --- worker (one point, fresh process) --------------------------------------------------
def _peak_during(step) -> tuple[float, int]:
    import psutil
    process = psutil.Process()
    before = process.memory_info().rss
    peak = before
    done = threading.Event()

    def sample():
        nonlocal peak
        while not done.is_set():
            peak = max(peak, process.memory_info().rss)
            time.sleep(0.001)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    step()
    elapsed = time.perf_counter() - start
    done.set()
    sampler.join()
    peak = max(peak, process.memory_info().rss)
    return elapsed, peak - before


def worker(point: dict) -> dict:
    import gc
    import statistics

    sys.path.insert(0, str(HERE))
    from common import Case, build_operator, dense_step, graph_step, mlp, single_thread
    single_thread()
    widths = point["widths"]
    case = Case("mlp", [mlp(widths)], point["channels"])
    op = build_operator(point["operator"], point["channels"], case.sizes)
    target = case.pruned(point["pruned"]) if point["pruned"] else case
    step = dense_step(op, case) if point["path"] == "dense" else graph_step(op, target)
    gc.collect()
    _, memory = _peak_during(step)  # first step: includes one-time structure building
    times = [_peak_during(step)[0] for _ in range(point["repeats"])]
    return {"seconds": statistics.median(times), "peak_bytes": memory,
            "num_weights": case.num_weights,
            "num_edges": int(target.batch.edge_index.size(1)),
            "num_nodes": int(case.batch.num_nodes)}


# --- driver --------------------------------------------------------------------------
def run_point(point: dict) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--point", json.dumps(point)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {**point, "error": f"timeout {TIMEOUT_S}s"}
    if done.returncode != 0:
        return {**point, "error": done.stderr.strip().splitlines()[-1][:200]
                if done.stderr.strip() else f"exit {done.returncode}"}
    return {**point, **json.loads(done.stdout.strip().splitlines()[-1])}


def slope(points: list[dict], key: str) -> float | None:
    """Log-log slope of ``key`` against the weight count over the points >= 1e4 weights."""
    good = [p for p in points if "error" not in p and p["num_weights"] >= 1e4 and p[key] > 0]
    if len(good) < 2:
        return None
    xs = [math.log(p["num_weights"]) for p in good]
    ys = [math.log(p[key]) for p in good]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / \
        sum((x - mean_x) ** 2 for x in xs)


def sweeps(quick: bool, operators: tuple[str, ...]) -> list[dict]:
    from common import num_weights
    repeats = 2 if quick else 3
    widths = WIDTHS[:3] if quick else WIDTHS
    depths = DEPTHS[:3] if quick else DEPTHS
    points = []
    for operator in operators:
        limit = NFT_MAX_WEIGHTS if operator == "NFT" else float("inf")
        for w in widths:
            if num_weights([2, w, w, 1]) <= limit:
                points.append({"sweep": "width", "widths": [2, w, w, 1], "size": w,
                               "operator": operator})
        depth_limit = min(limit, HNP_MAX_DEPTH_WEIGHTS if operator == "HNP" else limit)
        for d in depths:
            layers = [2] + [64] * (d + 1) + [1]
            if num_weights(layers) <= depth_limit:
                points.append({"sweep": "depth", "widths": layers, "size": d,
                               "operator": operator})
        width = NFT_PRUNE_WIDTH if operator == "NFT" else PRUNE_WIDTH if not quick else 300
        for fraction in PRUNE_FRACTIONS:
            points.append({"sweep": "pruned", "widths": [2, width, width, 1],
                           "size": fraction, "operator": operator, "pruned": fraction})
        points.append({"sweep": "pruned", "widths": [2, width, width, 1], "size": "dense",
                       "operator": operator, "path": "dense"})
    for point in points:
        point.setdefault("pruned", 0.0)
        point.setdefault("path", "graph")
        point.update(channels=CHANNELS, repeats=repeats)
    return points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sweeps")
    parser.add_argument("--operators", default="NP,HNP,NFT",
                        help="comma-separated, from NP, HNP, NFT, Pointwise")
    parser.add_argument("--point", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.point:
        print(json.dumps(worker(json.loads(args.point))))
        return
    sys.path.insert(0, str(HERE))
    from common import machine, markdown_table, save, single_thread
    single_thread()  # the workers run single-threaded; record that in machine()
    results = []
    for point in sweeps(args.quick, tuple(args.operators.split(","))):
        result = run_point(point)
        results.append(result)
        print({k: result.get(k) for k in ("operator", "sweep", "size", "path", "seconds",
                                          "peak_bytes", "num_weights", "error")}, flush=True)
    rows, slopes = [], []
    for result in results:
        error = result.get("error")
        rows.append([result["operator"], result["sweep"], result["size"], result["path"],
                     result.get("num_weights", ""), result.get("num_edges", ""),
                     error or f"{result['seconds'] * 1e3:.1f}",
                     "" if error else f"{result['peak_bytes'] / 2 ** 20:.1f}"])
    for operator in dict.fromkeys(r["operator"] for r in results):
        for sweep in ("width", "depth"):
            chosen = [r for r in results if r["operator"] == operator and r["sweep"] == sweep]
            time_slope, memory_slope = slope(chosen, "seconds"), slope(chosen, "peak_bytes")
            slopes.append([operator, sweep, "" if time_slope is None else f"{time_slope:.2f}",
                           "" if memory_slope is None else f"{memory_slope:.2f}"])
    table = markdown_table(["operator", "sweep", "size", "path", "weights", "edges", "ms",
                            "peak MiB"], rows)
    slope_table = markdown_table(["operator", "sweep", "time slope", "memory slope"], slopes)
    path = save("scaling", {"machine": machine(), "quick": args.quick, "channels": CHANNELS,
                            "points": results, "table": table, "slope_table": slope_table},
                args.quick)
    print(table)
    print(slope_table)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
