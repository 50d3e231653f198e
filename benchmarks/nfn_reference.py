"""The published ``nfn`` package's layers (0.1.2) as a classifier of our INR
graphs, in the reference configuration of the NFN paper's MNIST INR
classifier (``experiments/classify_siren_configs/nfnet/inv_ff_mnist.yaml``
of github.com/AllanYangZhou/nfn): Gaussian Fourier features of every raw
weight (128 frequencies, scale 3), three ``HNPLinear`` layers with ReLU,
``HNPPool`` (the HNP mean pool), an MLP head (two hidden layers of 1,000
units, dropout 0.1). Only the width is ours, to compare at equal width.

Benchmark-only: the package never imports ``nfn``. Install it with
``pip install -c constraints.txt nfn==0.1.2 einops==0.8.2`` (the ``bench``
extra); ``results.py`` builds this model for the model name
``nfn_package``.
"""
from __future__ import annotations

import torch
from torch import nn

from nft_pyg.tasks.specs import siren_parameters

NAME = "nfn_package"
DEFAULTS = {"hidden": 32, "num_layers": 3, "mapping_size": 128, "scale": 3.0,
            "head_hidden": 1000, "dropout": 0.1}


class NFNPackageClassifier(nn.Module):
    """The reference invariant NFN-HNP, reading a batch of raw SIREN graphs of
    one architecture (weights as the package's ``WeightSpaceFeatures``)."""

    def __init__(self, sizes: list[int], out: int, hidden: int = 32, num_layers: int = 3,
                 mapping_size: int = 128, scale: float = 3.0, head_hidden: int = 1000,
                 dropout: float = 0.1):
        super().__init__()
        try:
            from nfn.common import WeightSpaceFeatures, network_spec_from_wsfeat
            from nfn.layers import GaussianFourierFeatureTransform, HNPLinear, HNPPool, TupleOp
        except ImportError as error:
            raise ImportError("benchmarks/nfn_reference.py needs the published nfn package: "
                              "pip install -c constraints.txt nfn==0.1.2 einops==0.8.2") from error
        self._features = WeightSpaceFeatures
        example = WeightSpaceFeatures(
            [torch.zeros(1, 1, n_out, n_in) for n_in, n_out in zip(sizes[:-1], sizes[1:])],
            [torch.zeros(1, 1, n_out) for n_out in sizes[1:]])
        spec = network_spec_from_wsfeat(example, set_all_dims=True)
        layers: list[nn.Module] = [GaussianFourierFeatureTransform(spec, 1, mapping_size, scale)]
        channels = 2 * mapping_size
        for _ in range(num_layers):
            layers += [HNPLinear(spec, channels, hidden), TupleOp(nn.ReLU())]
            channels = hidden
        layers += [HNPPool(spec), nn.Flatten(start_dim=-2)]
        pooled = hidden * HNPPool.get_num_outs(spec)
        head = [nn.Linear(pooled, head_hidden), nn.ReLU(), nn.Dropout(dropout),
                nn.Linear(head_hidden, head_hidden), nn.ReLU(), nn.Dropout(dropout),
                nn.Linear(head_hidden, out)]
        self.model = nn.Sequential(*layers, *head)

    def forward(self, graph) -> torch.Tensor:
        weights, biases, _, _ = siren_parameters(graph)
        features = self._features([w.unsqueeze(1) for w in weights],
                                  [b.unsqueeze(1) for b in biases])
        return self.model(features)


def build(train_set, out: int, options: dict | None = None) -> nn.Module:
    """``NFNPackageClassifier`` sized from the first graph of ``train_set``."""
    from nft_pyg.graph.layout import Layout

    unknown = set(options or {}) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"nfn_package: unknown option(s) {sorted(unknown)}; it takes "
                         f"{sorted(DEFAULTS)}")
    sizes = Layout.coerce(train_set[0].layout).neuron_layer_sizes
    return NFNPackageClassifier(sizes, out, **{**DEFAULTS, **(options or {})})
