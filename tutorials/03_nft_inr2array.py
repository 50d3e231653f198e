# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     name: python3
# ---

# %% [markdown]
# # 3. NFT and Inr2Array on DigitsINR
#
# `DigitsINR` is a dataset of SIRENs (implicit neural representations), each
# fitted to one scikit-learn digit image, stored as neuron graphs with the
# digit's class in `y`. We use it twice:
#
# 1. **classify** the SIRENs directly from their weights with the Neural
#    Functional Transformer (`NFT`, an invariant model);
# 2. **embed** them with `Inr2Array`, an autoencoder whose latent array does
#    not change when the SIREN's hidden neurons are relabelled, and
#    **classify** the latent arrays with `LatentClassifier`.
#
# `python tutorials/03_nft_inr2array.py` runs a small version in well under
# a minute (a few dozen SIRENs, a few epochs: accuracies are only a sanity
# check); `--full` (`NFT_PYG_FULL=1`) uses the whole `"full"` dataset and
# trains for real. The dataset is generated once into `--data` (default
# `outputs/data/digits_inr`, shared with tutorial 5) and reused.

# %%
import argparse
import json
import os
import time
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from torch_geometric.loader import DataLoader

from nft_pyg.datasets import DigitsINR
from nft_pyg.nn import NFTAttention, WeightGraphIndex
from nft_pyg.nn.models import (
    NFT,
    Inr2Array,
    LatentClassifier,
    load_latents,
    save_latents,
)
from nft_pyg.symmetry import permute, random_permutation

parser = argparse.ArgumentParser(description="Tutorial 3: NFT and Inr2Array on DigitsINR")
parser.add_argument("--full", action="store_true",
                    default=os.environ.get("NFT_PYG_FULL", "0") == "1",
                    help="full settings (default: small settings, or NFT_PYG_FULL=1)")
parser.add_argument("--out", default="outputs/03_nft_inr2array", help="output folder")
parser.add_argument("--data", default=None,
                    help="dataset folder (default: <out>/../data/digits_inr, shared by "
                         "tutorials 3 and 5)")
args, _ = parser.parse_known_args()
out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)
data_root = Path(args.data) if args.data else out.parent / "data" / "digits_inr"
torch.manual_seed(0)
if not args.full:
    torch.set_num_threads(1)  # small runs share CI cores

if args.full:
    dataset_options = {"size": "full"}
    epochs, inr_epochs, channels, resolution = 30, 30, 64, 28
else:
    # 100 digits, one fit each, tiny SIRENs at 12x12: generated in seconds
    dataset_options = {"size": "small", "num_images": 100, "extra_fits": 0, "steps": 80,
                       "resolution": 12, "hidden": (16,), "lr": 1e-2, "images_per_shard": 50}
    epochs, inr_epochs, channels, resolution = 3, 3, 16, 12

# %% [markdown]
# ## The dataset
#
# The first call fits the SIRENs (deterministically, in shards that are
# written atomically, so an interrupted generation resumes) and caches the
# graphs; later calls only load them. Splits are by source image.

# %%
start = time.perf_counter()
splits = {split: DigitsINR(str(data_root), split=split, num_workers=0, progress=False,
                           **dataset_options)
          for split in ("train", "val", "test")}
print({split: len(ds) for split, ds in splits.items()},
      f"({time.perf_counter() - start:.1f} s)")
example = splits["train"][0]
print(example)
print("SIREN layer sizes:", example.layout_obj.neuron_layer_sizes,
      "| fit PSNR of the first one:", f"{example.psnr.item():.1f} dB")
train_loader = DataLoader(splits["train"], batch_size=16, shuffle=True)
test_loader = DataLoader(splits["test"], batch_size=64)

# %% [markdown]
# ## The attention layer on its own
#
# The NFT's core is `NFTAttention`, a PyG operator: it takes the node and edge
# features, `edge_index`, and the batch's `WeightGraphIndex` (typed layer ids
# and group ids, built once per batch; nothing is written onto the batch) and
# returns new node and edge features, like `GINEConv` would. Here on 4-channel
# features of the raw weights (input neurons carry no parameters: zero out).

# %%
batch = next(iter(train_loader))
index = WeightGraphIndex.from_data(batch)
x, edge_attr = batch.x.repeat(1, 4), batch.edge_attr.repeat(1, 4)
attention = NFTAttention(4, heads=2)
x_out, edge_out = attention(x, batch.edge_index, edge_attr, index)
print("NFTAttention:", tuple(x.shape), tuple(edge_attr.shape), "->", tuple(x_out.shape),
      tuple(edge_out.shape))

