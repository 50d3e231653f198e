r"""The NP layer of NFN (all neurons permutable) as message passing."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch_geometric.nn import MessagePassing

from ...tensor.np_dense import NPWeights, np_layer_dense
from ...tensor.weight_space import WeightSpace
from ..structure import TypePlan, WeightGraphIndex, operator_inputs
from ..summaries import LayerGrid, layer_grid, np_summary
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

    On a pruned network (missing edges) the means run over the edges that
    exist (a missing edge is absent, not a zero); the dense twin computes the
    same map given the presence mask (``forward_dense(ws, mask)``).

    Computation: :math:`\mathrm{in}, \mathrm{out}` by ``propagate`` (mean
    aggregation over the edges and the reversed edges); :math:`\mathbf{B}
    \mathbf{s}_u, \mathbf{C} \mathbf{s}_v, \mathbf{E} \mathbf{s}_v` once
    per neuron, gathered onto the edges by ``edge_updater``. On a batch of
    complete networks of one architecture (the index's ``"grid"`` part) the
    same map runs on views ``[B, n_l, n_{l-1}, C]`` of the edge features
    (means over axes, broadcasts instead of gathers), which is faster there.

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

    Residual networks are refused (a chain of weight layers only): the
    :class:`~nft_pyg.nn.WeightGraphIndex` names their first residual edge.

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
          :math:`(E, C)`, ``edge_index`` :math:`(2, E)` and the batch's
          :class:`~nft_pyg.nn.structure.WeightGraphIndex`:
          ``conv(x, edge_index, edge_attr, index)``.
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
    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor,
                index: WeightGraphIndex | None = None) -> tuple[Tensor, Tensor]:
        """``(x', edge_attr')`` of a batch; ``index = WeightGraphIndex.from_data(batch)``."""
        index = operator_inputs("NPConv", x, edge_index, edge_attr, index, self.in_channels,
                                self.num_layers)
        if self.io_embedding:
            x, edge_attr = self._embed_io(x, edge_attr, index)
        grid = layer_grid(index)
        if grid is not None:
            return self._grid_path(x, edge_attr, grid, index)
        num_nodes = index.num_nodes
        into = self.propagate(edge_index, edge_attr=edge_attr, size=(num_nodes, num_nodes))
        out_of = self.propagate(index.reversed_edge_index, edge_attr=edge_attr,
                                size=(num_nodes, num_nodes))
        glob = np_summary(x, edge_attr, index, self.num_layers, in_mean=into)
        edge_glob, node_glob = self._global_terms(glob.reshape(index.num_graphs, -1),
                                                  index.num_layers)   # [B * L_g, C']
        summary = torch.cat([into, x.masked_fill(index.is_input.unsqueeze(-1), 0.0), out_of], -1)
        # B s_u, C s_v, E s_v projected once per neuron (typed by its layer), then
        # gathered per edge by the edge update
        as_src, as_dst, node_out = layer_linear(summary, self._neuron_weight(), index.node_layer,
                                                index.neuron_plan).split(self.out_channels, 1)
        as_dst = as_dst + edge_glob.index_select(0, index.node_weight_group)
        edge_out = self.edge_updater(edge_index, as_src=as_src, as_dst=as_dst,
                                     edge_attr=edge_attr, edge_type=index.edge_layer - 1,
                                     plan=index.edge_plan)
        node_out = node_out + node_glob.index_select(0, index.node_weight_group)
        return node_out.masked_fill(index.is_input.unsqueeze(-1), 0.0), edge_out

    def message(self, edge_attr: Tensor) -> Tensor:
        return edge_attr        # aggregated by the mean: in(v) (or out(u), edges reversed)

    def edge_update(self, as_src_j: Tensor, as_dst_i: Tensor, edge_attr: Tensor,
                    edge_type: Tensor, plan: TypePlan | None) -> Tensor:
        r""":math:`\mathbf{A}_l \mathbf{h}_e + \mathbf{B}_l \mathbf{s}_u +
        (\mathbf{C}_l \mathbf{s}_v + \mathbf{D}_l \mathbf{g} + \mathbf{a}_l)`."""
        return layer_linear(edge_attr, self.edge_self, edge_type, plan) + as_src_j + as_dst_i

    def _neuron_weight(self) -> Tensor:
        r"""``[L + 1, 3C, 3C']``: for a neuron of layer :math:`k`, the columns
        :math:`[\mathbf{B}_{k+1} | \mathbf{C}_k | \mathbf{E}_k]` (zero where the
        layer has no such term)."""
        zero = self.edge_src.new_zeros(1, *self.edge_src.shape[1:])
        return torch.cat([torch.cat([self.edge_src, zero]),
                          torch.cat([zero, self.edge_dst]),
                          torch.cat([zero, self.node_self])], dim=-1)

    def _grid_path(self, x: Tensor, edge_attr: Tensor, grid: LayerGrid,
                   index: WeightGraphIndex) -> tuple[Tensor, Tensor]:
        r"""The same map on a batch of complete networks of one architecture, whose
        edges are every graph's :math:`W_l` row-major: each weight layer is a view
        ``[B, n_l, n_{l-1}, C]`` of ``edge_attr``, the means are means over its
        axes and the gathers are broadcasts (``benchmarks/bench_operators.py``:
        faster than the reference on such batches, see ``docs/performance.md``)."""
        B, C, L_g = index.num_graphs, self.in_channels, index.num_layers
        weights = grid.weight_views(edge_attr)
        nodes = list(x.view(B, -1, C).split(grid.node_counts, 1))
        into = [None] + [w.mean(2) for w in weights]                      # [B, n_k, C]
        out_of = [w.mean(1) for w in weights] + [None]
        glob = torch.stack([torch.stack([w.mean((1, 2)) for w in weights], 1),
                            torch.stack([n.mean(1) for n in nodes[1:]], 1)], 1)
        glob = torch.nn.functional.pad(glob, (0, 0, 0, self.num_layers - L_g))
        edge_glob, node_glob = self._global_terms(glob.reshape(B, -1), L_g)
        edge_glob, node_glob = edge_glob.view(B, L_g, -1), node_glob.view(B, L_g, -1)
        terms = []   # per neuron layer k: [B s_k | C s_k | E s_k]
        neuron_weight = self._neuron_weight()
        for k, n in enumerate(nodes):
            parts = [into[k] if k > 0 else torch.zeros_like(n),
                     n if k > 0 else torch.zeros_like(n),
                     out_of[k] if k < L_g else torch.zeros_like(n)]
            terms.append(torch.cat(parts, -1) @ neuron_weight[k])
        edge_out, node_out = [], [terms[0].new_zeros(B, grid.node_counts[0], self.out_channels)]
        for l, w in enumerate(weights, start=1):
            as_src = terms[l - 1][..., :self.out_channels]
            as_dst, node = terms[l][..., self.out_channels:].split(self.out_channels, -1)
            out = w @ self.edge_self[l - 1]
            out = out + (as_dst + edge_glob[:, l - 1, None]).unsqueeze(2) + as_src.unsqueeze(1)
            edge_out.append(out.flatten(1, 2))
            node_out.append(node + node_glob[:, l - 1, None])
        return (torch.cat(node_out, 1).view(-1, self.out_channels),
                torch.cat(edge_out, 1).view(-1, self.out_channels))

    def _global_terms(self, glob: Tensor, graph_layers: int) -> tuple[Tensor, Tensor]:
        """``D_l g + a_l`` and ``F_l g + e_l`` of every graph and of its layers
        ``1..graph_layers``, ``[B * graph_layers, C']`` each (one matmul for both)."""
        L, C_out = self.num_layers, self.out_channels
        weight = torch.cat([self.edge_global, self.node_global], dim=-1)    # [L, 2LC, 2C']
        out = (glob @ weight.transpose(0, 1).reshape(glob.size(1), -1)).view(-1, L, 2 * C_out)
        if self.edge_bias is not None:
            out = out + torch.cat([self.edge_bias, self.node_bias], dim=-1)
        edge_glob, node_glob = out[:, :graph_layers].reshape(-1, 2 * C_out).split(C_out, dim=1)
        return edge_glob, node_glob

    def _embed_io(self, x: Tensor, edge_attr: Tensor,
                  index: WeightGraphIndex) -> tuple[Tensor, Tensor]:
        io = index.part("np_io", _io_rows)
        for name, count, limit in (("input", io.num_inputs, self.num_inputs),
                                   ("output", io.num_outputs, self.num_outputs)):
            if count > limit:
                raise ValueError(f"NPConv: a graph has {count} {name} neurons but the IO "
                                 f"embedding was built for num_{name}s={limit}")
        edge_attr = edge_attr.index_add(0, io.first_edges,
                                        self.input_embedding[io.first_edge_pos])
        edge_attr = edge_attr.index_add(0, io.last_edges,
                                        self.output_embedding[io.last_edge_pos])
        x = x.index_add(0, io.outputs, self.output_bias_embedding[io.output_pos])
        return x, edge_attr

    # --- dense twin ---------------------------------------------------------
    def forward_dense(self, ws: WeightSpace, mask: list[Tensor] | None = None) -> WeightSpace:
        """The same map on a folded :class:`WeightSpace` (see :mod:`nft_pyg.tensor.np_dense`);
        ``mask`` (per weight layer ``[B, n_l, n_{l-1}]``, true where the weight exists)
        gives the map of the pruned graph."""
        io = (self.input_embedding, self.output_embedding, self.output_bias_embedding) \
            if self.io_embedding else (None, None, None)
        params = NPWeights(self.edge_self, self.edge_src, self.edge_dst, self.edge_global,
                           self.node_self, self.node_global, self.edge_bias, self.node_bias, *io)
        return np_layer_dense(params, ws, mask, type(self).__name__)

    def __repr__(self) -> str:
        io = (f", io_embedding=True, num_inputs={self.num_inputs}, "
              f"num_outputs={self.num_outputs}") if self.io_embedding else ""
        return (f"{type(self).__name__}({self.in_channels}, {self.out_channels}, "
                f"num_layers={self.num_layers}{io}, bias={self.edge_bias is not None})")


@dataclass
class _IORows:
    """The ``"np_io"`` part: where :class:`NPConv`'s IO embeddings are added."""

    num_inputs: int
    num_outputs: int
    first_edges: Tensor
    first_edge_pos: Tensor
    last_edges: Tensor
    last_edge_pos: Tensor
    outputs: Tensor
    output_pos: Tensor


def _io_rows(index: WeightGraphIndex) -> _IORows:
    pos = index.node_pos
    outputs = index.is_output.nonzero().view(-1)
    first = (index.edge_layer == 1).nonzero().view(-1)
    last = index.is_output[index.dst].nonzero().view(-1)

    def count(nodes: Tensor) -> int:
        return int(pos[nodes].max()) + 1 if nodes.numel() else 0
    return _IORows(count(index.is_input.nonzero().view(-1)), count(outputs),
                   first, pos[index.src[first]], last, pos[index.dst[last]],
                   outputs, pos[outputs])
