"""Function-preserving random augmentations of raw neuron graphs.

Each transform maps a network to another network that computes the same
function, so a label that depends on the function (the class of the digit an
INR draws, the accuracy of a CNN) stays valid. Permutations teach a
non-equivariant model (a flat MLP) the symmetry the NF layers have built in;
sign flips are a symmetry of odd activations (``sin``, ``tanh``) that no NF
layer of the papers is invariant to, so they augment every model.
"""
from __future__ import annotations

import torch
from torch_geometric.data import Data
from torch_geometric.transforms import BaseTransform

from ..graph.layout import Layout
from ..symmetry.permutation import permute, random_permutation
from ..symmetry.sign_flip import flippable_layers, random_sign_flip_of, sign_flip


def _check_graph(data, where: str) -> None:
    if not isinstance(data, Data) or getattr(data, "layout", None) is None:
        raise TypeError(f"{where}: expected a single raw NeuronGraph with a layout, got "
                        f"{type(data).__name__}")
    if isinstance(data.layout, (list, tuple)):
        raise TypeError(f"{where}: expected a single graph, got a batch; apply it as a "
                        "dataset transform (before collation)")


class RandomSignFlip(BaseTransform):
    r"""Flip the sign of each neuron of every flippable hidden layer with
    probability 1/2: :math:`W_l \leftarrow D_l W_l D_{l-1}`,
    :math:`b_l \leftarrow D_l b_l` with random diagonal :math:`D_l \in
    \{\pm 1\}^{n_l}`. The network's function is unchanged when the layer's
    activation is odd (:func:`~nft_pyg.symmetry.flippable_layers`; SIRENs:
    every hidden layer). Graphs without a flippable layer are returned
    unchanged.

    Args:
        generator (torch.Generator, optional): source of randomness (default:
            the global generator, so DataLoader workers differ by their seed).
    """

    def __init__(self, generator: torch.Generator | None = None):
        self.generator = generator
        self._flippable: dict[str, bool] = {}

    def forward(self, data: Data) -> Data:
        _check_graph(data, "RandomSignFlip")
        layout = data.layout
        if layout not in self._flippable:
            self._flippable[layout] = bool(
                flippable_layers(Layout.coerce(layout, "RandomSignFlip")))
        if not self._flippable[layout]:
            return data
        return sign_flip(data, random_sign_flip_of(data, self.generator))

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}()"


class RandomHiddenPermutation(BaseTransform):
    r"""Relabel the neurons of every hidden layer by a uniformly random
    permutation (:func:`~nft_pyg.symmetry.random_permutation`); input and
    output neurons stay in place, so the network's function is unchanged.

    Args:
        generator (torch.Generator, optional): source of randomness.
    """

    def __init__(self, generator: torch.Generator | None = None):
        self.generator = generator

    def forward(self, data: Data) -> Data:
        _check_graph(data, "RandomHiddenPermutation")
        return permute(data, random_permutation(data, self.generator))

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}()"


#: the augmentations by name, as the task runner's ``augment`` option takes them
AUGMENTATIONS = {"sign_flip": RandomSignFlip, "permute": RandomHiddenPermutation}
