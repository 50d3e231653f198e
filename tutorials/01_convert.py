# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     name: python3
# ---

# %% [markdown]
# # 1. Networks as neuron graphs
#
# A network becomes a `nft_pyg.NeuronGraph` (a PyG `Data`): **nodes are
# neurons, edges are weights**. In this tutorial we convert an MLP, a CNN and
# an escnn network, inspect and draw the graphs, batch graphs of different
# architectures, and convert them back into modules that compute the same
# function. The format itself is described in {doc}`../graph_format`.
#
# Run it with `python tutorials/01_convert.py` (small settings, a few
# seconds) or `python tutorials/01_convert.py --full` (or `NFT_PYG_FULL=1`):
# larger networks and a larger batch. Figures go to `--out`
# (default `outputs/01_convert`).

# %%
import argparse
import os
from pathlib import Path

import torch
from torch import nn
from torch_geometric.data import Batch
from torch_geometric.loader import DataLoader

import nft_pyg
from nft_pyg.graph import Activation, EdgeKind, NodeRole
from nft_pyg.graph.validate import validate
from nft_pyg.symmetry import draw
from nft_pyg.transforms import PadKernels

parser = argparse.ArgumentParser(description="Tutorial 1: networks as neuron graphs")
parser.add_argument("--full", action="store_true",
                    default=os.environ.get("NFT_PYG_FULL", "0") == "1",
                    help="full settings (default: small settings, or NFT_PYG_FULL=1)")
parser.add_argument("--out", default="outputs/01_convert", help="output folder")
args, _ = parser.parse_known_args()  # tolerate the extra arguments of a notebook kernel
out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)
torch.manual_seed(0)

hidden = 64 if args.full else 8
zoo_size = 256 if args.full else 8

# %% [markdown]
# ## An MLP
#
# `from_module` follows the forward of an `nn.Sequential` (or of any module
# whose forward is a chain of supported layers) and copies every parameter
# into the graph; no arithmetic touches a weight.

