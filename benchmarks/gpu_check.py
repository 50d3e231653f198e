"""The prepared GPU check (``make gpu-check``): on one GPU, in under 8 minutes,

1. runs the device-parametrized tests on CUDA (``pytest -k cuda``: the
   ``device`` fixture of ``tests/conftest.py`` adds ``[cuda]`` to their ids);
2. times forward + backward of NPConv, HNPConv and NFTAttention against
   ``nfn``'s dense layers on the same inputs, interleaved in this process
   (the cases and steps of ``bench_operators.py`` / ``common.py``, moved to
   the device), as ratios;
3. times training epochs of every classification model on a fixed data set
   (``bench_training.fixed_dataset``) with the Lightning trainer, in float32
   and in ``bf16-mixed``;

and writes ``benchmarks/results/gpu_check.json`` and ``gpu_check.md``.
Without a GPU it runs the same on the CPU (``--device cpu``; the tests then
run with ``-k cpu``), which the test suite exercises with ``--quick`` and
one selected test.

    python benchmarks/gpu_check.py [--device cuda|cpu] [--quick] [--skip-tests]
        [--tests-k EXPR] [--out DIR] [--test-timeout SECONDS]
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import RESULTS, ROOT, interleaved, machine, markdown_table, single_thread

#: the models whose training epoch is timed
MODELS = ("mlp", "statnn", "nfn_hnp", "nfn_np", "nft", "inr2array", "gnn", "nfn_gnn")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --- 1. the device-parametrized tests ---------------------------------------------
def run_device_tests(device: torch.device, timeout: float, select: str | None = None) -> dict:
    """``pytest -k <device type>`` (or ``-k select``) on the whole suite; counts
    and failures."""
    command = [sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider",
               "-k", select or device.type, "-o", "addopts=-ra", str(ROOT / "tests")]
    started = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                              timeout=timeout)
        output, code = done.stdout + done.stderr, done.returncode
    except subprocess.TimeoutExpired as err:
        output = (err.stdout or b"").decode() if isinstance(err.stdout, bytes) else (
            err.stdout or "")
        code = "timeout"
    counts = {kind: int(number) for number, kind in
              re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", output)}
    failures = [line for line in output.splitlines() if line.startswith(("FAILED", "ERROR"))]
    return {"command": " ".join(command[2:]), "exit_code": code, "counts": counts,
            "failures": failures, "seconds": time.perf_counter() - started,
            "tail": output.splitlines()[-15:]}


# --- 2. operators against nfn ------------------------------------------------------
def case_on(case, device: torch.device):
    """``case`` (a ``common.Case``) with its graph, features and WeightSpace on ``device``."""
    from nft_pyg.tensor import WeightSpace

    case.batch = case.batch.to(device)
    case.x, case.edge_attr = case.x.to(device), case.edge_attr.to(device)
    ws = case.ws
    case.ws = WeightSpace([w.to(device) for w in ws.weights], [b.to(device) for b in ws.biases],
                          ws.layout)
    return case


def operator_cases(quick: bool) -> list:
    """``bench_operators.py``'s cases; ``quick``: 2 SIRENs with 8 channels (CI)."""
    import bench_operators
    from common import Case, siren

    if quick:
        return [Case("SIREN 2-32-32-1, B=2, C=8", [siren() for _ in range(2)], 8)]
    return bench_operators.cases(quick)


def time_operators(device: torch.device, quick: bool) -> dict:
    from common import OPERATORS, build_operator, build_reference, graph_step, reference_step

    repeats = 3 if quick else 11
    rows, records = [], []
    for case in operator_cases(quick):
        case = case_on(case, device)
        for kind in OPERATORS:
            try:
                op = build_operator(kind, case.channels, case.sizes).to(device)
                ref = build_reference(kind, case.channels, case.sizes).to(device)
                steps = {"graph": graph_step(op, case), "nfn": reference_step(ref, case)}
                timed = {name: (lambda step=step: (step(), synchronize(device)))
                         for name, step in steps.items()}
                timing = interleaved(timed, repeats)
            except Exception as err:   # report, do not stop the check
                rows.append([case.name, kind, f"error: {type(err).__name__}: {err}"[:150],
                             "", ""])
                records.append({"case": case.name, "operator": kind, "error": repr(err)})
                continue
            graph, nfn = timing["graph"]["median"], timing["nfn"]["median"]
            rows.append([case.name, kind, f"{graph * 1e3:.2f}", f"{nfn * 1e3:.2f}",
                         f"{graph / nfn:.2f}"])
            records.append({"case": case.name, "operator": kind, "timing_s": timing})
    table = markdown_table(["case", "operator", "graph ms", "nfn ms", "graph / nfn"], rows)
    return {"repeats": repeats, "records": records, "table": table}


