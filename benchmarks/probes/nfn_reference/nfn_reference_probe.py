"""Diagnostic, not part of the package or the tests: a classifier built from
the layers of the published ``nfn`` package (0.1.2) on our DigitsINR.
See benchmarks/probes/README.md (session 5)."""
import argparse
import json
import sys
import time

p = argparse.ArgumentParser()
p.add_argument("--nfn-path", default="/tmp/nfnpkg", help="where nfn and einops are installed")
p.add_argument("--data-root", default="/work/data")
p.add_argument("--bias-init", default="uniform", choices=["uniform", "zero"])
p.add_argument("--mode", default="np"); p.add_argument("--epochs", type=int, default=10)
p.add_argument("--hidden", type=int, default=128); p.add_argument("--ff", type=float, default=0.0)
p.add_argument("--scale", default="none"); p.add_argument("--shared", default="false")
p.add_argument("--lr", type=float, default=1e-3); p.add_argument("--views", type=int, default=0)
a = p.parse_args()
sys.path.insert(0, a.nfn_path)
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
from nfn.common import WeightSpaceFeatures, network_spec_from_wsfeat  # noqa: E402
from nfn.layers import (GaussianFourierFeatureTransform, HNPLinear, HNPPool,  # noqa: E402
                        NPLinear, NPPool, TupleOp)

from nft_pyg.graph.convert import to_state_dict  # noqa: E402
from nft_pyg.tasks.data import load_splits  # noqa: E402

torch.manual_seed(0); torch.set_num_threads(1)
opts = {"shared_init": a.shared == "true"}
if a.bias_init != "uniform":
    opts["bias_init"] = a.bias_init
if a.views: opts.update(image_views=a.views, extra_fits=0)
splits = load_splits("digits_inr", root=a.data_root, size="full", progress=False, **opts)

def dense(ds):
    ws, bs, ys = [[], [], []], [[], [], []], []
    for g in ds:
        sd = to_state_dict(g); keys = list(sd)
        wk = [k for k in keys if k.endswith("weight")]; bk = [k for k in keys if k.endswith("bias")]
        for i in range(3): ws[i].append(sd[wk[i]]); bs[i].append(sd[bk[i]])
        ys.append(int(g.y))
    return [torch.stack(w)[:, None] for w in ws], [torch.stack(b)[:, None] for b in bs], torch.tensor(ys)
data = {k: dense(v) for k, v in splits.items()}
W, B, Y = data["train"]
print("shapes", [w.shape for w in W], len(Y), flush=True)
if a.scale == "std":
    wstd = [w.std() for w in W]; bstd = [b.std() for b in B]
else:
    wstd = [1.0] * 3; bstd = [1.0] * 3
def feat(W, B, idx):
    return WeightSpaceFeatures([w[idx] / s for w, s in zip(W, wstd)], [b[idx] / s for b, s in zip(B, bstd)])
spec = network_spec_from_wsfeat(feat(W, B, slice(0, 2)))
Layer = NPLinear if a.mode == "np" else HNPLinear
Pool = NPPool if a.mode == "np" else HNPPool
layers = []
cin = 1
if a.ff:
    layers.append(GaussianFourierFeatureTransform(spec, 1, mapping_size=128, scale=a.ff)); cin = 256
for i in range(3):
    layers += [Layer(spec, cin, a.hidden), TupleOp(nn.ReLU())]; cin = a.hidden
model = nn.Sequential(*layers, Pool(spec), nn.Flatten(start_dim=-2),
                      nn.Linear(a.hidden * Pool.get_num_outs(spec), 1000), nn.ReLU(), nn.Linear(1000, 10))
print("params", sum(p.numel() for p in model.parameters()), flush=True)
opt = torch.optim.Adam(model.parameters(), lr=a.lr)
n = len(Y); t0 = time.time()
def evaluate(split):
    W, B, Y = data[split]; model.eval(); correct = 0
    with torch.no_grad():
        for s in range(0, len(Y), 256):
            idx = slice(s, s + 256); correct += (model(feat(W, B, idx)).argmax(-1) == Y[idx]).sum().item()
    model.train(); return correct / len(Y)
for ep in range(a.epochs):
    perm = torch.randperm(n); tot = 0
    for s in range(0, n, 32):
        idx = perm[s:s + 32]
        loss = nn.functional.cross_entropy(model(feat(W, B, idx)), Y[idx])
        opt.zero_grad(); loss.backward(); opt.step(); tot += loss.item() * len(idx)
    print(json.dumps({"epoch": ep + 1, "train_loss": round(tot / n, 4), "train_acc": evaluate("train"),
                      "val": evaluate("val"), "test": evaluate("test"), "s": round(time.time() - t0)}), flush=True)
