"""The ``nft-pyg`` command line.

``nft-pyg demo`` is the README's main job: on an embedded small default it
converts a few networks to neuron graphs, prints their sizes, checks that a
random hidden-neuron permutation preserves each network's function and
maps its graph to an isomorphic one, and saves a drawing.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

from .graph import Sine, from_module, to_module


def demo_networks() -> dict[str, tuple[nn.Module, torch.Tensor]]:
    """The embedded default: a SIREN, a ReLU MLP with a norm, a small CNN."""
    siren = nn.Sequential(nn.Linear(2, 32), Sine(30.0), nn.Linear(32, 32), Sine(30.0),
                          nn.Linear(32, 1))
    mlp = nn.Sequential(nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 10))
    cnn = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(8, 16, 3), nn.GELU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(16, 10))
    return {"siren 2-32-32-1": (siren, torch.rand(16, 2) * 2 - 1),
            "mlp 64-32-10 (BatchNorm)": (mlp, torch.randn(16, 64)),
            "cnn 1-8-16-10 (8x8 input)": (cnn, torch.randn(16, 1, 8, 8))}


def run_demo(out_dir: Path, seed: int = 0) -> list[dict]:
    from .symmetry import draw, is_type_preserving_isomorphic, permute, random_permutation

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, (module, inputs) in demo_networks().items():
        module = module.double().eval()
        inputs = inputs.double()
        graph = from_module(module)
        rebuilt = to_module(graph).eval()
        perm = random_permutation(module, generator=generator)
        permuted = permute(module, perm).eval()
        with torch.no_grad():
            round_trip = (module(inputs) - rebuilt(inputs)).abs().max().item()
            perm_error = (module(inputs) - permuted(inputs)).abs().max().item()
        isomorphic = is_type_preserving_isomorphic(graph, from_module(permuted))
        rows.append({"network": name, "neurons": graph.num_nodes,
                     "weights (edges)": graph.num_edges, "kernel width":
                     int(graph.kernel_width[0]), "round-trip error": round_trip,
                     "permuted error": perm_error, "isomorphic": isomorphic})
    drawing = out_dir / "siren_graph.png"
    draw(from_module(demo_networks()["siren 2-32-32-1"][0]), path=drawing)
    _print_table(rows)
    print(f"\nsaved the neuron graph drawing of the SIREN to {drawing}")
    return rows


def _print_table(rows: list[dict]) -> None:
    headers = list(rows[0])
    cells = [[_fmt(row[h]) for h in headers] for row in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    print(" | ".join(h.ljust(w) for h, w in zip(headers, widths)))
    print("-+-".join("-" * w for w in widths))
    for row in cells:
        print(" | ".join(c.ljust(w) for c, w in zip(row, widths)))


def _fmt(value) -> str:
    return f"{value:.1e}" if isinstance(value, float) else str(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nft-pyg", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="the README's main job on an embedded default")
    demo.add_argument("--out", type=Path, default=Path("runs/demo"),
                      help="folder for the outputs (default: runs/demo)")
    demo.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.command == "demo":
        rows = run_demo(args.out, args.seed)
        ok = all(row["isomorphic"] and row["permuted error"] < 1e-9 and
                 row["round-trip error"] == 0 for row in rows)
        if not ok:
            print("demo: a check failed (see the table)", file=sys.stderr)
        return 0 if ok else 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
