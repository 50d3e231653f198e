# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     name: python3
# ---

# %% [markdown]
# # 4. Mixing weight-space operators with GNN layers
#
# Our operators are ordinary PyG modules, so they combine with any PyG layer.
# They are called as PyG convs are, `op(x, edge_index, edge_attr, index) ->
# (x, edge_attr)` (nodes *and* edges are updated; `index` is the batch's
# `WeightGraphIndex`, its layer ids); PyG convolutions such as `GATv2Conv` are
# `conv(x, edge_index, edge_attr) -> x`. Both go into one
# `torch_geometric.nn.Sequential`. We build three models that predict a
# property of a network from its weights and train them briefly:
#
# - an NFN: `NPConv -> NPConv -> NPConv -> NPPool`;
# - a mix: `NPConv -> GATv2Conv -> NPConv -> NPPool`;
# - a plain GNN: `GATv2Conv` layers and a mean pool, on graphs with reverse
#   edges and one-hot layer encodings (`nft_pyg.transforms`).
#
# All three are invariant to permutations of the hidden neurons, which we
# check with `nft_pyg.symmetry.check_equivariance`.
#
# `python tutorials/04_mixing_gnn.py` (small settings) or `--full`
# (`NFT_PYG_FULL=1`): a larger zoo and longer training.

# %%
import argparse
import json
import os
import time
from pathlib import Path

import torch
from torch import nn
from torch_geometric.data import Batch
from torch_geometric.loader import DataLoader
from torch_geometric.nn import GATv2Conv, Sequential, global_mean_pool

import nft_pyg
from nft_pyg.nn import NPConv, NPPool, WeightGraphIndex, WeightSpaceActivation
from nft_pyg.nn.mixing import EndpointEdgeUpdate
from nft_pyg.symmetry import check_equivariance, permute, random_permutation
from nft_pyg.transforms.encodings import AddLayerEncoding
from nft_pyg.transforms.reverse_edges import AddReverseEdges

parser = argparse.ArgumentParser(description="Tutorial 4: mixing our operators with GNN layers")
parser.add_argument("--full", action="store_true",
                    default=os.environ.get("NFT_PYG_FULL", "0") == "1",
                    help="full settings (default: small settings, or NFT_PYG_FULL=1)")
parser.add_argument("--out", default="outputs/04_mixing_gnn", help="output folder")
args, _ = parser.parse_known_args()
out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)
torch.manual_seed(0)
torch.set_num_threads(torch.get_num_threads() if args.full else 1)  # small runs share CI cores

zoo_size = 2000 if args.full else 96
epochs = 60 if args.full else 4
channels = 32 if args.full else 16
hidden = 8

# %% [markdown]
# ## A zoo and a task
#
# Random MLPs `1 -> 8 -> 8 -> 1` with tanh activations and random weight
# scales. The target is a property of the *function* each network computes,
# so it cannot depend on the order of the hidden neurons: the network's
# outputs at three fixed points.

# %%
points = torch.tensor([[-1.0], [0.0], [1.0]])


def random_network() -> nn.Sequential:
    network = nn.Sequential(nn.Linear(1, hidden), nn.Tanh(), nn.Linear(hidden, hidden),
                            nn.Tanh(), nn.Linear(hidden, 1))
    scale = float(torch.empty(()).uniform_(0.5, 2.0))
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.mul_(scale)
    return network


graphs = []
for _ in range(zoo_size):
    network = random_network()
    graph = nft_pyg.from_module(network)
    with torch.no_grad():
        graph.y = network(points).reshape(1, -1)
    graphs.append(graph)
split = int(0.8 * zoo_size)
train_graphs, test_graphs = graphs[:split], graphs[split:]
num_layers = graphs[0].num_weight_layers
print(f"{len(train_graphs)} train / {len(test_graphs)} test networks, L = {num_layers}")

# %% [markdown]
# ## The models
#
# The mixed model runs `GATv2Conv` between two NP layers. `GATv2Conv` updates
# the neurons only; `EndpointEdgeUpdate` then updates each edge from its own
# features and its two end neurons (the edge block of a graph network), so
# the next NP layer sees new edge features too. Every piece is equivariant to
# neuron permutations, so the model is invariant after the pool.

# %%
OPERATOR = "x, edge_index, edge_attr, index -> x, edge_attr"
POINTWISE = "x, edge_attr, index -> x, edge_attr"


def nfn_model(gat: bool) -> Sequential:
    middle = ([(GATv2Conv(channels, channels, heads=1, edge_dim=channels),
                "x, edge_index, edge_attr -> x"),
               (EndpointEdgeUpdate(channels, channels, channels),
                "x, edge_attr, index -> edge_attr")]
              if gat else [(NPConv(channels, channels, num_layers), OPERATOR)])
    pool = NPPool(channels, num_layers)
    return Sequential("x, edge_index, edge_attr, index", [
        (NPConv(1, channels, num_layers), OPERATOR),
        (WeightSpaceActivation("relu"), POINTWISE),
        *middle,
        (WeightSpaceActivation("relu"), POINTWISE),
        (NPConv(channels, channels, num_layers), OPERATOR),
        (pool, "x, edge_attr, index -> x"),
        (nn.Sequential(nn.Linear(pool.out_channels, 64), nn.ReLU(),
                       nn.Linear(64, len(points))), "x -> x"),
    ])


