# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     name: python3
# ---

# %% [markdown]
# # 6. Converting the networks you already have
#
# `from_module` reads a network by what its forward computes, not by the
# names of its classes: it follows `nn.Sequential`s, traces every other
# module's forward (one module at a time) and matches each call against the
# forms a neuron graph holds. This tutorial converts the network of the SIREN
# paper as its authors wrote it, a ResNet with `BasicBlock`s (residual
# connections), shows what is refused and why, declares an activation that
# tracing cannot read, and batches graphs of different kernel widths.
# The format is described in {doc}`../graph_format`.
#
# Run it with `python tutorials/06_wild_networks.py` (a few seconds);
# `--out` (default `outputs/06_wild_networks`) receives `summary.json`.

# %%
import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

import nft_pyg
from nft_pyg.graph import (
    EdgeKind,
    GraphLoader,
    Layout,
    UnsupportedModuleError,
    register_activation,
    validate,
)
from nft_pyg.symmetry.permutation import permute, random_permutation

parser = argparse.ArgumentParser(description="Tutorial 6: converting networks from the wild")
parser.add_argument("--full", action="store_true",
                    default=os.environ.get("NFT_PYG_FULL", "0") == "1",
                    help="full settings (wider networks)")
parser.add_argument("--out", default="outputs/06_wild_networks", help="output folder")
args, _ = parser.parse_known_args()
out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)
torch.manual_seed(0)
hidden = 256 if args.full else 32
summary = {}

# %% [markdown]
# ## The SIREN paper's network
#
# The SIREN paper's code wraps each layer in a `SineLayer` whose forward is
# `sin(omega_0 * linear(x))`. Tracing finds the `Linear` and the product
# with the number `omega_0` inside the sine, so the graph holds the linear
# layer and a sine activation with `w0 = omega_0`. `omega_0` may equally be
# a buffer or a parameter holding one value.

# %%
class SineLayer(nn.Module):
    def __init__(self, in_features, out_features, bias=True, is_first=False, omega_0=30):
        super().__init__()
        self.omega_0 = omega_0
        self.is_first = is_first
        self.in_features = in_features
        self.linear = nn.Linear(in_features, out_features, bias=bias)
        with torch.no_grad():
            bound = 1 / in_features if is_first else np.sqrt(6 / in_features) / omega_0
            self.linear.weight.uniform_(-bound, bound)

    def forward(self, input):
        return torch.sin(self.omega_0 * self.linear(input))


class Siren(nn.Module):
    def __init__(self, in_features, hidden_features, hidden_layers, out_features):
        super().__init__()
        layers = [SineLayer(in_features, hidden_features, is_first=True)]
        layers += [SineLayer(hidden_features, hidden_features) for _ in range(hidden_layers)]
        layers.append(nn.Linear(hidden_features, out_features))
        self.net = nn.Sequential(*layers)

    def forward(self, coords):
        return self.net(coords)


siren = Siren(2, hidden, 2, 1).double()
graph = nft_pyg.from_module(siren)
layout = Layout.coerce(graph.layout)
print(graph)
for step in layout.steps[:2]:
    print(step)

coords = torch.rand(64, 2, dtype=torch.float64) * 2 - 1
rebuilt = nft_pyg.to_module(graph)
difference = (rebuilt(coords) - siren(coords)).abs().max().item()
print(f"rebuilt SIREN differs by {difference:.1e}")
summary["siren"] = {"nodes": graph.num_nodes, "edges": graph.num_edges,
                    "w0": layout.steps[1]["params"]["w0"], "difference": difference}

# %% [markdown]
# ## A ResNet block
#
# torchvision's `BasicBlock` computes `relu(bn2(conv2(relu(bn1(conv1(x))))) + x)`.
# The addition becomes **residual edges**: one edge (`edge_kind` RESIDUAL,
# raw feature 1) from channel `p` of the block's input to channel `p` of the
# block's output. A neuron then computes `act(norm(W h + b) + h_skip)`.
# Because the residual edges join the two layers neuron by neuron, the only
# graph automorphisms permute them together: exactly the channel
# permutations that keep the network's function.