# --- 3. training epochs ------------------------------------------------------------------
def epoch_seconds(name: str, graphs, splits, device: torch.device, precision: str,
                  batch_size: int) -> float:
    """Seconds of the second training epoch (the first warms up the device)."""
    from bench_training import build

    from nft_pyg.tasks.specs import SPECS
    from nft_pyg.tasks.trainer import TrainConfig, Trainer, read_records

    config = TrainConfig(epochs=2, batch_size=batch_size, lr=1e-3, eval_batch_size=64,
                         recalibrate_batches=0, accelerator=device.type, devices=1,
                         precision=precision)
    with tempfile.TemporaryDirectory() as folder:
        Trainer(build(name, graphs), SPECS["classification"], *splits, config,
                run_dir=folder, progress=False).fit()
        records = [r for r in read_records(Path(folder)) if "epoch" in r]
    return records[1]["train_seconds"] - records[0]["train_seconds"]


def time_training(device: torch.device, quick: bool) -> dict:
    from bench_training import fixed_dataset

    num_train, batch_size = (16, 8) if quick else (512, 64)
    graphs = fixed_dataset(num_train + 32)
    splits = (graphs[:num_train], graphs[num_train:num_train + 16], graphs[num_train + 16:])
    precisions = ["32-true"] + (["bf16-mixed"] if device.type == "cuda" else [])
    models = MODELS[:2] if quick else MODELS
    rows, records = [], []
    for name in models:
        row, record = [name], {"model": name}
        for precision in precisions:
            try:
                seconds = epoch_seconds(name, graphs, splits, device, precision, batch_size)
                row.append(f"{num_train / seconds:.0f}")
                record[precision] = {"epoch_s": seconds, "networks_per_s": num_train / seconds}
            except Exception as err:
                row.append(f"error: {type(err).__name__}: {err}"[:150])
                record[precision] = {"error": repr(err)}
        rows.append(row)
        records.append(record)
        print(rows[-1], flush=True)
    table = markdown_table(["model"] + [f"{p}: networks/s" for p in precisions], rows)
    return {"num_train": num_train, "batch_size": batch_size, "records": records,
            "table": table}


# --- summary -------------------------------------------------------------------------------
def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return machine().get("cpu") or "CPU"


def markdown(result: dict) -> str:
    lines = [f"# GPU check on {result['device_name']} ({result['device']})", "",
             f"torch {result['machine']['torch']}, {result['seconds']:.0f} s in all"
             + (", quick" if result["quick"] else ""), ""]
    tests = result.get("tests")
    if tests is None:
        lines += ["Device tests: skipped.", ""]
    else:
        counts = ", ".join(f"{n} {k}" for k, n in tests["counts"].items()) or "no summary"
        lines += [f"Device tests (`{tests['command']}`): exit {tests['exit_code']}, {counts}, "
                  f"{tests['seconds']:.0f} s.", ""]
        lines += [f"- {line}" for line in tests["failures"]] + ([""] if tests["failures"] else [])
    lines += ["## Operators, forward + backward, against nfn", "",
              result["operators"]["table"], "",
              "## One training epoch per model (fixed SIREN data set)", "",
              result["training"]["table"], ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true",
                        help="a tiny case, few repeats, two models (the CI run)")
    parser.add_argument("--skip-tests", action="store_true")
    parser.add_argument("--test-timeout", type=float, default=240.0)
    parser.add_argument("--tests-k", default=None, metavar="EXPR",
                        help="pytest -k expression of the tests to run (default: the device "
                             "type, i.e. every device-parametrized test on it)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; run with --device cpu", file=sys.stderr)
        return 2
    if device.type == "cpu":
        single_thread()
    torch.manual_seed(0)
    started = time.perf_counter()
    result = {"device": str(device), "device_name": device_name(device), "quick": args.quick,
              "machine": machine()}
    if not args.skip_tests:
        result["tests"] = run_device_tests(device, args.test_timeout, args.tests_k)
        print(f"device tests: {result['tests']['counts']}", flush=True)
    result["operators"] = time_operators(device, args.quick)
    print(result["operators"]["table"], flush=True)
    result["training"] = time_training(device, args.quick)
    result["seconds"] = time.perf_counter() - started
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "gpu_check" + ("_quick" if args.quick else "") + ("" if device.type == "cuda"
                                                              else "_cpu")
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=1, default=str))
    (args.out / f"{stem}.md").write_text(markdown(result))
    print(markdown(result))
    print(f"saved {args.out / stem}.json and .md")
    tests_ok = "tests" not in result or result["tests"]["exit_code"] == 0
    return 0 if tests_ok else 1


if __name__ == "__main__":
    sys.exit(main())