# %% [markdown]
# ## 1. Classify SIRENs with the NFT
#
# `NFT.for_layout` reads the depth, the biases and the input / output sizes
# off the SIREN architecture. The invariant head pools per-layer means of the
# transformer's features, so relabelling hidden neurons cannot change the
# prediction.

# %%
nft = NFT.for_layout(example.layout, hidden_channels=channels, out_channels=10,
                     num_blocks=2, heads=2)
optimizer = torch.optim.AdamW(nft.parameters(), lr=1e-3)


def accuracy(model, loader):
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for batch in loader:
            correct += int((model(batch).argmax(-1) == batch.y).sum())
            total += batch.num_graphs
    return correct / max(total, 1)


for epoch in range(epochs):
    nft.train()
    for batch in train_loader:
        # the model builds the batch's index itself; a loop that reuses a batch
        # can build it once and pass it: nft(batch, index=index)
        loss = torch.nn.functional.cross_entropy(nft(batch), batch.y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    print(f"NFT epoch {epoch + 1}: loss {loss.item():.3f}")
nft_accuracy = accuracy(nft, test_loader)
print(f"NFT test accuracy: {nft_accuracy:.2%} (chance: 10%)")

# invariance: a relabelled SIREN gets the same logits
nft.eval()
with torch.no_grad():
    relabelled = permute(example, random_permutation(example))
    assert torch.allclose(nft(example), nft(relabelled), atol=1e-5)

# %% [markdown]
# ## 2. Embed with Inr2Array
#
# The encoder is an NFT followed by cross-attention from `num_latents`
# learned queries; the decoder is a hypernetwork that outputs SIREN weights.
# The loss compares the image rendered by the decoded SIREN with the image
# rendered by the input SIREN.

# %%
inr2array = Inr2Array(example.layout, channels=channels, num_latents=4, num_blocks=1,
                      heads=2, decoder_channels=4 * channels)
optimizer = torch.optim.AdamW(inr2array.parameters(), lr=1e-3)
for epoch in range(inr_epochs):
    inr2array.train()
    for batch in train_loader:
        loss = inr2array.loss(batch, resolution)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    print(f"Inr2Array epoch {epoch + 1}: reconstruction MSE {loss.item():.4f}")

# %% [markdown]
# The latent arrays of every split, saved in a small checked file format:

# %%
for split in ("train", "test"):
    latents, labels = inr2array.encode_dataset(DataLoader(splits[split], batch_size=64))
    save_latents(out / f"latents_{split}.pt", latents, labels)
train_latents, train_labels = load_latents(out / "latents_train.pt")
test_latents, test_labels = load_latents(out / "latents_test.pt")
print("latents:", tuple(train_latents.shape))

# %% [markdown]
# A reconstruction next to its target (the first test SIREN):

# %%
inr2array.eval()
first = next(iter(test_loader))
with torch.no_grad():
    _, predicted, target = inr2array.loss(first, resolution, return_images=True)
figure, axes = plt.subplots(1, 2, figsize=(4, 2))
for ax, image, title in zip(axes, (target[0, 0], predicted[0, 0]), ("input SIREN", "decoded")):
    ax.imshow(image.clamp(0, 1), cmap="gray")
    ax.set_title(title)
    ax.axis("off")
figure.savefig(out / "reconstruction.png", dpi=100, bbox_inches="tight")
plt.close(figure)

# %% [markdown]
# ## 3. Classify the latent arrays

# %%
classifier = LatentClassifier(channels, num_classes=10, depth=1, heads=2,
                              num_latents=train_latents.size(1))
optimizer = torch.optim.AdamW(classifier.parameters(), lr=1e-3)
for _ in range(10 * epochs):
    classifier.train()
    order = torch.randperm(train_latents.size(0))
    for chunk in order.split(32):
        loss = torch.nn.functional.cross_entropy(classifier(train_latents[chunk]),
                                                 train_labels[chunk])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
classifier.eval()
with torch.no_grad():
    latent_accuracy = float((classifier(test_latents).argmax(-1) == test_labels).float().mean())
print(f"LatentClassifier test accuracy: {latent_accuracy:.2%}")

results = {"full": args.full, "nft_test_accuracy": nft_accuracy,
           "latent_classifier_test_accuracy": latent_accuracy,
           "split_sizes": {split: len(ds) for split, ds in splits.items()}}
(out / "results.json").write_text(json.dumps(results, indent=2))
print("wrote", out / "results.json")

# %% [markdown]
# The experiments behind the project's results tables train these models
# with the same data through `nft_pyg.tasks` (e.g.
# `nft_pyg.tasks.inr_classification(model="nft")`), which adds validation-based
# model selection, resumable run folders and several seeds.