# %%
class BasicBlock(nn.Module):
    def __init__(self, planes):
        super().__init__()
        self.conv1 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


resnet = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), BasicBlock(8), BasicBlock(8),
                       nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10)).double().eval()
with torch.no_grad():  # give the norms statistics, as after training
    for module in resnet.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2)
resnet_graph = nft_pyg.from_module(resnet)
validate(resnet_graph)
residual = resnet_graph.edge_kind == int(EdgeKind.RESIDUAL)
print("residual connections (source layer, target layer):",
      Layout.coerce(resnet_graph.layout).residuals(), "edges:", int(residual.sum()))

images = torch.randn(4, 3, 8, 8, dtype=torch.float64)
perm = random_permutation(resnet_graph, torch.Generator().manual_seed(0))
print("one permutation for the whole residual stream:", perm[1].tolist(), perm[3].tolist())
permuted = nft_pyg.to_module(permute(resnet_graph, perm)).eval()
with torch.no_grad():
    kept = (permuted(images) - resnet(images)).abs().max().item()
print(f"permuted ResNet differs by {kept:.1e}")
summary["resnet"] = {"residual_edges": int(residual.sum()), "permuted_difference": kept}

# %% [markdown]
# ## What is refused, and why
#
# A module whose computation is not exactly a supported form is refused,
# naming the module by its path and saying what it computes. A class named
# `Sine` that adds one to its sine is refused however it is named; so is a
# pre-activation block, whose shortcut reads a value no neuron holds.

# %%
class Sine(nn.Module):
    def __init__(self, w0=30.0):
        super().__init__()
        self.w0 = w0

    def forward(self, x):
        return torch.sin(self.w0 * x) + 1


refused = {}
for name, module in {"look-alike sine": nn.Sequential(nn.Linear(2, 4), Sine(), nn.Linear(4, 1)),
                     "softmax head": nn.Sequential(nn.Linear(2, 4), nn.Softmax(dim=1))}.items():
    try:
        nft_pyg.from_module(module)
    except UnsupportedModuleError as error:
        refused[name] = str(error).split(" Supported:")[0]
        print(f"{name}: {refused[name]}")
summary["refused"] = refused

# %% [markdown]
# ## Declaring an activation tracing cannot read
#
# A module computed outside torch (here with numpy) cannot be traced. Declare
# what it computes with `register_activation`; the converter checks the claim
# on random inputs before it trusts it.

# %%
class NumpySine(nn.Module):
    def __init__(self, frequency=3.0):
        super().__init__()
        self.frequency = frequency

    def forward(self, x):
        return torch.from_numpy(np.sin(self.frequency * x.detach().numpy()))


register_activation(NumpySine, "sine", lambda module: {"w0": module.frequency})
declared = nft_pyg.from_module(nn.Sequential(nn.Linear(2, 8), NumpySine(), nn.Linear(8, 1)))
print("declared activation:", Layout.coerce(declared.layout).steps[1])

# %% [markdown]
# ## Batching graphs of different kernel widths
#
# An MLP's edges carry one weight, a 3x3 conv's nine. `GraphLoader` (and
# `collate_graphs`) pad each batch to its widest kernel; PyG's own
# `DataLoader` needs the graphs padded first with `PadKernels`, and says so.

# %%
mlp_graph = nft_pyg.from_module(nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 1)))
cnn_graph = nft_pyg.from_module(nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3)))
siren_graph = nft_pyg.from_module(Siren(2, hidden, 2, 1))
batch = next(iter(GraphLoader([mlp_graph, cnn_graph, siren_graph], batch_size=3)))
print(batch)
summary["batch_kernel_width"] = batch.kernel_width.tolist()
(out / "summary.json").write_text(json.dumps(summary, indent=2))
