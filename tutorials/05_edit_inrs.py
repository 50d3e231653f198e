# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     name: python3
# ---

# %% [markdown]
# # 5. Editing INRs in weight space
#
# An equivariant neural functional can *edit* a network: it reads the
# network's weights and outputs a change of every weight and bias, in the
# network's own format. Here `NFNEditor` (the equivariant NFN of Zhou et al.,
# 2023) learns to **dilate** the digit a SIREN draws: the edited SIREN should
# render the morphologically dilated image (a 3x3 max filter), as in the
# INR-editing experiments of NFN.
#
# The edited weights stay a SIREN of the same architecture, so
# `nft_pyg.to_module` turns them back into a network we can render.
#
# `python tutorials/05_edit_inrs.py` runs a small version in well under a
# minute (the edit barely starts to learn); `--full` (`NFT_PYG_FULL=1`) uses
# the whole dataset and trains for real.

# %%
import argparse
import json
import os
from pathlib import Path

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch_geometric.loader import DataLoader

import nft_pyg
from nft_pyg import WeightSpace
from nft_pyg.datasets import DigitsINR
from nft_pyg.inr import render_image, render_module
from nft_pyg.nn.models import NFNEditor
from nft_pyg.symmetry import check_equivariance

parser = argparse.ArgumentParser(description="Tutorial 5: editing INRs in weight space")
parser.add_argument("--full", action="store_true",
                    default=os.environ.get("NFT_PYG_FULL", "0") == "1",
                    help="full settings (default: small settings, or NFT_PYG_FULL=1)")
parser.add_argument("--out", default="outputs/05_edit_inrs", help="output folder")
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
    epochs, channels = 50, 64
else:
    # the small dataset of tutorial 3 (generated once for both)
    dataset_options = {"size": "small", "num_images": 100, "extra_fits": 0, "steps": 80,
                       "resolution": 12, "hidden": (16,), "lr": 1e-2, "images_per_shard": 50}
    epochs, channels = 4, 16

# %% [markdown]
# ## Data and target
#
# The SIRENs of `DigitsINR`; each graph carries the image it was fitted to
# (`graph.image`). The target of the edit is that image dilated.

# %%
splits = {split: DigitsINR(str(data_root), split=split, num_workers=0, progress=False,
                           **dataset_options) for split in ("train", "test")}
example = splits["train"][0]
layout = example.layout_obj
w0 = layout.steps[1]["params"]["w0"]  # the sine frequency, from the layout
resolution = example.image.shape[-1]
print({split: len(ds) for split, ds in splits.items()}, "| SIREN",
      layout.neuron_layer_sizes, "| w0", w0, "| resolution", resolution)


def dilate(images):
    return F.max_pool2d(images, kernel_size=3, stride=1, padding=1)


def render(graph):
    """Images [B, 1, H, W] drawn by a batch of raw SIREN graphs (differentiable)."""
    ws = WeightSpace.from_graph(graph)
    return render_image(ws.weights, ws.biases, resolution, w0=w0, w0_first=w0)


# %% [markdown]
# ## The editor
#
# `NFNEditor.for_layout` sizes the editor for the SIREN architecture. Its
# read-out starts near zero, so the first edit is close to the identity.
# The delta is equivariant: relabelling the hidden neurons of the input
# SIREN relabels the delta the same way, which `check_equivariance`
# verifies.

# %%
editor = NFNEditor.for_layout(example.layout, mode="hnp", hidden_channels=channels,
                              num_nf_layers=2)
editor.eval()
print(editor, "| equivariant:", bool(check_equivariance(editor, example, atol=1e-5)))


def edit_loss(batch):
    edited = editor.edit(batch)
    return F.mse_loss(render(edited), dilate(batch.image.reshape(-1, 1, resolution,
                                                                  resolution)))


def mean_loss(loader, edit=True):
    editor.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in loader:
            target = dilate(batch.image.reshape(-1, 1, resolution, resolution))
            images = render(editor.edit(batch) if edit else batch)
            total += float(F.mse_loss(images, target, reduction="sum"))
            count += target.numel()
    return total / count


train_loader = DataLoader(splits["train"], batch_size=16, shuffle=True)
test_loader = DataLoader(splits["test"], batch_size=64)
no_edit = mean_loss(test_loader, edit=False)
print(f"test MSE to the dilated image without editing: {no_edit:.4f}")

# %% [markdown]
# ## Training

# %%
optimizer = torch.optim.Adam(editor.parameters(), lr=1e-3)
for epoch in range(epochs):
    editor.train()
    for batch in train_loader:
        loss = edit_loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    print(f"epoch {epoch + 1}: train MSE {loss.item():.4f}")
edited_mse = mean_loss(test_loader)
print(f"test MSE to the dilated image after editing: {edited_mse:.4f} "
      f"(without editing: {no_edit:.4f})")

# %% [markdown]
# ## Back to a network
#
# An edited graph is a valid raw graph: `to_module` rebuilds the edited SIREN
# as an `nn.Sequential`, which renders the same image as the tensors above.

# %%
editor.eval()
graph = splits["test"][0]
with torch.no_grad():
    edited_graph = editor.edit(graph)
    edited_siren = nft_pyg.to_module(edited_graph)
    edited_image = render_module(edited_siren, resolution)[None]  # [1, 1, H, W]
    assert torch.allclose(edited_image, render(edited_graph), atol=1e-5)
    panels = {"SIREN": render(graph)[0, 0], "target (dilated)": dilate(graph.image)[0, 0],
              "edited SIREN": edited_image[0, 0]}
figure, axes = plt.subplots(1, 3, figsize=(6, 2))
for ax, (title, image) in zip(axes, panels.items()):
    ax.imshow(image.clamp(0, 1), cmap="gray")
    ax.set_title(title, fontsize=9)
    ax.axis("off")
figure.savefig(out / "edit.png", dpi=100, bbox_inches="tight")
plt.close(figure)
(out / "results.json").write_text(json.dumps(
    {"full": args.full, "test_mse_no_edit": no_edit, "test_mse_edited": edited_mse},
    indent=2))
print("wrote", out / "edit.png", "and", out / "results.json")

# %% [markdown]
# The editing experiments of the project's results tables run this task
# through `nft_pyg.tasks.inr_editing`, which adds validation-based model
# selection, resumable run folders and several seeds.