class PlainGNN(nn.Module):
    """GATv2 layers on graphs with reverse edges and layer encodings."""

    def __init__(self, node_in: int, edge_in: int):
        super().__init__()
        self.node_in = nn.Linear(node_in, channels)
        self.convs = nn.ModuleList(GATv2Conv(channels, channels, edge_dim=edge_in)
                                   for _ in range(3))
        self.head = nn.Sequential(nn.Linear(channels, 64), nn.ReLU(), nn.Linear(64, len(points)))

    def forward(self, x, edge_index, edge_attr, batch):
        x = self.node_in(x)
        for conv in self.convs:
            x = conv(x, edge_index, edge_attr=edge_attr).relu()
        return self.head(global_mean_pool(x, batch))


# the plain GNN sees messages in both directions and knows each weight's layer
to_gnn_input = [AddReverseEdges(concat_dir=True), AddLayerEncoding(num_layers)]


def gnn_graph(graph):
    graph = graph.clone()
    for transform in to_gnn_input:
        graph = transform(graph)
    return graph


gnn_train = [gnn_graph(g) for g in train_graphs]
gnn_test = [gnn_graph(g) for g in test_graphs]
models = {
    "NFN (NPConv x3)": (nfn_model(gat=False), train_graphs, test_graphs),
    "mixed (NPConv + GATv2Conv)": (nfn_model(gat=True), train_graphs, test_graphs),
    "plain GNN (GATv2Conv x3)": (PlainGNN(gnn_train[0].x.size(1),
                                          gnn_train[0].edge_attr.size(1)), gnn_train, gnn_test),
}
for name, (model, _, _) in models.items():
    print(f"{name}: {sum(p.numel() for p in model.parameters())} parameters")

# %% [markdown]
# ## Invariance
#
# Before training: each model's prediction is unchanged when the hidden
# neurons of the input network are permuted.

# %%
def run(model, batch):
    """The model on a batch: our models get its WeightGraphIndex, the plain GNN
    its batch vector."""
    last = batch.batch if isinstance(model, PlainGNN) else WeightGraphIndex.from_data(batch)
    return model(batch.x, batch.edge_index, batch.edge_attr, last)


def predict(model, graph):
    """The model's prediction for one neuron graph (transformed for the plain GNN)."""
    if isinstance(model, PlainGNN):
        graph = gnn_graph(graph)
    with torch.no_grad():
        return run(model, Batch.from_data_list([graph]))


graph = test_graphs[0]
permuted = permute(graph, random_permutation(graph))
for name, (model, _, _) in models.items():
    error = (predict(model, graph) - predict(model, permuted)).abs().max().item()
    print(f"{name}: invariance error {error:.1e}")
    assert error < 1e-5
    if not isinstance(model, PlainGNN):  # the same check, on several random permutations
        assert check_equivariance(model, graph, atol=1e-5)

# %% [markdown]
# ## Training
#
# A few epochs of Adam on the mean squared error; the test error is compared
# with predicting the mean target.

# %%
def evaluate(model, dataset):
    loader = DataLoader(dataset, batch_size=256)
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in loader:
            prediction = run(model, batch)
            total += float(((prediction - batch.y) ** 2).sum())
            count += batch.y.numel()
    return total / count


results = {}
for name, (model, train_set, test_set) in models.items():
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    loader = DataLoader(train_set, batch_size=32, shuffle=True)
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        for batch in loader:
            loss = ((run(model, batch) - batch.y) ** 2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    results[name] = {"test_mse": evaluate(model, test_set),
                     "train_seconds": time.perf_counter() - start}
    print(f"{name}: test MSE {results[name]['test_mse']:.4f} "
          f"({results[name]['train_seconds']:.1f} s)")

targets = torch.cat([g.y for g in test_graphs])
train_mean = torch.cat([g.y for g in train_graphs]).mean(0)
results["predict the mean"] = {"test_mse": float(((targets - train_mean) ** 2).mean())}
print(f"predict the mean: test MSE {results['predict the mean']['test_mse']:.4f}")
(out / "results.json").write_text(json.dumps({"full": args.full, "epochs": epochs,
                                               "results": results}, indent=2))
print("wrote", out / "results.json")

# %% [markdown]
# With the small settings the numbers only show that everything trains; run
# with `--full` for a meaningful comparison. The mixing guide
# (`docs/mixing.md`) lists which combinations keep which symmetry.
