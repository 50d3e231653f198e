"""Feature transforms for generic GNNs: layer and input/output position encodings.

A message-passing GNN that treats every node alike (``GATv2Conv``,
``TransformerConv``, ...) is invariant to *every* neuron permutation of a
neuron graph, input and output neurons included (the NP group): it cannot
tell input pixel 3 from input pixel 5. These transforms add what it needs to
see the structure, as one-hot columns computed from the graph's ids.

Mind the order: an encoding is a function of ``node_pos`` / ``node_layer``
*as the graph is now*. Apply it after any permutation augmentation (last in
a ``Compose``, or inside the model): an encoding computed before
:func:`nft_pyg.symmetry.permute` travels with its node and is then only a
label of that node, not of its position.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch_geometric.transforms import BaseTransform

from ..graph.accessors import is_input_neuron, is_output_neuron


def _ids(data: Any, keys: tuple[str, ...], where: str) -> list[Tensor]:
    missing = [key for key in keys if getattr(data, key, None) is None]
    if missing:
        raise ValueError(f"{where}: the graph has no {', '.join(missing)}; build it with "
                         "nft_pyg.from_module")
    return [data[key] for key in keys]


def _store(data: Any, node_enc: Tensor, edge_enc: Tensor, attr_name: str | None) -> Any:
    if attr_name is None:
        data.x = torch.cat([data.x, node_enc.to(data.x.dtype)], dim=-1)
        data.edge_attr = torch.cat([data.edge_attr, edge_enc.to(data.edge_attr.dtype)], dim=-1)
    else:
        data[attr_name] = node_enc
        data[f"edge_{attr_name}"] = edge_enc
    return data


def _one_hot(values: Tensor, num_classes: int, where: str, what: str) -> Tensor:
    if values.numel() and (int(values.min()) < 0 or int(values.max()) >= num_classes):
        raise ValueError(f"{where}: {what} {int(values.max())} is out of range for the "
                         f"{num_classes} classes it was built for")
    return torch.nn.functional.one_hot(values, num_classes).to(torch.get_default_dtype())


class AddLayerEncoding(BaseTransform):
    r"""One-hot encodings of each node's neuron layer and each edge's weight layer.

    Nodes get :math:`L + 1` columns (neuron layers ``0..L``), edges
    :math:`L` columns (weight layers ``1..L``). Equivariant to every neuron
    permutation (layers are never permuted).

    Args:
        num_layers (int): the largest number of weight layers :math:`L`.
        attr_name (str, optional): store the encodings as ``data[attr_name]``
            ``[N, L + 1]`` and ``data["edge_" + attr_name]`` ``[E, L]``.
            ``None`` (default) concatenates them to ``x`` and ``edge_attr``,
            which makes the graph an input for generic GNNs only (``x`` and
            ``edge_attr`` no longer have the raw widths
            :func:`~nft_pyg.to_module` expects).
    """

    def __init__(self, num_layers: int, attr_name: str | None = None):
        if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1:
            raise ValueError(f"AddLayerEncoding: num_layers must be a positive int, "
                             f"got {num_layers!r}")
        self.num_layers, self.attr_name = num_layers, attr_name

    def forward(self, data: Any) -> Any:
        where = type(self).__name__
        node_layer, edge_layer = _ids(data, ("node_layer", "edge_layer"), where)
        node_enc = _one_hot(node_layer, self.num_layers + 1, where, "neuron layer")
        edge_enc = _one_hot(edge_layer - 1, self.num_layers, where, "weight layer - 1")
        return _store(data, node_enc, edge_enc, self.attr_name)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_layers={self.num_layers}, attr_name={self.attr_name!r})"


class AddIOPositions(BaseTransform):
    r"""One-hot positions of input and output neurons (hidden neurons get zeros).

    Nodes get ``num_inputs + num_outputs`` columns: the one-hot position of
    an input neuron in the first block, of an output neuron in the second.
    An edge :math:`u \to v` gets the input block of :math:`u` and the output
    block of :math:`v` (so the weights of :math:`W_1` know their input
    column and those of :math:`W_L` their output row). This breaks the
    symmetry of input and output neurons, as the HNP group requires, and is
    still equivariant to permutations of hidden neurons.

    Args:
        num_inputs (int): the largest number of input neurons.
        num_outputs (int): the largest number of output neurons.
        attr_name (str, optional): as in :class:`AddLayerEncoding`.
    """

    def __init__(self, num_inputs: int, num_outputs: int, attr_name: str | None = None):
        for name, value in (("num_inputs", num_inputs), ("num_outputs", num_outputs)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"AddIOPositions: {name} must be a positive int, got {value!r}")
        self.num_inputs, self.num_outputs, self.attr_name = num_inputs, num_outputs, attr_name

    def forward(self, data: Any) -> Any:
        where = type(self).__name__
        _, pos = _ids(data, ("node_role", "node_pos"), where)
        is_input, is_output = is_input_neuron(data), is_output_neuron(data)
        inputs = _one_hot(torch.where(is_input, pos, 0), self.num_inputs, where,
                          "input position") * is_input.unsqueeze(-1)
        outputs = _one_hot(torch.where(is_output, pos, 0), self.num_outputs, where,
                           "output position") * is_output.unsqueeze(-1)
        src, dst = data.edge_index
        node_enc = torch.cat([inputs, outputs], dim=-1)
        edge_enc = torch.cat([inputs[src], outputs[dst]], dim=-1)
        return _store(data, node_enc, edge_enc, self.attr_name)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(num_inputs={self.num_inputs}, "
                f"num_outputs={self.num_outputs}, attr_name={self.attr_name!r})")