# %%
mlp = nn.Sequential(nn.Linear(2, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.Tanh(),
                    nn.Linear(hidden, 1))
graph = nft_pyg.from_module(mlp)
print(graph)

# %% [markdown]
# Nodes are sorted by neuron layer (0 = inputs, `L` = outputs) and position.
# `x` holds each neuron's bias (zero for the input neurons), `edge_attr` one
# weight per edge; the integer id vectors give the layer, role, position and
# activation of every neuron and the weight layer of every edge.

# %%
sizes = torch.bincount(graph.node_layer).tolist()
print("neurons per layer:", sizes)
print("weight layers L =", graph.num_weight_layers)
print("roles:", {role.name: int((graph.node_role == role).sum()) for role in NodeRole})
print("activations after the hidden layers:",
      [Activation(int(code)).name for code in graph.node_act[graph.node_layer == 1][:1]],
      [Activation(int(code)).name for code in graph.node_act[graph.node_layer == 2][:1]])
assert graph.num_nodes == sum(sizes) and graph.num_edges == 2 * hidden + hidden ** 2 + hidden

# %% [markdown]
# The edges of weight layer `l` are the entries of `W_l` in row-major order:
# edge `j * n_{l-1} + i` of the layer joins input neuron `i` to output neuron
# `j` and carries `W_l[j, i]`. The biases of layer `l` are the `x` of its
# neurons.

# %%
first = graph.edge_layer == 1
assert torch.equal(graph.edge_attr[first, 0], mlp[0].weight.detach().reshape(-1))
assert torch.equal(graph.x[graph.node_layer == 1, 0], mlp[0].bias.detach())
validate(graph)  # every invariant of the format, with precise errors
draw(graph, out / "mlp.png")
print("drew", out / "mlp.png")

# %% [markdown]
# ## Back to a module
#
# `to_module` rebuilds a flat `nn.Sequential` that computes the same
# function; `to_state_dict` gives the original state-dict keys.

# %%
rebuilt = nft_pyg.to_module(graph)
inputs = torch.randn(16, 2)
assert torch.equal(rebuilt(inputs), mlp(inputs))
print(list(nft_pyg.to_state_dict(graph)))

# %% [markdown]
# ## A CNN
#
# For a convolution the neurons are **channels**: one edge per (input channel,
# output channel) pair carries the whole kernel (`kernel_width = 9` for a 3x3
# kernel). A `Linear` after `Flatten` reads `H * W` values per channel: its
# input neurons are the channels and each edge carries the `H * W` weights of
# one channel (`EdgeKind.FLATTEN`).

# %%
channels = 16 if args.full else 4
cnn = nn.Sequential(
    nn.Conv2d(1, channels, 3), nn.ReLU(),
    nn.Conv2d(channels, channels, 3), nn.ReLU(),
    nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(channels * 4, 10))
cnn_graph = nft_pyg.from_module(cnn)
print(cnn_graph)
print("kernel_width:", int(cnn_graph.kernel_width))
print("edge kinds per layer:",
      {l: EdgeKind(int(cnn_graph.edge_kind[cnn_graph.edge_layer == l][0])).name
       for l in range(1, cnn_graph.num_weight_layers + 1)})
images = torch.randn(4, 1, 12, 12)
assert torch.allclose(nft_pyg.to_module(cnn_graph)(images), cnn(images))
draw(cnn_graph, out / "cnn.png")

# %% [markdown]
# ## Batching different architectures
#
# PyG concatenates `edge_attr` when it batches graphs, so graphs with
# different kernel widths are padded to one width with `PadKernels` first.
# The id vectors (`node_layer`, `node_pos`, ...) are not shifted by batching;
# only `edge_index` is. `to_data_list()` gives back the graphs unchanged.

# %%
pad = PadKernels(int(cnn_graph.kernel_width))
batch = Batch.from_data_list([pad(graph), pad(cnn_graph)])
print(batch)
print("graphs:", batch.num_graphs, "| layouts:", len(batch.layout))
validate(batch)
mlp_again = nft_pyg.to_module(batch.get_example(0))
assert torch.equal(mlp_again(inputs), mlp(inputs))

# %% [markdown]
# A model zoo of networks of one architecture converts in one go with
# `from_modules`, and a `DataLoader` batches single graphs as usual.

# %%
from nft_pyg.graph.convert import from_modules

zoo = [nn.Sequential(nn.Linear(2, hidden), nn.ReLU(), nn.Linear(hidden, 1))
       for _ in range(zoo_size)]
zoo_batch = from_modules(zoo)
print("zoo batch:", zoo_batch)
loader = DataLoader([nft_pyg.from_module(m) for m in zoo], batch_size=4, shuffle=False)
first_batch = next(iter(loader))
assert torch.equal(first_batch.edge_attr, zoo_batch.edge_attr[: first_batch.num_edges])

# %% [markdown]
# ## escnn networks
#
# An escnn network has two natural graphs. The **channel view** exports it to
# plain PyTorch (`module.export()`: `R2Conv` becomes a `Conv2d` with the
# expanded filter) and converts that, one neuron per channel. The **field
# view** has one node per *field* (a group of channels transforming together
# under one representation); an edge carries the whole block of the filter
# between two fields, so permuting fields keeps the filters equivariant.
# escnn is optional: this part is skipped when it is not installed.

# %%
try:
    from escnn import gspaces
    from escnn import nn as enn
except ImportError:
    enn = None
    print("escnn is not installed: skipping the escnn part")

if enn is not None:
    from nft_pyg.graph.escnn import from_escnn

    group = gspaces.rot2dOnR2(4)
    field_in = enn.FieldType(group, [group.trivial_repr])
    field_hidden = enn.FieldType(group, (4 if args.full else 2) * [group.regular_repr])
    equivariant = enn.SequentialModule(enn.R2Conv(field_in, field_hidden, 3),
                                       enn.ReLU(field_hidden),
                                       enn.R2Conv(field_hidden, field_hidden, 3))
    channel_graph = from_escnn(equivariant, view="channel")
    field_graph = from_escnn(equivariant, view="field")
    print("channel view:", channel_graph)
    print("field view:  ", field_graph.num_nodes, "fields,", field_graph.num_edges,
          "edges, field types", field_graph.node_field_type.tolist())
    exported = equivariant.export()
    # the channel view is exactly the graph of the exported network ...
    assert torch.equal(channel_graph.edge_attr, nft_pyg.from_module(exported).edge_attr)
    # ... and converts back into a module computing the same function
    image = torch.randn(2, 1, 11, 11)
    assert torch.allclose(nft_pyg.to_module(channel_graph)(image), exported(image), atol=1e-5)
    draw(channel_graph, out / "escnn_channels.png")

# %% [markdown]
# That is the whole format: the next tutorial runs equivariant operators on
# these graphs.

# %%
print("outputs:", sorted(p.name for p in out.iterdir()))
