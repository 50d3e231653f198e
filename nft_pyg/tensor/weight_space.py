r"""The tensor formulation: a batch of same-architecture networks as tensors.

A :class:`WeightSpace` holds, for ``L`` weight layers,

- ``weights[i]``: ``[B, C, n_i, n_{i-1}, *kernel_i]`` (``kernel_i`` empty
  for a ``Linear``, the kernel shape for a conv, ``(H*W,)`` for a
  ``Linear`` after a ``Flatten`` that kept ``H*W`` positions);
- ``biases[i]``: ``[B, C, n_i]``,

the layout of the published ``nfn`` package. It is the dense twin of a
batch of :class:`~nft_pyg.graph.NeuronGraph` s: every graph operator has a
dense reference written on it, and :meth:`WeightSpace.from_graph` /
:meth:`WeightSpace.to_graph` move features between the two exactly.
Normalisation parameters (``node_norm``) are not part of the tensor
formulation: :meth:`to_graph` gives identity norms.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch_geometric.data import Batch

from ..graph.accessors import batch_vector as _batch_vector
from ..graph.collate import collate_graphs
from ..graph.convert import graph_structure, layout_of, to_module
from ..graph.layout import Layout, state_key
from ..graph.neuron_graph import NeuronGraph
from ..graph.validate import check_no_residual


def masked_mean(weight: Tensor, mask: Tensor | None, dim) -> Tensor:
    """Mean of ``weight`` ``[B, C, n, m]`` over ``dim`` (2, 3 or both); with
    ``mask`` ``[B, n, m]`` over the present entries only (``weight`` already
    masked; none present: 0). The dense twins' means over pruned layers."""
    if mask is None:
        return weight.mean(dim=dim)
    count = mask.unsqueeze(1).to(weight.dtype).sum(dim=dim)
    return weight.sum(dim=dim) / count.clamp(min=1)


