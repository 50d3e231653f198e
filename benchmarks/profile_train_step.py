"""Profile one training step of the NFT model on a batch of SIRENs.

    python benchmarks/profile_train_step.py [--batch 32] [--channels 64] [--steps 5]

Prints where the time goes: the torch operators (``torch.profiler``, self
CPU time) and the Python functions (``cProfile``, own time), and how much of
the step is spent outside tensor kernels (index building, Python loops).
Saves ``benchmarks/results/train_step.json``.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import time

import torch
from common import interleaved, machine, save, single_thread, siren

from nft_pyg.graph.convert import from_modules


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    single_thread()
    from nft_pyg.nn.models.nft import NFT

    batch = from_modules([siren() for _ in range(args.batch)])
    layout = batch.get_example(0).layout
    model = NFT.for_layout(layout, hidden_channels=args.channels, out_channels=10,
                           heads=args.heads)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    target = torch.randint(0, 10, (args.batch,))

    def step():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(batch), target)
        loss.backward()
        optimizer.step()

    timing = interleaved({"train step": step}, args.steps)["train step"]
    with torch.profiler.profile() as prof:
        for _ in range(2):
            step()
    kernel_table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20)
    profiler = cProfile.Profile()
    start = time.process_time()
    profiler.runcall(lambda: [step() for _ in range(2)])
    total_cpu = time.process_time() - start
    stream = io.StringIO()
    stats = pstats.Stats(profiler, stream=stream).sort_stats("tottime")
    stats.print_stats(25)
    print(f"train step: median {timing['median'] * 1e3:.1f} ms "
          f"(CPU {timing['cpu_median'] * 1e3:.1f} ms)")
    print(kernel_table)
    print(stream.getvalue())
    save("train_step", {"machine": machine(), "args": vars(args), "timing_s": timing,
                        "cprofile_cpu_s": total_cpu, "torch_profile": kernel_table,
                        "python_profile": stream.getvalue()})


if __name__ == "__main__":
    main()
