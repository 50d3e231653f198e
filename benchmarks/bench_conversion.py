"""Conversion throughput: networks per second, module -> batched neuron graphs.

Ways to get a ``Batch`` of ``B`` networks, timed interleaved:

- ``from_module`` graph by graph, then ``collate_graphs`` (the fast collation
  of ``nft_pyg.graph.collate``, also behind ``GraphLoader``) or PyG's
  ``Batch.from_data_list`` (what PyG's ``DataLoader`` does); each half alone too;
- ``from_modules`` (one stacked copy per weight tensor, no per-graph objects);
- ``from_state_dicts`` (the same from stored state dicts: no module walk);
- ``WeightSpace.from_modules(...).to_graph()`` (the dense twin's batched path).

It also reports the pickled size of one ``from_module`` graph over the bytes of
its tensors (a graph owns compact storage: about 1.0x; views of one shared
buffer used to pickle at 7.4x).

Every path is first checked to give the same batch as the first one.

    python benchmarks/bench_conversion.py [--quick] [--no-save]
"""
from __future__ import annotations

import argparse
import pickle

import torch

# common first: it puts the checkout on sys.path for nft_pyg
from common import (
    interleaved,
    machine,
    markdown_table,
    save,
    single_thread,
    siren,
    small_cnn,
)
from torch_geometric.data import Batch

import nft_pyg
from nft_pyg.graph.collate import collate_graphs
from nft_pyg.graph.convert import from_modules, from_state_dicts
from nft_pyg.tensor.weight_space import WeightSpace

COMPARED = ("x", "edge_index", "edge_attr", "node_layer", "node_role", "node_pos", "node_act",
            "edge_layer", "edge_kind", "node_norm", "kernel_width", "batch", "ptr")


def same_batch(a, b, keys=COMPARED) -> bool:
    return all(torch.equal(a[key], b[key]) for key in keys) and list(a.layout) == list(b.layout)


def same_collation(a, b) -> bool:
    """Also the slices and increments that ``to_data_list()`` reads."""
    return same_batch(a, b) and all(
        torch.equal(a._slice_dict[key], b._slice_dict[key]) for key in COMPARED[:-2]) and all(
        torch.equal(a._inc_dict[key], b._inc_dict[key]) for key in COMPARED[:-2])


def run(quick: bool) -> dict:
    count = 256 if quick else 1024
    repeats = 5 if quick else 9
    rows, records = [], []
    for name, factory in (("SIREN 2-32-32-1", siren), ("CNN zoo", small_cnn)):
        networks = [factory() for _ in range(count)]

        def per_graph():
            return Batch.from_data_list([nft_pyg.from_module(net) for net in networks])

        def per_graph_fast_collate():
            return collate_graphs([nft_pyg.from_module(net) for net in networks])

        def convert_only():
            return [nft_pyg.from_module(net) for net in networks]

        def batched():
            return from_modules(networks)

        def dense():
            return WeightSpace.from_modules(networks).to_graph()

        # a zoo stored as state dicts (e.g. a dataset on disk) skips the module walk
        states = [net.state_dict() for net in networks]
        layout = nft_pyg.graph.convert.layout_of(networks[0])

        def stacked_states():
            return from_state_dicts(states, layout)

        reference = per_graph()
        assert same_collation(reference, per_graph_fast_collate()), "collate_graphs differs"
        assert same_batch(reference, batched()), "from_modules differs from per-graph collation"
        assert same_batch(reference, stacked_states()), "from_state_dicts differs"
        graphs = convert_only()
        variants = {"from_module + collate_graphs": per_graph_fast_collate,
                    "from_module + Batch.from_data_list": per_graph,
                    "from_module only": convert_only,
                    "collate_graphs only": lambda: collate_graphs(graphs),
                    "Batch.from_data_list only": lambda: Batch.from_data_list(graphs),
                    "from_modules": batched, "from_state_dicts": stacked_states,
                    "WeightSpace.from_modules().to_graph()": dense}
        timing = interleaved(variants, repeats)
        for variant, stats in timing.items():
            rows.append([name, variant, f"{count / stats['median']:,.0f}",
                         f"{count / stats['cpu_median']:,.0f}",
                         f"{stats['median'] / count * 1e6:.0f}"])
        graph = graphs[0]
        data_bytes = sum(value.numel() * value.element_size() for value in graph.values()
                         if isinstance(value, torch.Tensor)) + len(graph.layout)
        pickled = len(pickle.dumps(graph)) / data_bytes
        rows.append([name, "pickled graph / its data (bytes)", f"{pickled:.2f}x", "", ""])
        records.append({"networks": name, "count": count, "timing_s": timing,
                        "pickled_over_data": pickled})
        print(rows[-len(variants) - 1:], flush=True)
    table = markdown_table(["networks", "path", "networks / s (wall)", "networks / s (CPU time)",
                            "us / network (wall)"], rows)
    return {"machine": machine(), "quick": quick, "records": records, "table": table}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer networks and repetitions")
    parser.add_argument("--no-save", action="store_true", help="print the table only")
    args = parser.parse_args()
    single_thread()
    result = run(args.quick)
    print(result["table"])
    if not args.no_save:
        print(f"saved {save('conversion', result, args.quick)}")


if __name__ == "__main__":
    main()
