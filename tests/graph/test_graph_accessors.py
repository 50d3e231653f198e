"""nft_pyg.graph.accessors: graph ids and the input- and output-neuron masks, for a graph
and a batch alike."""
import torch
from torch import nn
from torch_geometric.data import Batch

import nft_pyg
from nft_pyg.graph.accessors import batch_vector, is_input_neuron, is_output_neuron


def networks():
    return [nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1)),
            nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 4), nn.Tanh(),
                          nn.Linear(4, 2))]


def test_batch_vector_of_a_graph_is_zeros_and_of_a_batch_is_its_batch():
    graphs = [nft_pyg.from_module(net) for net in networks()]
    assert torch.equal(batch_vector(graphs[0]), torch.zeros(graphs[0].num_nodes,
                                                             dtype=torch.long))
    assert batch_vector(graphs[0], num_nodes=4, device="cpu").tolist() == [0, 0, 0, 0]
    batch = Batch.from_data_list(graphs)
    assert batch_vector(batch) is batch.batch


def test_input_neurons_are_the_nodes_of_layer_zero():
    batch = Batch.from_data_list([nft_pyg.from_module(net) for net in networks()])
    mask = is_input_neuron(batch)
    assert mask.dtype == torch.bool and mask.sum().item() == 2 + 3
    assert torch.equal(mask, batch.node_layer == 0)


def test_output_neurons_are_the_nodes_of_each_networks_last_layer():
    batch = Batch.from_data_list([nft_pyg.from_module(net) for net in networks()])
    mask = is_output_neuron(batch)
    assert mask.dtype == torch.bool and mask.sum().item() == 1 + 2
    last = torch.tensor([2, 3])[batch.batch]          # depth of each node's network
    assert torch.equal(mask, batch.node_layer == last)
    assert not (mask & is_input_neuron(batch)).any()
