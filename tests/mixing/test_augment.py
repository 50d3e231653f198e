"""Random function-preserving augmentations: the function is kept, the weights change."""
import pytest
import torch
from torch import nn
from torch_geometric.data import Batch

import nft_pyg
from nft_pyg.inr import siren
from nft_pyg.tasks.runner import with_augmentations
from nft_pyg.transforms.augment import RandomHiddenPermutation, RandomSignFlip


def _siren():
    torch.manual_seed(0)
    return siren(2, [8, 6], 1, 30.0, 30.0).double()


@pytest.mark.parametrize("transform", [RandomSignFlip, RandomHiddenPermutation])
def test_augmentation_keeps_the_function_and_changes_the_weights(transform):
    module = _siren()
    graph = nft_pyg.from_module(module)
    augmented = transform(torch.Generator().manual_seed(3))(graph)
    inputs = torch.rand(20, 2, dtype=torch.float64) * 2 - 1
    torch.testing.assert_close(nft_pyg.to_module(augmented)(inputs), module(inputs),
                               atol=1e-12, rtol=0)
    assert not torch.equal(augmented.edge_attr, graph.edge_attr)
    assert torch.equal(graph.edge_attr, nft_pyg.from_module(module).edge_attr)  # input untouched


def test_sign_flip_draws_a_new_flip_each_call():
    graph = nft_pyg.from_module(_siren())
    flip = RandomSignFlip(torch.Generator().manual_seed(0))
    assert not torch.equal(flip(graph).edge_attr, flip(graph).edge_attr)


def test_sign_flip_leaves_relu_networks_alone():
    module = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    graph = nft_pyg.from_module(module)
    assert torch.equal(RandomSignFlip()(graph).edge_attr, graph.edge_attr)


def test_augmentations_reject_batches():
    graph = nft_pyg.from_module(_siren())
    batch = Batch.from_data_list([graph, graph])
    with pytest.raises(TypeError, match="RandomSignFlip: expected a single graph"):
        RandomSignFlip()(batch)


def test_with_augmentations_copies_the_dataset():
    graphs = [nft_pyg.from_module(_siren()) for _ in range(2)]

    class Graphs(torch.utils.data.Dataset):
        transform = None

        def __len__(self):
            return len(graphs)

        def __getitem__(self, i):
            return graphs[i] if self.transform is None else self.transform(graphs[i])

    plain = Graphs()
    augmented = with_augmentations(plain, ["sign_flip", "permute"])
    assert plain.transform is None and augmented.transform is not None
    assert not torch.equal(augmented[0].edge_attr, plain[0].edge_attr)
    assert with_augmentations(plain, []) is plain
    with pytest.raises(ValueError, match=r"unknown augmentation\(s\) 'rotate'; choose from "
                                         r"permute, sign_flip"):
        with_augmentations(plain, ["rotate"])