class WeightSpace:
    """Weights and biases of ``B`` networks of one architecture, ``C`` channels.

    Args:
        weights (list[Tensor]): ``weights[i]`` ``[B, C, n_i, n_{i-1}, *kernel_i]``.
        biases (list[Tensor]): ``biases[i]`` ``[B, C, n_i]``.
        layout (Layout, optional): the architecture, needed by
            :meth:`to_graph` and the state-dict conversions.
    """

    def __init__(self, weights: Sequence[Tensor], biases: Sequence[Tensor],
                 layout: Layout | str | None = None):
        self.weights = list(weights)
        self.biases = list(biases)
        self.layout = None if layout is None else Layout.coerce(layout)
        self._check()

    def _check(self) -> None:
        if len(self.weights) != len(self.biases) or not self.weights:
            raise ValueError(f"WeightSpace: needs one bias per weight layer, got "
                             f"{len(self.weights)} weights and {len(self.biases)} biases")
        batch, channels = self.weights[0].shape[:2]
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            if w.dim() < 4 or b.dim() != 3 or w.shape[:3] != b.shape or \
                    tuple(w.shape[:2]) != (batch, channels):
                raise ValueError(
                    f"WeightSpace: layer {i + 1} has weight {tuple(w.shape)} and bias "
                    f"{tuple(b.shape)}; expected [B={batch}, C={channels}, n_i, n_(i-1), "
                    f"*kernel] and [B, C, n_i]")
            if i and w.size(3) != self.weights[i - 1].size(2):
                raise ValueError(f"WeightSpace: layer {i + 1} takes {w.size(3)} inputs but "
                                 f"layer {i} gives {self.weights[i - 1].size(2)}")

    # --- shape -----------------------------------------------------------
    @property
    def batch_size(self) -> int:
        return self.weights[0].size(0)

    @property
    def channels(self) -> int:
        return self.weights[0].size(1)

    @property
    def num_layers(self) -> int:
        return len(self.weights)

    @property
    def neuron_layer_sizes(self) -> list[int]:
        return [self.weights[0].size(3)] + [w.size(2) for w in self.weights]

    def __repr__(self) -> str:
        shapes = ", ".join(str(tuple(w.shape[2:])) for w in self.weights)
        return f"WeightSpace(B={self.batch_size}, C={self.channels}, layers=[{shapes}])"

    # --- arithmetic --------------------------------------------------------
    def map(self, fn: Callable[[Tensor], Tensor]) -> WeightSpace:
        """Apply ``fn`` to every weight and bias tensor."""
        return WeightSpace([fn(w) for w in self.weights], [fn(b) for b in self.biases],
                           self.layout)

    def __add__(self, other: WeightSpace) -> WeightSpace:
        return WeightSpace([a + b for a, b in zip(self.weights, other.weights)],
                           [a + b for a, b in zip(self.biases, other.biases)], self.layout)

    def allclose(self, other: WeightSpace, **kwargs) -> bool:
        return all(torch.allclose(a, b, **kwargs) for a, b in
                   zip(self.weights + self.biases, other.weights + other.biases))

    # --- kernels as channels ------------------------------------------------
    def fold_kernels(self, kernel_width: int | None = None) -> WeightSpace:
        """Move kernel positions into channels: ``[B, C * S, n_i, n_{i-1}]``.

        This is the view the graph operators take of an edge (its ``C * S``
        features, channel-major, zero padded to ``kernel_width`` positions),
        so a dense twin acts on the folded weight space.
        """
        width = max(_positions(w) for w in self.weights) if kernel_width is None \
            else kernel_width
        weights = []
        for w in self.weights:
            b, c, n, m = w.shape[:4]
            flat = w.reshape(b, c, n, m, -1)
            flat = nn.functional.pad(flat, (0, width - flat.size(-1)))
            weights.append(flat.permute(0, 1, 4, 2, 3).reshape(b, c * width, n, m))
        biases = [bias.repeat_interleave(width, dim=1) * _first_position(width, bias)
                  for bias in self.biases]
        return WeightSpace(weights, biases, self.layout)

    def unfold_kernels(self, kernel_shapes: Sequence[tuple[int, ...]],
                       kernel_width: int | None = None) -> WeightSpace:
        """Inverse of :meth:`fold_kernels` given each layer's kernel shape and the
        ``kernel_width`` it was folded with (default: the largest kernel)."""
        width = max(_shape_size(k) for k in kernel_shapes) if kernel_width is None \
            else kernel_width
        weights, biases = [], []
        for w, bias, shape in zip(self.weights, self.biases, kernel_shapes):
            b, cs, n, m = w.shape
            kernel = w.reshape(b, cs // width, width, n, m)[:, :, : _shape_size(shape)]
            weights.append(kernel.permute(0, 1, 3, 4, 2).reshape(b, cs // width, n, m, *shape))
            biases.append(bias.reshape(b, cs // width, width, n)[:, :, 0])
        return WeightSpace(weights, biases, self.layout)

    # --- graphs ------------------------------------------------------------
    @classmethod
    def from_graph(cls, graph: NeuronGraph) -> WeightSpace:
        """The raw weights of a graph or a batch of graphs of one architecture.

        Gives ``C = 1`` and each layer's kernel dimensions. Missing edges
        (pruned weights) become zeros.
        """
        layout = _common_layout(graph)
        width = int(graph.kernel_width.reshape(-1)[0])
        if graph.edge_attr.size(-1) != width or graph.x.size(-1) != 1:
            raise ValueError(f"WeightSpace.from_graph: expects a raw graph (x [N, 1], "
                             f"edge_attr [E, {width}]); for operator features use "
                             "WeightSpace.from_features")
        return cls._scatter(graph, graph.x, graph.edge_attr, width, layout, kernels=True)

    @classmethod
    def from_features(cls, graph: NeuronGraph, x: Tensor, edge_attr: Tensor) -> WeightSpace:
        """Dense twin of operator features on a graph or batch of one architecture.

        Args:
            graph (NeuronGraph): the structure (one graph or a ``Batch``).
            x (Tensor): node features ``[N, C]``.
            edge_attr (Tensor): edge features ``[E, C]`` (kernels folded into
                channels, as operators see them).

        Returns ``weights[i]`` ``[B, C, n_i, n_{i-1}]`` and ``biases[i]``
        ``[B, C, n_i]``; features of input neurons are dropped (they are not
        part of the tensor formulation).
        """
        if x.size(-1) != edge_attr.size(-1):
            raise ValueError(f"WeightSpace.from_features: node features have {x.size(-1)} "
                             f"channels, edge features {edge_attr.size(-1)}")
        return cls._scatter(graph, x, edge_attr, 1, _common_layout(graph), kernels=False)

    @classmethod
    def _scatter(cls, graph, x, edge_attr, width, layout, kernels) -> WeightSpace:
        # the tensor formulation is a chain of weight layers: a residual edge
        # has no place in it and would be dropped silently
        check_no_residual(getattr(graph, "edge_kind", None), graph.edge_index, "WeightSpace")
        channels = edge_attr.size(-1) // width
        batch = _batch_vector(graph)
        num_graphs = int(batch.max()) + 1 if batch.numel() else 0
        src, dst = graph.edge_index
        edge_graph = batch[src]
        weights, biases = [], []
        for layer in layout.weight_layers():
            n_out, n_in = layer.out_neurons, layer.in_neurons
            positions = layer.positions if kernels else 1
            mask = graph.edge_layer == layer.index
            dense = edge_attr.new_zeros(num_graphs, n_out, n_in, channels, positions)
            features = edge_attr[mask].view(-1, channels, width)[..., :positions]
            dense[edge_graph[mask], graph.node_pos[dst[mask]], graph.node_pos[src[mask]]] = \
                features
            weights.append(dense.permute(0, 3, 1, 2, 4).reshape(
                num_graphs, channels, n_out, n_in, *(layer.kernel_shape if kernels else ())))
            nodes = graph.node_layer == layer.index
            bias = x.new_zeros(num_graphs, n_out, x.size(-1))
            bias[batch[nodes], graph.node_pos[nodes]] = x[nodes]
            biases.append(bias.transpose(1, 2))
        return cls(weights, biases, layout)

    def to_graph(self, kernel_width: int | None = None) -> Batch:
        """A ``Batch`` of ``B`` neuron graphs carrying these weights.

        ``x`` is ``[B * N, C]`` and ``edge_attr`` ``[B * E, C * S]``, in the
        canonical node and edge order of :func:`~nft_pyg.graph.graph_structure`;
        for ``C = 1`` these are the raw graphs of the networks. A folded
        weight space (no kernel dimensions) gives ``[B * E, C]``.
        """
        layout = self._require_layout("to_graph")
        template = graph_structure(layout, kernel_width, dtype=self.weights[0].dtype)
        if all(w.dim() == 4 for w in self.weights):
            template.kernel_width = torch.ones_like(template.kernel_width)
        width = int(template.kernel_width[0])
        x, edge_attr = self.graph_features(width)
        graphs = []
        for b in range(self.batch_size):
            graph = template.clone()
            graph.x, graph.edge_attr = x[b], edge_attr[b]
            graphs.append(graph)
        return collate_graphs(graphs)

    def graph_features(self, kernel_width: int = 1) -> tuple[Tensor, Tensor]:
        """Per-graph canonical node and edge features ``[B, N, C]``, ``[B, E, C*S]``.

        Input neurons get zero features.
        """
        batch, channels = self.batch_size, self.channels
        edges = []
        for w in self.weights:
            kernel = w.reshape(batch, channels, w.size(2) * w.size(3), -1)
            kernel = nn.functional.pad(kernel, (0, kernel_width - kernel.size(-1)))
            edges.append(kernel.permute(0, 2, 1, 3).reshape(batch, -1, channels * kernel_width))
        inputs = self.biases[0].new_zeros(batch, self.neuron_layer_sizes[0], channels)
        nodes = [inputs] + [b.transpose(1, 2) for b in self.biases]
        return torch.cat(nodes, dim=1), torch.cat(edges, dim=1)

    # --- modules and state dicts -------------------------------------------
    @classmethod
    def from_modules(cls, modules: Sequence[nn.Module]) -> WeightSpace:
        """Stack the weights of networks of one architecture (``C = 1``)."""
        layouts = [layout_of(module) for module in modules]
        if any(layout.signature != layouts[0].signature for layout in layouts):
            raise ValueError("WeightSpace.from_modules: the modules differ in architecture")
        return cls.from_state_dicts([m.state_dict() for m in modules], layouts[0])

    @classmethod
    def from_state_dicts(cls, state_dicts: Sequence[dict], layout: Layout | str) -> WeightSpace:
        layout = Layout.coerce(layout)
        weights, biases = [], []
        for layer in layout.weight_layers():
            w = torch.stack([sd[state_key(layer.name, "weight")] for sd in state_dicts])
            w = w.reshape(len(state_dicts), layer.out_neurons, layer.in_neurons,
                          *layer.kernel_shape)
            weights.append(w.unsqueeze(1))
            if layer.bias:
                b = torch.stack([sd[state_key(layer.name, "bias")] for sd in state_dicts])
            else:
                b = w.new_zeros(len(state_dicts), layer.out_neurons)
            biases.append(b.unsqueeze(1))
        return cls(weights, biases, layout)

    def to_state_dicts(self) -> list[dict[str, Tensor]]:
        """One state dict per network (weights and biases only; ``C = 1``)."""
        layout = self._require_layout("to_state_dicts")
        if self.channels != 1:
            raise ValueError(f"WeightSpace.to_state_dicts: needs C = 1, got C = {self.channels}")
        states = [dict() for _ in range(self.batch_size)]
        for layer, w, b in zip(layout.weight_layers(), self.weights, self.biases):
            for state, wb, bb in zip(states, w[:, 0], b[:, 0]):
                state[state_key(layer.name, "weight")] = wb.reshape(layer.weight_shape).clone()
                if layer.bias:
                    state[state_key(layer.name, "bias")] = bb.clone()
        return states

    def to_modules(self) -> list[nn.Module]:
        return [to_module(graph) for graph in self.to_graph().to_data_list()]

    def _require_layout(self, where: str) -> Layout:
        if self.layout is None:
            raise ValueError(f"WeightSpace.{where}: this WeightSpace has no layout; build it "
                             "with from_graph / from_modules or pass layout=")
        return self.layout


def require_folded(ws: WeightSpace, where: str) -> None:
    """Raise a ``ValueError`` naming ``where`` unless ``ws`` is a folded
    :class:`WeightSpace` (weights ``[B, C, n_i, n_{i-1}]``, what dense twins take)."""
    if not isinstance(ws, WeightSpace):
        raise ValueError(f"{where}.forward_dense: expected a WeightSpace, got "
                         f"{type(ws).__name__}")
    if any(w.dim() != 4 for w in ws.weights):
        raise ValueError(f"{where}.forward_dense: expects a folded WeightSpace (weights "
                         "[B, C, n_i, n_(i-1)]); fold kernels with ws.fold_kernels()")


def _positions(weight: Tensor) -> int:
    return _shape_size(tuple(weight.shape[4:]))


def _shape_size(shape: Sequence[int]) -> int:
    size = 1
    for dim in shape:
        size *= dim
    return size


def _first_position(width: int, bias: Tensor) -> Tensor:
    """``[1, C * width, 1]`` mask keeping position 0 of each channel."""
    mask = bias.new_zeros(width)
    mask[0] = 1
    return mask.repeat(bias.size(1)).view(1, -1, 1)


def _common_layout(graph: NeuronGraph) -> Layout:
    layouts = graph.layout if isinstance(graph.layout, (list, tuple)) else [graph.layout]
    signatures = {Layout.coerce(layout).signature for layout in set(layouts)}
    if len(signatures) > 1:
        shapes = sorted({repr(Layout.coerce(layout)) for layout in set(layouts)})
        raise ValueError(f"WeightSpace.from_graph: the batch mixes architectures {shapes}; "
                         "a WeightSpace holds one architecture (split the batch first)")
    return Layout.coerce(layouts[0], "graph.layout")


