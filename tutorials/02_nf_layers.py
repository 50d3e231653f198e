# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     name: python3
# ---

# %% [markdown]
# # 2. NF-Layers: graph operators and their dense twins
#
# The layers of *Permutation Equivariant Neural Functionals* (NFN) and the
# attention of the *Neural Functional Transformer* (NFT) are written as
# PyG `MessagePassing` operators on neuron graphs. Each one also has a
# `forward_dense` method computing the same map, with the same parameters, on
# the tensor formulation (`nft_pyg.WeightSpace`: weights `[B, C, n_l,
# n_{l-1}]`, biases `[B, C, n_l]`) with einsums and means only. This tutorial
# runs them side by side and checks that they are equivariant to neuron
# permutations.
#
# `python tutorials/02_nf_layers.py` (small settings) or `--full`
# (`NFT_PYG_FULL=1`): wider networks, more of them, and a timing of both paths.

# %%
import argparse
import json
import os
import time
from pathlib import Path

import torch
from torch import nn

import nft_pyg
from nft_pyg import WeightSpace
from nft_pyg.graph.convert import from_modules
from nft_pyg.nn import HNPConv, HNPPool, NFTAttention, NPConv, NPPool, WeightGraphIndex
from nft_pyg.symmetry import check_equivariance, permute, random_permutation

parser = argparse.ArgumentParser(description="Tutorial 2: NF-Layers and their dense twins")
parser.add_argument("--full", action="store_true",
                    default=os.environ.get("NFT_PYG_FULL", "0") == "1",
                    help="full settings (default: small settings, or NFT_PYG_FULL=1)")
parser.add_argument("--out", default="outputs/02_nf_layers", help="output folder")
args, _ = parser.parse_known_args()
out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)
torch.manual_seed(0)
# float64 makes the comparison of the two paths exact up to round-off
torch.set_default_dtype(torch.float64)

hidden = 32 if args.full else 6
num_networks = 64 if args.full else 4
channels = 16 if args.full else 8

# %% [markdown]
# ## A batch of networks in both formulations
#
# A small zoo of MLPs `2 -> hidden -> hidden -> 3`. As graphs: one `Batch`.
# As tensors: one `WeightSpace` with one channel.

# %%
zoo = [nn.Sequential(nn.Linear(2, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                     nn.Linear(hidden, 3)) for _ in range(num_networks)]
batch = from_modules(zoo)
ws = WeightSpace.from_features(batch, batch.x, batch.edge_attr)
print(batch)
print(ws)
num_layers = batch.num_weight_layers
# the tensor view of the graph's features is the networks' own weights
assert torch.equal(ws.weights[0][:, 0], torch.stack([m[0].weight.detach() for m in zoo]))

# %% [markdown]
# ## NPConv: the NP layer (all neurons permutable)
#
# Every edge is updated from its own features, the summaries
# `[in-mean, bias, out-mean]` of its two endpoint neurons and per-layer means
# of the whole graph (see {class}`~nft_pyg.nn.conv.NPConv` for the formula).
# `forward_dense` computes the same thing on the `WeightSpace`.
#
# The operators are called as PyG convs are:
# `conv(x, edge_index, edge_attr, index) -> (x, edge_attr)`. `index` is the
# batch's {class}`~nft_pyg.nn.structure.WeightGraphIndex`: the layer ids of
# every node and edge, built once per batch and shared by every layer (the
# operators never write anything onto the batch).

# %%
index = WeightGraphIndex.from_data(batch)
np_conv = NPConv(1, channels, num_layers)
x_graph, edge_graph = np_conv(batch.x, batch.edge_index, batch.edge_attr, index)
dense = np_conv.forward_dense(ws)
x_dense, edge_dense = dense.graph_features()  # dense tensors back in graph order
error_np = max((x_graph - x_dense.reshape(x_graph.shape)).abs().max().item(),
               (edge_graph - edge_dense.reshape(edge_graph.shape)).abs().max().item())
print(f"NPConv graph vs dense: max |difference| = {error_np:.2e}")
assert error_np < 1e-10

# %% [markdown]
# ## HNPConv: hidden neurons permutable
#
# The HNP layer keeps the input and output neurons in place (they have a
# meaning: pixel coordinates, classes), so it can treat each of them
# individually; it needs `num_inputs` and `num_outputs`.

# %%
hnp_conv = HNPConv(1, channels, num_layers, num_inputs=2, num_outputs=3)
x_graph, edge_graph = hnp_conv(batch.x, batch.edge_index, batch.edge_attr, index)
x_dense, edge_dense = hnp_conv.forward_dense(ws).graph_features()
error_hnp = max((x_graph - x_dense.reshape(x_graph.shape)).abs().max().item(),
                (edge_graph - edge_dense.reshape(edge_graph.shape)).abs().max().item())
print(f"HNPConv graph vs dense: max |difference| = {error_hnp:.2e}")
assert error_hnp < 1e-10

# %% [markdown]
# ## NFTAttention: weight-space self-attention
#
# The NFT layer lets each weight attend to the weights it shares a neuron
# with (the cross term) and adds a global term; it maps `channels` to
# `channels`, so we feed it the output of the `NPConv` above.

# %%
attention = NFTAttention(channels, heads=2, num_layers=num_layers)
hidden_x, hidden_edges = np_conv(batch.x, batch.edge_index, batch.edge_attr, index)
hidden_x, hidden_edges = hidden_x.relu(), hidden_edges.relu()
x_graph, edge_graph = attention(hidden_x, batch.edge_index, hidden_edges, index)
hidden_ws = WeightSpace.from_features(batch, hidden_x, hidden_edges)
x_dense, edge_dense = attention.forward_dense(hidden_ws).graph_features()
error_nft = max((x_graph - x_dense.reshape(x_graph.shape)).abs().max().item(),
                (edge_graph - edge_dense.reshape(edge_graph.shape)).abs().max().item())
print(f"NFTAttention graph vs dense: max |difference| = {error_nft:.2e}")
assert error_nft < 1e-10

# %% [markdown]
# ## CNNs: kernels folded into channels
#
# A conv edge carries a whole kernel. An operator sees it as `S` channels
# (`S` = kernel positions); the bias goes to channel 0 of the node and the
# other node channels are zero. `WeightSpace.fold_kernels` builds exactly
# these features, and `to_graph` turns them into a batch of feature graphs.

# %%
cnns = [nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU(),
                      nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))
        for _ in range(num_networks)]
