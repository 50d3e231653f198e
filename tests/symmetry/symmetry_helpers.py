"""Networks with trained norm statistics and toy operators for the symmetry tests."""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_geometric.utils import scatter

from nft_pyg.graph.modules import Sine
from nft_pyg.graph.types import NodeRole
from nft_pyg.nn.structure import WeightGraphIndex

DOUBLE = torch.float64


@torch.no_grad()
def train_norms(module: nn.Module, example_shape: tuple[int, ...], seed: int,
                steps: int = 3) -> nn.Module:
    """Random affine norm parameters, running stats from a few train-mode passes; eval mode."""
    generator = torch.Generator().manual_seed(seed)
    for child in module.modules():
        if isinstance(child, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm)):
            if getattr(child, "weight", None) is not None:
                child.weight.copy_(torch.randn(child.weight.shape, generator=generator,
                                               dtype=DOUBLE) + 1)
            if getattr(child, "bias", None) is not None:
                child.bias.copy_(torch.randn(child.bias.shape, generator=generator, dtype=DOUBLE))
    module.train()
    for _ in range(steps):
        module(torch.randn(8, *example_shape, generator=generator, dtype=DOUBLE) * 2 + 0.5)
    return module.eval()


def norm_mlp(seed: int) -> tuple[nn.Module, Tensor]:
    """Linear-BatchNorm1d-Sine-Linear(no bias)-LayerNorm-ReLU-Linear, trained norm stats."""
    torch.manual_seed(seed)
    module = nn.Sequential(nn.Linear(3, 6), nn.BatchNorm1d(6), Sine(3.0),
                           nn.Linear(6, 5, bias=False), nn.LayerNorm(5), nn.ReLU(),
                           nn.Linear(5, 2)).to(DOUBLE)
    train_norms(module, (3,), seed)
    return module, torch.randn(4, 3, dtype=DOUBLE)


def norm_cnn(seed: int) -> tuple[nn.Module, Tensor]:
    """Conv2d-BatchNorm2d-ReLU-MaxPool-Conv2d(no bias)-BatchNorm2d-Tanh-Flatten(4 pos)-Linear."""
    torch.manual_seed(seed)
    module = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                           nn.MaxPool2d(2), nn.Conv2d(4, 3, 2, bias=False), nn.BatchNorm2d(3),
                           nn.Tanh(), nn.Flatten(), nn.Linear(3 * 2 * 2, 5), nn.GELU(),
                           nn.Linear(5, 2)).to(DOUBLE)
    train_norms(module, (2, 6, 6), seed)
    return module, torch.randn(4, 2, 6, 6, dtype=DOUBLE)


# --- toy operators -----------------------------------------------------------
def _mean(edge_attr: Tensor, node: Tensor, x: Tensor) -> Tensor:
    """``[N, C]``: mean of the edge features at each node (``node`` per edge)."""
    return scatter(edge_attr, node, 0, dim_size=x.size(0), reduce="mean")


class ToyEquivariant(nn.Module):
    """Per-node / per-edge maps plus neighbour and layer means: NP-equivariant."""

    def __init__(self, channels: int, out: int = 3):
        super().__init__()
        self.node = nn.Linear(channels, out).to(DOUBLE)
        self.edge = nn.Linear(channels, out).to(DOUBLE)
        self.message = nn.Linear(channels, out, bias=False).to(DOUBLE)

    def forward(self, x: Tensor, edge_attr: Tensor, graph) -> tuple[Tensor, Tensor]:
        structure = WeightGraphIndex.from_data(graph)
        x_out = torch.tanh(self.node(x) + self.message(_mean(edge_attr, structure.dst, x)
                                                       + _mean(edge_attr, structure.src, x)))
        layer_mean = structure.node_layer_mean(x)
        x_out = x_out + self.message(layer_mean[structure.node_batch, structure.node_layer])
        edge_out = self.edge(edge_attr) * (x_out[structure.src] - x_out[structure.dst])
        return x_out, edge_out


class ToyHiddenPosition(ToyEquivariant):
    """Adds the position of hidden neurons to the features: not equivariant."""

    def forward(self, x, edge_attr, graph):
        x_out, edge_out = super().forward(x, edge_attr, graph)
        hidden = (graph.node_role == int(NodeRole.HIDDEN)).to(DOUBLE)
        return x_out + (graph.node_pos * hidden).unsqueeze(-1), edge_out


class ToyIOPosition(ToyEquivariant):
    """Adds the position of input/output neurons: equivariant to hidden permutations
    only (like an HNP layer), not to permutations of the input/output neurons."""

    def forward(self, x, edge_attr, graph):
        x_out, edge_out = super().forward(x, edge_attr, graph)
        io = (graph.node_role != int(NodeRole.HIDDEN)).to(DOUBLE)
        return x_out + (graph.node_pos * io).unsqueeze(-1), edge_out


class ToyReadout(nn.Module):
    """Mean of edge features and of hidden node features per graph: invariant."""

    def forward(self, x: Tensor, edge_attr: Tensor, graph) -> Tensor:
        structure = WeightGraphIndex.from_data(graph)
        edges = scatter(edge_attr, structure.edge_batch, 0, dim_size=structure.num_graphs,
                        reduce="mean")
        nodes = scatter(x, structure.node_batch, 0, dim_size=structure.num_graphs,
                        reduce="sum")
        return torch.cat([edges, nodes], dim=-1)


class ToyFirstHidden(nn.Module):
    """Reads the features of the first hidden neuron of each graph: not invariant."""

    def forward(self, x: Tensor, edge_attr: Tensor, graph) -> Tensor:
        first = (graph.node_layer == 1) & (graph.node_pos == 0)
        return x[first]


class ToyGraphModule(nn.Module):
    """``forward(graph) -> graph``: a per-node / per-edge map, equivariant."""

    def __init__(self, shift_hidden_by_position: bool = False):
        super().__init__()
        self.shift = shift_hidden_by_position

    def forward(self, graph):
        out = graph.clone()
        out.x = torch.sin(graph.x) * 2 + _mean(graph.edge_attr, graph.edge_index[1], graph.x)[
            :, : graph.x.size(1)]
        if self.shift:
            out.x = out.x + (graph.node_layer == 1).unsqueeze(-1) * graph.node_pos.unsqueeze(-1)
        out.edge_attr = graph.edge_attr ** 3
        return out
