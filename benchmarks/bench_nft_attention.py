"""Forward + backward of ``NFTAttention``: graph path vs dense twin vs ``nfn``'s ``NPAttention``.

Cases: 32 SIRENs ``2-32-32-1`` with 64 channels, 32 Digits-zoo CNNs
(3x3 kernels folded into 72 channels) and 8 MLPs ``2-128-128-1`` with 16
channels, 8 heads; and the SIREN batch with
50 / 75 / 85 / 90 % of each layer's edges pruned, once with the dense blocks and once
with message passing forced (``NFTAttention(block_density=...)``),
which is what the default ``block_density`` is chosen from. All variants of
a case are timed interleaved in one process; ratios are medians.

    python benchmarks/bench_nft_attention.py [--quick]

:func:`nft_attention_step` is the forward + backward step of the graph
path that other benchmarks can reuse.
"""
from __future__ import annotations

import argparse
from collections.abc import Callable

from common import (
    HEADS,
    Case,
    build_reference,
    interleaved,
    machine,
    markdown_table,
    mlp,
    reference_step,
    requires_grad,
    save,
    single_thread,
    siren,
    small_cnn,
)

from nft_pyg.nn.conv.nft_attention import NFTAttention
from nft_pyg.nn.structure import WeightGraphIndex


def nft_attention_step(op: NFTAttention, case) -> Callable[[], None]:
    """Forward + backward of ``op`` on ``case`` (gradients w.r.t. the features);
    the index is built once, outside the timed step, as a training loop does."""
    x, edge_attr, _ = requires_grad(case)
    index = WeightGraphIndex.from_data(case.batch)
    edge_index = case.batch.edge_index

    def step():
        x.grad = edge_attr.grad = None
        x_out, edge_out = op(x, edge_index, edge_attr, index)
        (x_out.sum() + edge_out.sum()).backward()
    return step


def dense_step(op: NFTAttention, case: Case) -> Callable[[], None]:
    _, _, ws = requires_grad(case)

    def step():
        out = op.forward_dense(ws)
        sum(t.sum() for t in out.weights + out.biases).backward()
    return step


def run(quick: bool) -> dict:
    repeats = 5 if quick else 11
    rows, records = [], []
    for case in (Case("SIREN 2-32-32-1, B=32, C=64", [siren() for _ in range(32)], 64),
                 Case("CNN zoo, B=32, C=8x9", [small_cnn() for _ in range(32)], 72),
                 Case("MLP 2-128-128-1, B=8, C=16", [mlp((2, 128, 128, 1)) for _ in range(8)],
                      16)):
        op = NFTAttention(case.channels, heads=HEADS)
        ref = build_reference("NFT", case.channels, case.sizes)
        variants = {"graph": nft_attention_step(op, case), "dense twin": dense_step(op, case),
                    "nfn": reference_step(ref, case)}
        if case.name.startswith("SIREN"):
            blocks = NFTAttention(case.channels, heads=HEADS, block_density=0.0)
            paths = NFTAttention(case.channels, heads=HEADS, block_density=float("inf"))
            for variant in (blocks, paths):
                variant.load_state_dict(op.state_dict())
            for fraction in (0.5, 0.75, 0.85, 0.9):
                pruned = case.pruned(fraction)
                variants[f"pruned {fraction:.0%}, blocks"] = nft_attention_step(blocks, pruned)
                variants[f"pruned {fraction:.0%}, paths"] = nft_attention_step(paths, pruned)
        timing = interleaved(variants, repeats)
        nfn_time = timing["nfn"]["median"]
        for name, times in timing.items():
            rows.append([case.name, name, f"{times['median'] * 1e3:.1f}",
                         f"{times['median'] / nfn_time:.2f}"])
            print(rows[-1], flush=True)
        records.append({"case": case.name, "timing_s": timing})
    table = markdown_table(["case", "variant", "ms", "/ nfn"], rows)
    return {"machine": machine(), "quick": quick, "repeats": repeats, "records": records,
            "table": table}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args()
    single_thread()
    result = run(args.quick)
    path = save("nft_attention", result, args.quick)
    print(result["table"])
    print(f"saved {path}")


if __name__ == "__main__":
    main()
