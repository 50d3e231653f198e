r"""Pointwise weight-space modules: activations, dropout, channel mixing, chaining.

Each module acts on every edge (weight) and every node (bias) on its own,
so it commutes with any relabelling of neurons. Input neurons carry no
parameters (see the operator convention), so their features are set to
zero on the way out.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from torch import Tensor, nn
from torch_geometric.nn import MessagePassing

from ..graph.accessors import is_input_neuron
from ..tensor import pointwise_ops_dense as dense
from ..tensor.weight_space import WeightSpace
from .structure import WeightGraphIndex, check_features


# --- helpers shared by the pointwise-style modules -------------------------
def graph_attr(graph, key: str, where: str) -> Tensor:
    """``graph[key]``, or a ``ValueError`` naming ``where`` if it is missing."""
    value = getattr(graph, key, None)
    if value is None:
        raise ValueError(f"{where}: the graph has no {key}; build it with "
                         "nft_pyg.from_module or keep this attribute")
    return value


def input_node_mask(graph, where: str) -> Tensor:
    """``[N, 1]`` bool: which nodes are input neurons (to be zeroed); ``graph`` is a
    :class:`~nft_pyg.nn.structure.WeightGraphIndex` or a ``Data`` / ``Batch``."""
    if isinstance(graph, WeightGraphIndex):
        return graph.is_input.unsqueeze(-1)
    graph_attr(graph, "node_role", where)   # a clear error if it is missing
    return is_input_neuron(graph).unsqueeze(-1)


def layer_ids(where: str, graph, num_layers: int) -> tuple[Tensor, Tensor]:
    """``edge_layer`` and ``node_layer`` of ``graph``, checked against the
    ``num_layers`` a module was built for. A
    :class:`~nft_pyg.nn.structure.WeightGraphIndex` was checked when it was
    built, so only its ints are compared (no host sync, no graph break under
    ``torch.compile``); a ``Data`` / ``Batch`` is checked here."""
    edge_layer = graph_attr(graph, "edge_layer", where)
    node_layer = graph_attr(graph, "node_layer", where)
    if isinstance(graph, WeightGraphIndex):
        deepest, first, last_neuron = graph.num_layers, 1, graph.num_layers
    else:
        deepest = int(edge_layer.max()) if edge_layer.numel() else 0
        first = int(edge_layer.min()) if edge_layer.numel() else 1
        last_neuron = int(node_layer.max()) if node_layer.numel() else 0
    if deepest > num_layers:
        raise ValueError(f"{where}: built for {num_layers} weight layers, the graph has "
                         f"{deepest}")
    if first < 1:
        raise ValueError(f"{where}: edge_layer must be in 1..L, got {first}")
    if last_neuron > num_layers:
        raise ValueError(f"{where}: built for {num_layers} weight layers, the graph has "
                         f"neuron layer {last_neuron}")
    return edge_layer, node_layer


def zero_input_nodes(x: Tensor, graph, where: str) -> Tensor:
    return x.masked_fill(input_node_mask(graph, where), 0.0)


# --- activations -------------------------------------------------------------
_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "identity": nn.Identity,
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "elu": nn.ELU,
}


def resolve_activation(act: nn.Module | str, where: str) -> nn.Module:
    if isinstance(act, nn.Module):
        return act
    if isinstance(act, str) and act.lower() in _ACTIVATIONS:
        return _ACTIVATIONS[act.lower()]()
    raise ValueError(f"{where}: unknown activation {act!r}; pass an nn.Module or one of "
                     f"{sorted(_ACTIVATIONS)}")


class WeightSpaceActivation(nn.Module):
    r"""An element-wise non-linearity on every weight and bias feature.

    As between the equivariant layers of NFN (Zhou et al., "Permutation
    Equivariant Neural Functionals", NeurIPS 2023, arXiv 2302.14040) and in
    the feed-forward blocks of NFT (Zhou et al., "Neural Functional
    Transformers", NeurIPS 2023, arXiv 2305.13546):

    .. math::
        \mathbf{h}'_e = \sigma(\mathbf{h}_e), \qquad
        \mathbf{x}'_v = \sigma(\mathbf{x}_v) \ (v \text{ not an input neuron}),
        \qquad \mathbf{x}'_v = \mathbf{0} \ (v \text{ an input neuron}).

    Args:
        act (torch.nn.Module or str): an element-wise module (e.g.
            ``nn.GELU()``) or one of ``"relu"``, ``"gelu"``, ``"silu"``,
            ``"tanh"``, ``"sigmoid"``, ``"leaky_relu"``, ``"elu"``,
            ``"identity"``.

    Shapes:
        - **input:** node features :math:`(N, C)`, edge features
          :math:`(E, C)`, the graph (structure).
        - **output:** :math:`(N, C)`, :math:`(E, C)`.
    """

    def __init__(self, act: nn.Module | str = "relu"):
        super().__init__()
        self.act = resolve_activation(act, type(self).__name__)

    def reset_parameters(self) -> None:
        if hasattr(self.act, "reset_parameters"):
            self.act.reset_parameters()

    def forward(self, x: Tensor, edge_attr: Tensor, graph) -> tuple[Tensor, Tensor]:
        where = type(self).__name__
        check_features(where, x, edge_attr, graph)
        return zero_input_nodes(self.act(x), graph, where), self.act(edge_attr)

    def forward_dense(self, ws: WeightSpace) -> WeightSpace:
        return dense.activation_dense(ws, self.act)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.act})"


class WeightSpaceDropout(nn.Module):
    r"""Dropout on every weight and bias feature entry (independent masks).

    .. math::
        \mathbf{h}'_e = \mathbf{m}_e \odot \mathbf{h}_e / (1 - p), \qquad
        \mathbf{x}'_v = \mathbf{m}_v \odot \mathbf{x}_v / (1 - p),
        \qquad m \sim \mathrm{Bernoulli}(1 - p),

    with input neurons set to zero. Identity in eval mode. Used inside the
    NFT blocks (Zhou et al., "Neural Functional Transformers", NeurIPS
    2023, arXiv 2305.13546).

    Args:
        p (float): drop probability in :math:`[0, 1)`.

    Shapes:
        - **input:** :math:`(N, C)`, :math:`(E, C)`, the graph.
        - **output:** :math:`(N, C)`, :math:`(E, C)`.
    """

    def __init__(self, p: float = 0.1):
        super().__init__()
        if not 0.0 <= float(p) < 1.0:
            raise ValueError(f"WeightSpaceDropout: p must be in [0, 1), got {p}")
        self.p = float(p)

    def reset_parameters(self) -> None:
        pass

    def forward(self, x: Tensor, edge_attr: Tensor, graph) -> tuple[Tensor, Tensor]:
        where = type(self).__name__
        check_features(where, x, edge_attr, graph)
        x = nn.functional.dropout(x, self.p, self.training)
        edge_attr = nn.functional.dropout(edge_attr, self.p, self.training)
        return zero_input_nodes(x, graph, where), edge_attr

    def forward_dense(self, ws: WeightSpace) -> WeightSpace:
        return ws.map(lambda t: nn.functional.dropout(t, self.p, self.training))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(p={self.p})"


class WeightSpaceLinear(nn.Module):
    r"""A channel-mixing linear map shared by every weight and bias.

    The pointwise term of the NFN layers and the feed-forward map of the
    NFT blocks (Zhou et al., "Neural Functional Transformers", NeurIPS 2023,
    arXiv 2305.13546):

    .. math::
        \mathbf{h}'_e = \mathbf{W} \mathbf{h}_e + \mathbf{b}, \qquad
        \mathbf{x}'_v = \mathbf{W} \mathbf{x}_v + \mathbf{b},

    the same :math:`\mathbf{W}, \mathbf{b}` for every edge and node of every
    layer; input neurons are set to zero.

    Args:
        in_channels (int): :math:`C`.
        out_channels (int): :math:`C'`.
        bias (bool): learn :math:`\mathbf{b}` (default ``True``).

    Shapes:
        - **input:** :math:`(N, C)`, :math:`(E, C)`, the graph.
        - **output:** :math:`(N, C')`, :math:`(E, C')`.
    """

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True):
        super().__init__()
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.lin = nn.Linear(self.in_channels, self.out_channels, bias=bias)

    def reset_parameters(self) -> None:
        self.lin.reset_parameters()

    def forward(self, x: Tensor, edge_attr: Tensor, graph) -> tuple[Tensor, Tensor]:
        where = type(self).__name__
        check_features(where, x, edge_attr, graph, self.in_channels)
        return zero_input_nodes(self.lin(x), graph, where), self.lin(edge_attr)

    def forward_dense(self, ws: WeightSpace) -> WeightSpace:
        return dense.linear_dense(ws, self.lin.weight, self.lin.bias)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.in_channels}, {self.out_channels}, "
                f"bias={self.lin.bias is not None})")


class WeightSpaceSequential(nn.Sequential):
    r"""Chain weight-space modules: ``seq(x, edge_attr, index) -> (x, edge_attr)``.

    .. math::
        (\mathbf{X}, \mathbf{H}) \mapsto f_k(\cdots f_1(\mathbf{X}, \mathbf{H},
        \mathcal{G}) \cdots, \mathcal{G})

    Operators (``MessagePassing`` modules: ``NPConv``, ``HNPConv``, ...) are
    called PyG-style, ``conv(x, index.edge_index, edge_attr, index)``; every
    other module as ``module(x, edge_attr, index)``. ``index`` is a
    :class:`~nft_pyg.nn.structure.WeightGraphIndex` (given a ``Data`` /
    ``Batch``, a chain with operators builds the index once for the call).
    Indexing, ``len`` and ``append`` work as for ``torch.nn.Sequential``.
    :meth:`forward_dense` chains the modules' own dense twins.

    Args:
        *modules (torch.nn.Module): operators, or modules with
            ``forward(x, edge_attr, index) -> (x, edge_attr)``.

    Shapes:
        - **input:** :math:`(N, C)`, :math:`(E, C)`, the index.
        - **output:** :math:`(N, C')`, :math:`(E, C')`.
    """

    def __init__(self, *modules: nn.Module):
        # nn.Sequential also takes one OrderedDict (and slicing builds one)
        named = modules[0].items() if len(modules) == 1 and isinstance(modules[0], OrderedDict) \
            else enumerate(modules)
        for index, module in named:
            if not isinstance(module, nn.Module):
                raise TypeError(f"WeightSpaceSequential: item {index} is a "
                                f"{type(module).__name__}, not an nn.Module")
        super().__init__(*modules)

    def reset_parameters(self) -> None:
        for module in self:
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()

    def forward(self, x: Tensor, edge_attr: Tensor, index) -> tuple[Tensor, Tensor]:
        if any(isinstance(module, MessagePassing) for module in self):
            index = WeightGraphIndex.coerce(index, "WeightSpaceSequential")
        for position, module in enumerate(self):
            if isinstance(module, MessagePassing):
                result = module(x, index.edge_index, edge_attr, index)
            else:
                result = module(x, edge_attr, index)
            if not (isinstance(result, tuple) and len(result) == 2):
                raise TypeError(f"WeightSpaceSequential: module {position} "
                                f"({type(module).__name__}) must return (x, edge_attr)")
            x, edge_attr = result
        return x, edge_attr

    def forward_dense(self, ws: WeightSpace) -> WeightSpace:
        for index, module in enumerate(self):
            if not hasattr(module, "forward_dense"):
                raise TypeError(f"WeightSpaceSequential: module {index} "
                                f"({type(module).__name__}) has no forward_dense")
            ws = module.forward_dense(ws)
        return ws


__all__ = ["WeightSpaceActivation", "WeightSpaceDropout", "WeightSpaceLinear",
           "WeightSpaceSequential"]