cnn_ws = WeightSpace.from_modules(cnns).fold_kernels()   # [B, 9, n_l, n_{l-1}]
cnn_batch = cnn_ws.to_graph()
print("folded CNN features:", cnn_batch.x.shape, cnn_batch.edge_attr.shape)
cnn_conv = NPConv(cnn_batch.x.size(1), channels, cnn_batch.num_weight_layers)
x_graph, edge_graph = cnn_conv(cnn_batch.x, cnn_batch.edge_index, cnn_batch.edge_attr,
                               WeightGraphIndex.from_data(cnn_batch))
x_dense, edge_dense = cnn_conv.forward_dense(cnn_ws).graph_features()
error_cnn = (edge_graph - edge_dense.reshape(edge_graph.shape)).abs().max().item()
print(f"NPConv on CNNs, graph vs dense: max |difference| = {error_cnn:.2e}")
assert error_cnn < 1e-10

# %% [markdown]
# ## Equivariance
#
# Permuting the hidden neurons of a network does not change its function ...

# %%
network = zoo[0]
perm = random_permutation(nft_pyg.from_module(network))
permuted = permute(network, perm)
points = torch.randn(8, 2)
assert torch.allclose(permuted(points), network(points))
print("hidden permutation of layer 1:", perm[1].tolist())

# %% [markdown]
# ... so a neural functional should map the permuted network to the
# correspondingly permuted output (equivariance) or to the same output
# (invariance). `check_equivariance` tries random permutations and reports the
# largest deviation. NPConv and NPPool are equivariant / invariant even when
# input and output neurons are permuted (`permute_io=True`); HNPConv is
# only equivariant to hidden permutations, which the last check shows.

# %%
graph = nft_pyg.from_module(network)
report = {
    "NPConv": check_equivariance(np_conv, graph, permute_io=True),
    "HNPConv": check_equivariance(hnp_conv, graph),
    "NFTAttention": check_equivariance(
        attention, graph, *np_conv(graph.x, graph.edge_index, graph.edge_attr,
                                   WeightGraphIndex.from_data(graph))),
    "NPPool (invariant)": check_equivariance(NPPool(1, num_layers), graph, permute_io=True),
    "HNPPool (invariant)": check_equivariance(HNPPool(1, num_layers, 2, 3), graph),
}
for name, result in report.items():
    print(f"{name:20s} max error {result.max_error:.1e}  passed={bool(result)}")
    assert result
io_check = check_equivariance(hnp_conv, graph, permute_io=True)
print(f"HNPConv with input/output neurons permuted: max error {io_check.max_error:.1e} "
      f"(not equivariant, as designed)")
assert not io_check

# %% [markdown]
# ## Speed of the two paths
#
# On one architecture the dense path is plain batched tensor math; the graph
# path also handles batches of different architectures, where there is no
# dense twin at all.

# %%
def best_time(fn, repeats=3):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


timings = {
    "graph": best_time(lambda: np_conv(batch.x, batch.edge_index, batch.edge_attr, index)),
    "dense": best_time(lambda: np_conv.forward_dense(ws)),
}
print({name: f"{seconds * 1e3:.2f} ms" for name, seconds in timings.items()})
summary = {"errors": {"NPConv": error_np, "HNPConv": error_hnp, "NFTAttention": error_nft,
                      "NPConv_cnn": error_cnn},
           "equivariance": {name: r.max_error for name, r in report.items()},
           "timings_s": timings, "full": args.full}
(out / "summary.json").write_text(json.dumps(summary, indent=2))
print("wrote", out / "summary.json")
