"""draw(): a layered PNG of a neuron graph."""
from __future__ import annotations

import pytest
import torch
from architectures import random_cnn, random_mlp
from matplotlib.figure import Figure
from torch import nn
from torch_geometric.data import Batch

from nft_pyg import from_module
from nft_pyg.symmetry import draw

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("make", [lambda: random_mlp(0, depth=3)[0],
                                  lambda: random_cnn(1, dim=2, head="spatial")[0]])
def test_draw_writes_png(tmp_path, make):
    path = tmp_path / "graph.png"
    figure = draw(from_module(make()), path)
    assert isinstance(figure, Figure)
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 2000


def test_draw_feature_graph_into_axes_and_larger_network(tmp_path):
    graph = from_module(nn.Sequential(nn.Linear(10, 150), nn.ReLU(), nn.Linear(150, 60),
                                      nn.ReLU(), nn.Linear(60, 10)))
    graph.x = torch.randn(graph.num_nodes, 3)
    figure = Figure()
    ax = figure.add_subplot()
    assert draw(graph, tmp_path / "big.png", ax=ax) is figure
    edges, nodes = ax.collections  # the edge LineCollection and the node scatter
    assert len(edges.get_segments()) == graph.num_edges
    assert len(nodes.get_offsets()) == graph.num_nodes
    assert (tmp_path / "big.png").stat().st_size > 2000


def test_draw_rejects_batches():
    graph = from_module(random_mlp(2)[0])
    with pytest.raises(ValueError, match="batch"):
        draw(Batch.from_data_list([graph, graph]))
