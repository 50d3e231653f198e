"""Forward + backward of the weight-space operators: graph path vs dense twin vs ``nfn``.

Cases: a batch of SIRENs (``2-32-32-1``) and a batch of Digits-zoo CNNs, and
the same batches with 50 / 90 / 99 % of their edges pruned (graph path only;
the dense paths keep computing on full tensors with zeros). All variants of
one operator are timed interleaved in one process; ratios are medians.

    python benchmarks/bench_operators.py [--quick] [--operators NP HNP] [--cases 0 1]
"""
from __future__ import annotations

import argparse
import importlib

from common import (
    OPERATORS,
    Case,
    build_operator,
    build_reference,
    dense_step,
    graph_step,
    interleaved,
    machine,
    markdown_table,
    mlp,
    reference_step,
    save,
    single_thread,
    siren,
    small_cnn,
)

PRUNE_FRACTIONS = (0.5, 0.9, 0.99)


def available(kind: str) -> bool:
    module = {"NP": "nft_pyg.nn.conv.np_conv", "HNP": "nft_pyg.nn.conv.hnp_conv",
              "NFT": "nft_pyg.nn.conv.nft_attention"}[kind]
    try:
        importlib.import_module(module)
        return True
    except ImportError:
        return False


def cases(quick: bool) -> list[Case]:
    batch = 32
    return [Case("SIREN 2-32-32-1, B=32, C=64", [siren() for _ in range(batch)], 64),
            # the CNN's 3x3 kernels are folded into channels: 8 x 9 = 72 per weight layer
            Case("CNN zoo (Conv 1-8-16, Linear 16-10), B=32, C=8x9", [small_cnn()
                                                                       for _ in range(batch)],
                 72),
            Case("MLP 2-128-128-1, B=8, C=16", [mlp((2, 128, 128, 1)) for _ in range(8)], 16)]


def _works(step) -> str | None:
    try:
        step()
        return None
    except Exception as err:  # an operator still being written, or a pruning it rejects
        return f"error: {type(err).__name__}: {err}"[:160]


def run(quick: bool, operators=OPERATORS, case_numbers=None) -> dict:
    repeats = 5 if quick else 11
    rows, pruned_rows, records = [], [], []
    for number, case in enumerate(cases(quick)):
        if case_numbers is not None and number not in case_numbers:
            continue
        for kind in operators:
            if not available(kind):
                rows.append([case.name, kind, "not implemented", "", "", "", ""])
                continue
            op = build_operator(kind, case.channels, case.sizes)
            ref = build_reference(kind, case.channels, case.sizes)
            variants = {"graph": graph_step(op, case), "dense": dense_step(op, case),
                        "nfn": reference_step(ref, case)}
            errors = {name: _works(step) for name, step in variants.items()}
            if any(errors.values()):
                rows.append([case.name, kind, "; ".join(f"{name}: {error}" for name, error
                                                        in errors.items() if error),
                             "", "", "", ""])
                print(rows[-1], flush=True)
                continue
            for fraction in PRUNE_FRACTIONS:
                step = graph_step(op, case.pruned(fraction))
                error = _works(step)
                if error:
                    pruned_rows.append([case.name, kind, f"{fraction:.0%}", error, "", ""])
                else:
                    variants[f"graph pruned {fraction:.0%}"] = step
            timing = interleaved(variants, repeats)
            nfn_time = timing["nfn"]["median"]
            dense_time = timing["dense"]["median"]
            graph_time = timing["graph"]["median"]
            rows.append([case.name, kind, f"{graph_time * 1e3:.1f}", f"{dense_time * 1e3:.1f}",
                         f"{nfn_time * 1e3:.1f}", f"{graph_time / nfn_time:.2f}",
                         f"{dense_time / nfn_time:.2f}"])
            fastest_dense = min(dense_time, nfn_time)
            for fraction in PRUNE_FRACTIONS:
                name = f"graph pruned {fraction:.0%}"
                if name in timing:
                    pruned = timing[name]["median"]
                    pruned_rows.append([case.name, kind, f"{fraction:.0%}",
                                        f"{pruned * 1e3:.1f}", f"{fastest_dense * 1e3:.1f}",
                                        f"{fastest_dense / pruned:.2f}"])
            records.append({"case": case.name, "operator": kind,
                            "num_graphs": case.batch.num_graphs,
                            "num_weights_per_graph": case.num_weights,
                            "channels": case.channels, "timing_s": timing})
            print(rows[-1], flush=True)
    table = markdown_table(["case", "operator", "graph ms", "dense twin ms", "nfn ms",
                            "graph / nfn", "dense / nfn"], rows)
    pruned_table = markdown_table(["case", "operator", "pruned", "graph ms",
                                   "fastest dense ms (full)", "speed-up vs dense"],
                                  pruned_rows)
    return {"machine": machine(), "quick": quick, "repeats": repeats, "records": records,
            "table": table, "pruned_table": pruned_table}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--operators", nargs="+", default=list(OPERATORS),
                        choices=list(OPERATORS), help="operators to time (default: all)")
    parser.add_argument("--cases", nargs="+", type=int, default=None,
                        help="case numbers to time (0 SIRENs, 1 CNN zoo, 2 wide MLPs)")
    args = parser.parse_args()
    single_thread()
    result = run(args.quick, args.operators, args.cases)
    path = save("operators", result, args.quick)
    print(result["table"])
    print()
    print(result["pruned_table"])
    print(f"saved {path}")


if __name__ == "__main__":
    main()
