"""Reverse edges for generic GNNs on neuron graphs."""
from __future__ import annotations

from typing import Any

import torch
from torch_geometric.transforms import BaseTransform

FORWARD, REVERSE = 0, 1


def _is_edge_key(key: str) -> bool:
    """Per-edge attributes of a neuron graph are named ``edge_*`` (``edge_attr``,
    ``edge_layer``, ``edge_kind``, encodings stored as ``edge_<name>``)."""
    return key.startswith("edge_") and key != "edge_index"


class AddReverseEdges(BaseTransform):
    r"""Append the reverse ``v -> u`` of every edge ``u -> v``, marked by ``edge_dir``.

    A neuron graph's edges point from layer ``l - 1`` to layer ``l``; a
    message-passing GNN then only sends information forwards. This
    transform appends the reversed edges after the original ones: every
    edge attribute (``edge_attr``, ``edge_layer``, ``edge_kind``, any
    ``edge_*`` tensor) is duplicated, and the new ``edge_dir`` ``[2E]``
    (long, not shifted by batching) is ``0`` on forward and ``1`` on
    reverse edges. Give ``edge_dir`` to the GNN as an edge feature
    (``concat_dir=True`` appends it to ``edge_attr`` as a column) so that it
    can tell the directions apart.

    Our weight-space operators (``NPConv``, ``HNPConv``, ``NFTAttention``,
    pools) need the forward edges only: they read both directions from
    them already, and on a graph with reverse edges they would count every
    weight twice. Use this transform for generic GNN branches, and
    :func:`forward_edges` to get the operator graph back. ``to_module`` /
    ``to_state_dict`` of a graph with reverse edges are not supported.

    Args:
        concat_dir (bool): also append ``edge_dir`` as a last column of
            ``edge_attr`` (default ``False``).
    """

    def __init__(self, concat_dir: bool = False):
        self.concat_dir = bool(concat_dir)

    def forward(self, data: Any) -> Any:
        if getattr(data, "edge_dir", None) is not None:
            raise ValueError("AddReverseEdges: the graph already has reverse edges (edge_dir)")
        num_edges = data.edge_index.size(1)
        for key in list(data.keys()):
            value = data[key]
            if key == "edge_index" or not torch.is_tensor(value):
                continue
            if _is_edge_key(key) and value.size(0) == num_edges:
                data[key] = torch.cat([value, value])
        data.edge_index = torch.cat([data.edge_index, data.edge_index.flip(0)], dim=1)
        data.edge_dir = torch.cat([torch.full((num_edges,), FORWARD, dtype=torch.long),
                                   torch.full((num_edges,), REVERSE, dtype=torch.long)])
        if self.concat_dir and getattr(data, "edge_attr", None) is not None:
            data.edge_attr = torch.cat([data.edge_attr,
                                        data.edge_dir.to(data.edge_attr.dtype).unsqueeze(-1)], -1)
        return data

    def __repr__(self) -> str:
        return f"{type(self).__name__}(concat_dir={self.concat_dir})"


def forward_edges(data: Any) -> Any:
    """A copy of ``data`` with the edges ``AddReverseEdges`` added removed.

    A column appended with ``concat_dir=True`` stays in ``edge_attr``.
    """
    edge_dir = getattr(data, "edge_dir", None)
    if edge_dir is None:
        return data
    keep = edge_dir == FORWARD
    out = data.clone()
    out.__dict__.pop("_nft_structure", None)
    num_edges = edge_dir.numel()
    for key in list(data.keys()):
        value = data[key]
        if key in ("edge_index", "edge_dir") or not torch.is_tensor(value):
            continue
        if _is_edge_key(key) and value.size(0) == num_edges:
            out[key] = value[keep]
    out.edge_index = data.edge_index[:, keep]
    del out.edge_dir
    return out
