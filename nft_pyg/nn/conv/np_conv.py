r"""The NP layer of NFN (all neurons permutable) as message passing."""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_geometric.nn import MessagePassing

from ...graph.types import NodeRole
from ...tensor.np_dense import np_layer_dense
from ...tensor.weight_space import WeightSpace
from ..pool.np_pool import check_graph_features, is_input_node, np_summary
from ..structure import LayerStructure
from .pointwise_conv import layer_linear, uniform_

#: variance gains of the initialisation (see ``NPConv.reset_parameters``)
SELF_GAIN, SUMMARY_GAIN, GLOBAL_GAIN = 0.9, 0.1, 0.05


class NPConv(MessagePassing):
    r"""The NP equivariant layer of "Permutation Equivariant Neural
    Functionals" (Zhou et al., NeurIPS 2023, arXiv 2302.14040): a linear map
    of weight-space features that commutes with every relabelling of the
    neurons of every layer, input and output neurons included.

    For a neuron :math:`v` let :math:`\mathrm{in}(v)` and
    :math:`\mathrm{out}(v)` be the means of the features of the edges into
    and out of :math:`v` and

    .. math::
        \mathbf{s}_v = \big[\mathrm{in}(v),\ \mathbf{x}_v,\ \mathrm{out}(v)\big]
        \in \mathbb{R}^{3C}

    (absent parts are zero: :math:`\mathrm{in}(v)` and :math:`\mathbf{x}_v`
    of input neurons, :math:`\mathrm{out}(v)` of output neurons). Let
    :math:`\mathbf{g} \in \mathbb{R}^{2LC}` be the per-graph means of every
    weight layer's edges and every neuron layer's (``1..L``) nodes, the
    output of :class:`~nft_pyg.nn.pool.np_pool.NPPool`. For an edge
    :math:`e = (u \to v)` of weight layer :math:`l` and a neuron :math:`v`
    of neuron layer :math:`l \ge 1`:

    .. math::
        \mathbf{h}'_e &= \mathbf{A}_l \mathbf{h}_e + \mathbf{B}_l \mathbf{s}_u
            + \mathbf{C}_l \mathbf{s}_v + \mathbf{D}_l \mathbf{g} + \mathbf{a}_l, \\
        \mathbf{x}'_v &= \mathbf{E}_l \mathbf{s}_v + \mathbf{F}_l \mathbf{g}
            + \mathbf{e}_l,

    and :math:`\mathbf{x}'_v = \mathbf{0}` for input neurons. In the tensor
    formulation (:math:`W_l \in \mathbb{R}^{n_l \times n_{l-1}}`,
    :math:`b_l \in \mathbb{R}^{n_l}`, channels left implicit) these are
    exactly the NP basis of the paper's appendix. An equivariant linear map
    into :math:`W_l[i, j]` may only use, besides global means, quantities
    that carry the index :math:`j` of neuron layer :math:`l-1` or :math:`i`
    of neuron layer :math:`l` (all layers are permuted independently):

    - :math:`W_l \to W_l` (group :math:`S_{n_l} \times S_{n_{l-1}}`): the
      four maps :math:`W_l[i,j]`, column mean :math:`\mathrm{mean}_{i'}
      W_l[i',j] = \mathrm{out}(u)`, row mean :math:`\mathrm{mean}_{j'}
      W_l[i,j'] = \mathrm{in}(v)` and the total mean (in :math:`\mathbf{g}`);
    - :math:`W_{l-1} \to W_l` (shared index :math:`j`): the row mean
      :math:`\mathrm{mean}_k W_{l-1}[j,k] = \mathrm{in}(u)` and the total
      mean; :math:`W_{l+1} \to W_l` (shared :math:`i`): the column mean
      :math:`\mathrm{mean}_k W_{l+1}[k,i] = \mathrm{out}(v)` and the total mean;
    - :math:`b_{l-1} \to W_l`: :math:`b_{l-1}[j] = \mathbf{x}_u` and its mean;
      :math:`b_l \to W_l`: :math:`b_l[i] = \mathbf{x}_v` and its mean;
    - any other :math:`W_m, b_m` shares no index with :math:`W_l`: only its
      mean.

    So :math:`\mathbf{A}_l` is the pointwise term, :math:`\mathbf{B}_l`
    holds the ``[in, bias, out]`` terms of the source neuron,
    :math:`\mathbf{C}_l` those of the target neuron and :math:`\mathbf{D}_l`
    every global mean. Likewise into :math:`b_l[i]`: :math:`b_l[i]`,
    :math:`\mathrm{mean}_j W_l[i,j] = \mathrm{in}(v)`, :math:`\mathrm{mean}_k
    W_{l+1}[k,i] = \mathrm{out}(v)` (:math:`\mathbf{E}_l`) and the means of
    all layers (:math:`\mathbf{F}_l`). Means instead of the paper's sums
    only rescale basis elements on a fixed architecture. Equivariance holds
    on the graph by construction: :math:`\mathbf{s}_v` moves with :math:`v`
    and :math:`\mathbf{g}` is invariant.

    With ``io_embedding=True`` (the paper's "NP + IO encoding") learned
    vectors are added to the input features before the layer, which breaks
    the symmetry of input and output neurons on purpose (hidden neurons stay
    permutable): ``input_embedding[p]`` to every edge out of the input
    neuron at position :math:`p` (weight layer 1, :math:`W_1[:, p]`),
    ``output_embedding[q]`` to every edge into the output neuron at
    position :math:`q` (the last weight layer, :math:`W_L[q, :]`) and
    ``output_bias_embedding[q]`` to that neuron's features (:math:`b_L[q]`).

    Parameters are typed by layer and stacked: ``edge_self``
    (:math:`\mathbf{A}`, ``[L, C, C']``), ``edge_src`` / ``edge_dst`` /
    ``node_self`` (:math:`\mathbf{B}, \mathbf{C}, \mathbf{E}`,
    ``[L, 3C, C']``, rows ``[in, x, out]``), ``edge_global`` /
    ``node_global`` (:math:`\mathbf{D}, \mathbf{F}`, ``[L, 2LC, C']``),
    ``edge_bias`` / ``node_bias`` (``[L, C']``): :math:`L C' ((10 + 4L) C +
    2)` numbers (the global terms dominate), plus :math:`(n_\text{in} + 2
    n_\text{out}) C` for the IO embeddings.

    Args:
        in_channels (int): :math:`C`, channels of ``x`` and ``edge_attr``.
        out_channels (int): :math:`C'`.
        num_layers (int): :math:`L`, the most weight layers a graph may have
            (shallower graphs use the parameters of their first layers).
        io_embedding (bool): learn input / output position embeddings
            (default ``False``).
        num_inputs (int, optional): input neurons, needed with ``io_embedding``.
        num_outputs (int, optional): output neurons, needed with ``io_embedding``.
        bias (bool): learn :math:`\mathbf{a}_l, \mathbf{e}_l` (default ``True``).

    Shapes:
        - **input:** node features :math:`(N, C)`, edge features
          :math:`(E, C)`, the graph (``edge_index``, ``node_layer``,
          ``edge_layer``, ``node_role``, ``node_pos``, ``batch``).
        - **output:** :math:`(N, C')`, :math:`(E, C')`.
    """

    def __init__(self, in_channels: int, out_channels: int, num_layers: int,
                 io_embedding: bool = False, num_inputs: int | None = None,
                 num_outputs: int | None = None, bias: bool = True):
        super().__init__(aggr="mean")
        if min(in_channels, out_channels, num_layers) < 1:
            raise ValueError(f"NPConv: in_channels, out_channels and num_layers must be >= 1, "
                             f"got {in_channels}, {out_channels}, {num_layers}")
        if io_embedding and (num_inputs is None or num_outputs is None):
            raise ValueError("NPConv: io_embedding=True needs num_inputs and num_outputs "
                             f"(got {num_inputs} and {num_outputs})")
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.num_layers, self.io_embedding = int(num_layers), bool(io_embedding)
        L, C, C_out = self.num_layers, self.in_channels, self.out_channels
        self.edge_self = nn.Parameter(torch.empty(L, C, C_out))
        self.edge_src = nn.Parameter(torch.empty(L, 3 * C, C_out))
        self.edge_dst = nn.Parameter(torch.empty(L, 3 * C, C_out))
        self.edge_global = nn.Parameter(torch.empty(L, 2 * L * C, C_out))
        self.node_self = nn.Parameter(torch.empty(L, 3 * C, C_out))
        self.node_global = nn.Parameter(torch.empty(L, 2 * L * C, C_out))
        if bias:
            self.edge_bias = nn.Parameter(torch.empty(L, C_out))
            self.node_bias = nn.Parameter(torch.empty(L, C_out))
        else:
            self.register_parameter("edge_bias", None)
            self.register_parameter("node_bias", None)
        if self.io_embedding:
            self.num_inputs, self.num_outputs = int(num_inputs), int(num_outputs)
            self.input_embedding = nn.Parameter(torch.empty(self.num_inputs, C))
            self.output_embedding = nn.Parameter(torch.empty(self.num_outputs, C))
            self.output_bias_embedding = nn.Parameter(torch.empty(self.num_outputs, C))
        else:
            self.num_inputs = self.num_outputs = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        r"""Fan-in-aware uniform init; biases zero, IO embeddings standard normal.

        A block of weights reading ``k`` channels gets variance ``gain / k``:
        gain ``SELF_GAIN`` for the self terms (:math:`\mathbf{A}_l` and the
        :math:`\mathbf{x}_v` block of :math:`\mathbf{E}_l`), ``SUMMARY_GAIN``
        for each of :math:`\mathbf{B}_l, \mathbf{C}_l` and the in/out blocks
        of :math:`\mathbf{E}_l`, ``GLOBAL_GAIN`` for :math:`\mathbf{D}_l,
        \mathbf{F}_l`. The self term carries the feature scale (on
        independent features the means are small); the coupling terms stay
        small because on correlated features they add up coherently. A
        stack of layers then neither vanishes nor explodes (tested).
        """
        C = self.in_channels
        uniform_(self.edge_self, SELF_GAIN / C)
        for param in (self.edge_src, self.edge_dst, self.node_self):
            uniform_(param, SUMMARY_GAIN / param.size(1))
        with torch.no_grad():
            uniform_(self.node_self[:, C:2 * C], SELF_GAIN / C)
        for param in (self.edge_global, self.node_global):
            uniform_(param, GLOBAL_GAIN / param.size(1))
        if self.edge_bias is not None:
            nn.init.zeros_(self.edge_bias)
            nn.init.zeros_(self.node_bias)
        if self.io_embedding:
            for param in (self.input_embedding, self.output_embedding,
                          self.output_bias_embedding):
                nn.init.normal_(param)

    # --- graph path ---------------------------------------------------------
    def forward(self, x: Tensor, edge_attr: Tensor, graph) -> tuple[Tensor, Tensor]:
        structure = check_graph_features("NPConv", x, edge_attr, graph, self.in_channels,
                                         self.num_layers)
        if self.io_embedding:
            x, edge_attr = self._embed_io(x, edge_attr, structure)
        input_nodes = is_input_node(structure)
        x = x.masked_fill(input_nodes, 0.0)
        num_nodes, L = structure.num_nodes, self.num_layers
        edge_index = graph.edge_index
        into = self.propagate(edge_index, edge_attr=edge_attr, size=(num_nodes, num_nodes))
        out_of = self.propagate(structure.reversed_edge_index, edge_attr=edge_attr,
                                size=(num_nodes, num_nodes))
        summary = torch.cat([into, x, out_of], dim=-1)                        # [N, 3C]
        glob = np_summary(x, edge_attr, structure, L, in_mean=into).reshape(
            structure.num_graphs, -1)

        # B_l, C_l, E_l projected once per neuron, then gathered per edge
        projected = layer_linear(summary, self._neuron_layer_weight(), structure.node_layer,
                                 structure.neuron_layer_plan(L + 1))
        as_src, as_dst, node_out = projected.split(self.out_channels, dim=-1)
        edge_glob, node_glob = self._global_terms(glob)                        # [B * L, C']

        # the (graph, layer) global term of an edge is that of its target neuron:
        # add it per neuron, then gather once per endpoint
        node_group = structure.node_weight_group(L)
        as_dst = as_dst + edge_glob.index_select(0, node_group)
        edge_out = layer_linear(edge_attr, self.edge_self, structure.edge_layer - 1,
                                structure.edge_layer_plan(L))
        # in place: edge_out is a fresh [E, C'] tensor, no [E, C'] temporaries
        edge_out.add_(as_src.index_select(0, structure.src))
        edge_out.add_(as_dst.index_select(0, structure.dst))
        node_out = node_out + node_glob.index_select(0, node_group)
        return node_out.masked_fill(input_nodes, 0.0), edge_out

    def message(self, edge_attr: Tensor) -> Tensor:
        return edge_attr

    def _neuron_layer_weight(self) -> Tensor:
        """``[L + 1, 3C, 3C']``: for neuron layer ``k``, ``[B_{k+1} | C_k | E_k]``
        (zero where the layer does not exist: ``C_0``, ``E_0``, ``B_{L+1}``)."""
        zero = self.edge_src.new_zeros(1, *self.edge_src.shape[1:])
        as_src = torch.cat([self.edge_src, zero])
        as_dst = torch.cat([zero, self.edge_dst])
        as_node = torch.cat([zero, self.node_self])
        return torch.cat([as_src, as_dst, as_node], dim=-1)

    def _global_terms(self, glob: Tensor) -> tuple[Tensor, Tensor]:
        edge_glob = torch.einsum("bf,lfo->blo", glob, self.edge_global)
        node_glob = torch.einsum("bf,lfo->blo", glob, self.node_global)
        if self.edge_bias is not None:
            edge_glob = edge_glob + self.edge_bias
            node_glob = node_glob + self.node_bias
        return edge_glob.reshape(-1, self.out_channels), node_glob.reshape(-1, self.out_channels)

    def _embed_io(self, x: Tensor, edge_attr: Tensor,
                  structure: LayerStructure) -> tuple[Tensor, Tensor]:
        pos = structure.node_pos
        inputs = (structure.node_role == int(NodeRole.INPUT)).nonzero().view(-1)
        outputs = (structure.node_role == int(NodeRole.OUTPUT)).nonzero().view(-1)
        for name, nodes, limit in (("input", inputs, self.num_inputs),
                                   ("output", outputs, self.num_outputs)):
            if nodes.numel() and int(pos[nodes].max()) >= limit:
                raise ValueError(f"NPConv: a graph has {int(pos[nodes].max()) + 1} {name} "
                                 f"neurons but the IO embedding was built for "
                                 f"num_{name}s={limit}")
        first = (structure.edge_layer == 1).nonzero().view(-1)
        last = (structure.node_role[structure.dst] == int(NodeRole.OUTPUT)).nonzero().view(-1)
        edge_attr = edge_attr.index_add(
            0, first, self.input_embedding[pos[structure.src[first]]])
        edge_attr = edge_attr.index_add(
            0, last, self.output_embedding[pos[structure.dst[last]]])
        x = x.index_add(0, outputs, self.output_bias_embedding[pos[outputs]])
        return x, edge_attr

    # --- dense twin ---------------------------------------------------------
    def forward_dense(self, ws: WeightSpace) -> WeightSpace:
        """The same map on a folded :class:`WeightSpace` (see :mod:`nft_pyg.tensor.np_dense`)."""
        return np_layer_dense(self, ws)

    def __repr__(self) -> str:
        io = (f", io_embedding=True, num_inputs={self.num_inputs}, "
              f"num_outputs={self.num_outputs}") if self.io_embedding else ""
        return (f"{type(self).__name__}({self.in_channels}, {self.out_channels}, "
                f"num_layers={self.num_layers}{io}, bias={self.edge_bias is not None})")
