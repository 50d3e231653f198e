r"""The HNP layer (hidden neurons permutable) as message passing."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch_geometric.nn import MessagePassing
from torch_geometric.utils import scatter

from ...tensor.hnp_dense import HNPWeights, hnp_layer_dense, hnp_num_types
from ...tensor.weight_space import WeightSpace
from ..structure import TypePlan, WeightGraphIndex, operator_inputs
from ..summaries import LayerGrid, check_hnp, hnp_summary, layer_grid
from .pointwise_conv import layer_linear


class HNPConv(MessagePassing):
    r"""The HNP weight-space layer of "Permutation Equivariant Neural
    Functionals" (Zhou et al., NeurIPS 2023, arXiv 2302.14040): linear and
    equivariant to :math:`S_{n_1} \times \dots \times S_{n_{L-1}}`, the
    permutations of the *hidden* neurons; input neurons (layer 0) and output
    neurons (layer L) are fixed by position. Its span equals the DWSNets
    layer (Navon et al., "Equivariant Architectures for Learning in Deep
    Weight Spaces", ICML 2023).

    Each weight index :math:`W_l[i, j]` lives in neuron layers
    :math:`(l, l-1)` and each bias :math:`b_l[i]` in layer :math:`l`; an
    index of layer 0 or L is fixed. The basis is spanned by the orbits of
    the group on (output index, input index) pairs: a hidden layer shared by
    the output and input entries gives "same neuron" (local terms below) or
    "mean over it" (global terms); fixed indices get dense, position-typed
    parameters. For a hidden neuron :math:`v` of layer :math:`h` its summary
    is

    .. math::
        s(v) = \big[\,\mathrm{in}_h(v),\ \mathbf{x}_v,\ \mathrm{out}_h(v)\,\big],

    where :math:`\mathrm{in}_h(v)` is the mean of its in-edges, except for
    :math:`h = 1`, where it is *all* its in-edges ordered by input position
    (:math:`W_1[v, :]`, :math:`n_0 C` numbers); :math:`\mathrm{out}_h(v)`
    is the mean of its out-edges, except for :math:`h = L-1`, where it is
    all of them by output position (:math:`W_L[:, v]`, :math:`n_L C`). Let
    :math:`\mathbf{g}` be the invariant summary of :class:`HNPPool`
    (:math:`G` types: columns of :math:`W_1`, hidden weight layers, rows of
    :math:`W_L`, hidden bias layers, entries of :math:`b_L`) and
    :math:`\tau(\cdot)` the type of an entry. For an edge :math:`e = (u \to v)`
    of weight layer :math:`l` and a neuron :math:`v` of layer :math:`h`:

    .. math::
        \mathbf{h}'_e &= \begin{cases}
            \mathbf{M}^{(1)}_{\mathrm{pos}(u)}\, s(v) & l = 1 \\
            \mathbf{A}_l \mathbf{h}_e + \mathbf{B}_l\, s(u) + \mathbf{C}_l\, s(v) & 1 < l < L \\
            \mathbf{M}^{(L)}_{\mathrm{pos}(v)}\, s(u) & l = L
        \end{cases}
        \;+\; \big(\mathbf{D}\,\mathbf{g} + \mathbf{c}\big)_{\tau(e)} \\
        \mathbf{x}'_v &= \mathbf{E}_h\, s(v)\,[h < L] \;+\;
            \big(\mathbf{D}\,\mathbf{g} + \mathbf{c}\big)_{\tau(v)},
        \qquad \mathbf{x}'_v = 0 \text{ for input neurons.}

    Term by term (tensor form, :math:`\bar{\ }` = mean over a hidden index;
    an index of layer 0 or L is never averaged: the map is dense in it):

    - :math:`W_l \leftarrow W_l`: pointwise :math:`\mathbf{A}_l`, row mean
      :math:`\bar W_l[i, \cdot]` (:math:`\mathrm{in}(v)` in
      :math:`\mathbf{C}_l`), column mean :math:`\bar W_l[\cdot, j]`
      (:math:`\mathrm{out}(u)` in :math:`\mathbf{B}_l`). For :math:`l = 1`:
      :math:`\sum_q A[j, q] W_1[i, q]` (:math:`n_0^2` maps); for
      :math:`l = L`: :math:`\sum_p A[i, p] W_L[p, j]` (:math:`n_L^2`).
    - :math:`W_l \leftarrow W_{l-1}` (:math:`l \ge 2`): row :math:`j` of
      :math:`W_{l-1}` (mean, or all of it by input position if
      :math:`l = 2`), i.e. :math:`\mathrm{in}(u)`.
    - :math:`W_l \leftarrow W_{l+1}` (:math:`l < L`): column :math:`i` of
      :math:`W_{l+1}` (mean, or all of it by output position if
      :math:`l + 1 = L`), i.e. :math:`\mathrm{out}(v)`.
    - :math:`W_l \leftarrow b_l` (:math:`l < L`): :math:`b_l[i] = \mathbf{x}_v`.
    - :math:`W_l \leftarrow b_{l-1}` (:math:`l \ge 2`): :math:`b_{l-1}[j] =
      \mathbf{x}_u`, including :math:`b_{L-1} \to W_L` (typed by the output
      row), a term the official ``nfn`` code omits.
    - :math:`b_h \leftarrow W_h,\ b_h,\ W_{h+1}` (:math:`h < L`): the three
      parts of :math:`s(v)` through :math:`\mathbf{E}_h`.
    - global: every entry of type :math:`t` gets :math:`(\mathbf{D}\mathbf{g}
      + \mathbf{c})_t`: all invariant features of the whole weight space
      (hidden-layer means, :math:`W_1` column means, :math:`W_L` row means,
      :math:`b_L`), mapped densely to every type, which includes
      :math:`b_L \leftarrow \text{everything}` and the mean terms of all
      other layers.

    For :math:`L = 1` nothing is permutable and the layer is a dense linear
    map of the whole weight space (:math:`G = n_1 n_0 + n_1`). Entries on
    either side of a term are ``C`` channels; all maps mix channels.

    Number of parameters (:math:`c_{in} c_{out}` per entry below, plus
    :math:`G c_{out}` for the bias), with :math:`s_h = i_h + 1 + o_h`,
    :math:`i_1 = n_0`, :math:`o_{L-1} = n_L`, else :math:`i_h = o_h = 1`:

    .. math::
        G^2 + n_0 s_1 + n_L s_{L-1} + \sum_{h=1}^{L-1} s_h
        + \sum_{l=2}^{L-1} (1 + s_{l-1} + s_l),
        \qquad G = n_0 + 2 n_L + 2L - 3,

    of order :math:`(L + n_0 + n_L)^2` (and :math:`G^2`,
    :math:`G = n_1 n_0 + n_1`, for :math:`L = 1`).

    Typing and batches: the layer is built for one depth :math:`L` and one
    :math:`n_0, n_L`; each graph of a batch must match them (hidden widths
    are free). Mixed-depth batches are rejected: a weight layer's terms
    depend on its distance to both fixed ends (e.g. :math:`W_2` is the last
    layer of a 2-layer net but hidden in a 4-layer one), so no single typing
    serves two depths.

    Pruned networks (missing edges): as everywhere in the package, a missing
    edge is absent from every mean (a mean over the edges that exist), not a
    zero in it, and an absent :math:`W_1` / :math:`W_L` entry is a zero slot
    of :math:`s(v)`; the dense twin computes the same map when given the
    presence mask (``forward_dense(ws, mask)``).

    Computation (reference path, message passing): :math:`\mathrm{in},
    \mathrm{out}` by ``propagate`` (mean aggregation over the edges and the
    reversed edges); the maps of :math:`s(v)` (:math:`\mathbf{E}_h,
    \mathbf{B}_{h+1}, \mathbf{C}_h`) once per hidden neuron, one matmul per
    map on the means part of :math:`s(v)`; its by-position parts as messages:
    each :math:`W_1` / :math:`W_L` edge through its position's block of every
    map, summed at its hidden neuron (the same as placing each edge in its
    (neuron, position) slot of :math:`s(v)`, at the cost of the edges that
    exist); :math:`\mathbf{M}^{(1)}, \mathbf{M}^{(L)}` on the means part per
    edge, by the position of its fixed end. ``edge_updater`` gathers the terms
    of each edge's endpoints and adds :math:`\mathbf{A}_l \mathbf{h}_e` and the
    global term of the edge's type. On a batch of complete networks of one
    architecture (the index's ``"grid"`` part) the same map runs on views
    ``[B, n_l, n_{l-1}, C]`` of the edge features (means over axes, the
    by-position parts as reshapes, broadcasts instead of gathers), which is
    faster there.

    Residual networks are refused (a chain of weight layers only): the
    :class:`~nft_pyg.nn.WeightGraphIndex` names their first residual edge.

    Args:
        in_channels (int): input feature channels ``C``.
        out_channels (int): output feature channels.
        num_layers (int): weight layers ``L`` of every graph.
        num_inputs (int): input neurons :math:`n_0`.
        num_outputs (int): output neurons :math:`n_L`.
        bias (bool, optional): learn the invariant bias :math:`\mathbf{c}`
            (one vector per type). (default: :obj:`True`)

    Shapes:
        - **input:** node features :math:`(|\mathcal{V}|, C_{in})`, ``edge_index``
          :math:`(2, |\mathcal{E}|)`, edge features :math:`(|\mathcal{E}|, C_{in})`,
          the batch's :class:`~nft_pyg.nn.structure.WeightGraphIndex`:
          ``conv(x, edge_index, edge_attr, index)``
        - **output:** node features :math:`(|\mathcal{V}|, C_{out})` (zero on
          input neurons), edge features :math:`(|\mathcal{E}|, C_{out})`
    """

    def __init__(self, in_channels: int, out_channels: int, num_layers: int,
                 num_inputs: int, num_outputs: int, bias: bool = True):
        super().__init__(aggr="mean")
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels),
                            ("num_layers", num_layers), ("num_inputs", num_inputs),
                            ("num_outputs", num_outputs)):
            if value < 1:
                raise ValueError(f"HNPConv: {name} must be >= 1, got {value}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.num_layers, self.num_inputs, self.num_outputs = num_layers, num_inputs, num_outputs
        L, c, d = num_layers, in_channels, out_channels
        self.num_types = sum(hnp_num_types(L, num_inputs, num_outputs))
        self.global_map = nn.Linear(self.num_types * c, self.num_types * d, bias=bias)
        # summary s(v) of hidden layer h: (in, x, out) widths in units of C
        self.summary_parts = {h: (num_inputs if h == 1 else 1, 1,
                                  num_outputs if h == L - 1 else 1) for h in range(1, L)}
        width = {h: sum(parts) * c for h, parts in self.summary_parts.items()}
        self.node_maps = nn.ModuleList(nn.Linear(width[h], d, bias=False) for h in range(1, L))
        self.pointwise = nn.ModuleList(nn.Linear(c, d, bias=False) for _ in range(2, L))
        self.src_maps = nn.ModuleList(nn.Linear(width[l - 1], d, bias=False)
                                      for l in range(2, L))
        self.dst_maps = nn.ModuleList(nn.Linear(width[l], d, bias=False) for l in range(2, L))
        self.first_edge = nn.Linear(width[1], num_inputs * d, bias=False) if L > 1 else None
        self.last_edge = nn.Linear(width[L - 1], num_outputs * d, bias=False) if L > 1 else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        for module in self.modules():
            if isinstance(module, nn.Linear):
                module.reset_parameters()

    # --- graph form ----------------------------------------------------------
    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor,
                index: WeightGraphIndex | None = None) -> tuple[Tensor, Tensor]:
        """``(x', edge_attr')`` of a batch; ``index = WeightGraphIndex.from_data(batch)``."""
        L, d = self.num_layers, self.out_channels
        index = operator_inputs("HNPConv", x, edge_index, edge_attr, index, self.in_channels, L)
        typing = check_hnp("HNPConv", index, L, self.num_inputs, self.num_outputs)
        if L == 1:   # nothing is permutable: the global map is the whole layer
            glob = self._global_terms(hnp_summary(x, edge_attr, index, typing))
            return (glob.index_select(0, typing.node_glob_id) * typing.has_params,
                    glob.index_select(0, typing.edge_glob_id))
        grid = layer_grid(index)
        if grid is not None:
            return self._grid_path(x, edge_attr, grid, index.num_graphs)
        N = index.num_nodes
        into = self.propagate(edge_index, edge_attr=edge_attr, size=(N, N))
        out_of = self.propagate(index.reversed_edge_index, edge_attr=edge_attr, size=(N, N))
        glob = self._global_terms(hnp_summary(x, edge_attr, index, typing, into, out_of))
        rows = index.part("hnp_conv", _hnp_rows)
        terms = [self._hidden_terms(h, nodes, x, edge_attr, into, out_of, rows)
                 for h, nodes in rows.layer_nodes.items()]
        node_out = (glob.index_select(0, typing.node_glob_id) * typing.has_params).index_add(
            0, rows.hidden_nodes, torch.cat([t["node"] for t in terms]))
        # an edge reads the terms of its endpoints: B s(u) and C s(v) in hidden layers,
        # its own M^(1) s(v) / M^(L) s(u) in W_1 / W_L (and a zero row for the fixed end)
        zero = x.new_zeros(1, d)
        as_src = torch.cat([t["src"] for t in terms[:-1]] + [terms[-1]["last"], zero])
        as_dst = torch.cat([terms[0]["first"]] + [t["dst"] for t in terms[1:]] + [zero])
        edge_glob = glob.index_select(0, typing.edge_glob_id)
        edge_out = self.edge_updater(rows.term_rows, as_src=as_src, as_dst=as_dst,
                                     edge_attr=edge_attr, glob=edge_glob,
                                     edge_type=index.edge_layer - 1, plan=index.edge_plan)
        return node_out, edge_out

    def message(self, edge_attr: Tensor) -> Tensor:
        return edge_attr   # aggregated by the mean: in(v) (or out(u), edges reversed)

    def _hidden_terms(self, h: int, nodes: Tensor, x: Tensor, edge_attr: Tensor, into: Tensor,
                      out_of: Tensor, rows: _HNPRows) -> dict[str, Tensor]:
        r"""Every map of :math:`s(v)` (:meth:`_neuron_maps`) for the neurons of hidden
        layer ``h``: ``[n_h, C']`` each, but ``"first"`` / ``"last"`` one row per
        :math:`W_1` / :math:`W_L` edge: :math:`\mathbf{M}_{\mathrm{pos}}\, s(v)` at the
        position of its fixed end. The by-position parts of :math:`s(v)` enter as
        messages (:meth:`_by_position`); its means part goes through the
        :math:`\mathbf{M}` maps per edge (:meth:`_per_edge`)."""
        first, last = h == 1, h == self.num_layers - 1    # in / out by position
        means = torch.cat([part.index_select(0, nodes) for part in
                           [into] * (not first) + [x] + [out_of] * (not last)], -1)
        maps = self._neuron_maps(h)
        sizes = [m.out_features for m in maps.values()]
        w_in, w_mean, w_out = torch.cat([m.weight for m in maps.values()]).split(
            self._column_blocks(h), 1)
        messages = [self._by_position(end, edge_attr, w) for end, w, used in
                    ((rows.first, w_in, first), (rows.last, w_out, last)) if used]
        by_position = dict(zip(maps, sum(messages).split(sizes, -1))) if messages else {}
        terms = {}
        for name, weight in zip(maps, w_mean.split(sizes)):
            end = {"first": rows.first, "last": rows.last}.get(name)
            if end is None:      # per neuron
                terms[name] = means @ weight.t()
                if name in by_position:
                    terms[name] = terms[name] + by_position[name]
            else:                # per edge: its position's block, its slot
                terms[name] = self._per_edge(end, means, weight) + \
                    by_position[name].reshape(-1, self.out_channels).index_select(0, end.slot)
        return terms

    def _per_edge(self, end: _FixedEdges, means: Tensor, weight: Tensor) -> Tensor:
        r"""``[E_f, C']``: for each edge of ``end``, the means part of :math:`s(v)` of its
        hidden neuron (``means`` ``[n_h, F]``) through the ``[C', F]`` block of its
        position in ``weight`` ``[P C', F]``."""
        blocks = weight.view(end.num_positions, -1, weight.size(1)).transpose(1, 2)
        return layer_linear(means.index_select(0, end.neuron), blocks, end.position, end.plan)

    def _by_position(self, end: _FixedEdges, edge_attr: Tensor, weight: Tensor) -> Tensor:
        r"""``[n_h, K]``: the by-position part of :math:`s(v)` (the :math:`W_1` row or
        :math:`W_L` column of each hidden neuron :math:`v`, absent edges zero) times
        ``weight`` ``[K, P C]``, as messages: each edge of ``end`` through its
        position's ``[C, K]`` block, summed at its hidden neuron. Equal to placing
        every edge in its slot and multiplying, at the cost of the edges that exist."""
        blocks = weight.view(weight.size(0), end.num_positions, -1).permute(1, 2, 0)
        messages = layer_linear(edge_attr.index_select(0, end.edges), blocks, end.position,
                                end.plan)
        return scatter(messages, end.neuron, 0, dim_size=end.num_neurons, reduce="sum")

    def edge_update(self, as_src_j: Tensor, as_dst_i: Tensor, edge_attr: Tensor, glob: Tensor,
                    edge_type: Tensor, plan: TypePlan | None) -> Tensor:
        r""":math:`\mathbf{A}_l \mathbf{h}_e` (hidden weight layers) plus the terms of
        both endpoints plus :math:`(\mathbf{D}\mathbf{g} + \mathbf{c})_{\tau(e)}`."""
        out = as_src_j + as_dst_i      # a new tensor: the other terms are added in place
        out.add_(glob)
        if self.num_layers > 2:
            out.add_(layer_linear(edge_attr, self._pointwise_weight(), edge_type, plan))
        return out

    def _pointwise_weight(self) -> Tensor:
        r"""``[L, C, C']``: :math:`\mathbf{A}_l^T` per weight layer, zero for 1 and L."""
        zero = self.pointwise[0].weight.new_zeros(1, self.in_channels, self.out_channels)
        return torch.cat([zero] + [m.weight.t().unsqueeze(0) for m in self.pointwise] + [zero])

    def _global_terms(self, summary: Tensor) -> Tensor:
        r"""``[B G, C']``: :math:`(\mathbf{D}\mathbf{g} + \mathbf{c})_t` of every graph
        and type, from the ``[B, G, C]`` summary."""
        return self.global_map(summary.flatten(1)).view(-1, self.out_channels)

    def _neuron_maps(self, h: int) -> dict[str, nn.Linear]:
        r"""Every map of :math:`s(v)` for hidden layer ``h``: ``"node"``
        (:math:`\mathbf{E}_h`), ``"src"`` / ``"dst"`` (:math:`\mathbf{B}_{h+1}` /
        :math:`\mathbf{C}_h`, the hidden weight layers after / before it),
        ``"first"`` / ``"last"`` (:math:`\mathbf{M}^{(1)}` / :math:`\mathbf{M}^{(L)}`,
        ``n_0 C'`` / ``n_L C'`` wide: the output for every position of the fixed end)."""
        maps = {"node": self.node_maps[h - 1]}
        if h == 1:
            maps["first"] = self.first_edge
        if h + 1 < self.num_layers:
            maps["src"] = self.src_maps[h - 1]
        if h > 1:
            maps["dst"] = self.dst_maps[h - 2]
        if h == self.num_layers - 1:
            maps["last"] = self.last_edge
        return maps

    def _column_blocks(self, h: int) -> list[int]:
        r"""Widths of the columns of :math:`s(v)` of hidden layer ``h``: the
        :math:`W_1` row by position (``h = 1``, else 0), the means and
        :math:`\mathbf{x}_v`, the :math:`W_L` column by position (``h = L - 1``, else 0)."""
        ins, _, outs = self.summary_parts[h]
        first, last = (h == 1) * ins, (h == self.num_layers - 1) * outs
        return [c * self.in_channels for c in (first, ins + 1 + outs - first - last, last)]

    def _neuron_terms(self, h: int, summary: Tensor) -> dict[str, Tensor]:
        """The maps of :meth:`_neuron_maps` on ``summary`` (:math:`s(v)`,
        ``[..., (i_h + 1 + o_h) C]``), one matmul."""
        maps = self._neuron_maps(h)
        out = torch.nn.functional.linear(summary, torch.cat([m.weight for m in maps.values()]))
        return dict(zip(maps, out.split([m.out_features for m in maps.values()], -1)))

    def _grid_path(self, x: Tensor, edge_attr: Tensor, grid: LayerGrid,
                   num_graphs: int) -> tuple[Tensor, Tensor]:
        r"""The same map on a batch of complete networks of one architecture, whose
        edges are every graph's :math:`W_l` row-major: each weight layer is a view
        ``[B, n_l, n_{l-1}, C]`` of ``edge_attr``, the means are means over its
        axes and the gathers are broadcasts (``benchmarks/bench_operators.py``:
        faster than the reference on such batches, see ``docs/performance.md``)."""
        B, C, d, L = num_graphs, self.in_channels, self.out_channels, self.num_layers
        n_in, n_out = self.num_inputs, self.num_outputs
        weights = grid.weight_views(edge_attr)                        # [B, n_l, n_{l-1}, C]
        nodes = x.view(B, -1, C).split(grid.node_counts, 1)            # [B, n_k, C]
        summary = torch.cat([weights[0].mean(1)]                       # the typing's order
                            + [w.mean((1, 2)).unsqueeze(1) for w in weights[1:-1]]
                            + [weights[-1].mean(2)]
                            + [n.mean(1, keepdim=True) for n in nodes[1:-1]] + [nodes[-1]], 1)
        glob = self._global_terms(summary).view(B, -1, d)
        weight_glob, node_glob = glob.split([n_in + L - 2 + n_out, L - 1 + n_out], 1)
        terms = []
        for h in range(1, L):
            ins = weights[0].flatten(2) if h == 1 else weights[h - 1].mean(2)
            outs = weights[-1].transpose(1, 2).flatten(2) if h == L - 1 else weights[h].mean(1)
            terms.append(self._neuron_terms(h, torch.cat([ins, nodes[h], outs], -1)))
        first = terms[0]["first"].view(B, -1, n_in, d) + weight_glob[:, None, :n_in]
        edge_out = [first.flatten(1, 2)]
        for l in range(2, L):
            out = weights[l - 1] @ self.pointwise[l - 2].weight.t()   # a new tensor: add in place
            out.add_((terms[l - 1]["dst"] + weight_glob[:, n_in + l - 2, None]).unsqueeze(2))
            edge_out.append(out.add_(terms[l - 2]["src"].unsqueeze(1)).flatten(1, 2))
        last = terms[-1]["last"].view(B, -1, n_out, d).transpose(1, 2) + \
            weight_glob[:, n_in + L - 2:, None]
        edge_out.append(last.flatten(1, 2))
        node_out = [x.new_zeros(B, n_in, d)] + [t["node"] + node_glob[:, h, None]
                                                 for h, t in enumerate(terms)]
        node_out.append(node_glob[:, L - 1:])
        return torch.cat(node_out, 1).view(-1, d), torch.cat(edge_out, 1).view(-1, d)

    # --- dense twin ------------------------------------------------------------
    def forward_dense(self, ws: WeightSpace, mask: list[Tensor] | None = None) -> WeightSpace:
        """The same map on a folded :class:`WeightSpace` (see
        :func:`~nft_pyg.tensor.hnp_dense.hnp_layer_dense`); ``mask`` (per weight
        layer ``[B, n_l, n_{l-1}]``, true where the weight exists) gives the map
        of the pruned graph."""
        params = HNPWeights(
            self.in_channels, self.out_channels, self.num_layers, self.num_inputs,
            self.num_outputs, self.global_map.weight, self.global_map.bias,
            [m.weight for m in self.node_maps], [m.weight for m in self.pointwise],
            [m.weight for m in self.src_maps], [m.weight for m in self.dst_maps],
            None if self.first_edge is None else self.first_edge.weight,
            None if self.last_edge is None else self.last_edge.weight)
        return hnp_layer_dense(params, ws, mask, type(self).__name__)

    # --- introspection -----------------------------------------------------------
    def terms(self) -> dict[str, tuple[Tensor, slice]]:
        """Every term of the basis: name -> (weight matrix, its columns for the term).

        Zeroing ``weight[:, columns]`` switches that term off; ``"global"``
        and ``"bias"`` are the invariant terms.
        """
        c, L = self.in_channels, self.num_layers
        terms = {"global": (self.global_map.weight, slice(None))}
        if self.global_map.bias is not None:
            terms["bias"] = (self.global_map.bias, slice(None))

        def split(weight: Tensor, h: int, names: tuple[str, str, str]) -> None:
            ins, _, outs = self.summary_parts[h]
            bounds = (0, ins * c, (ins + 1) * c, (ins + 1 + outs) * c)
            for name, start, stop in zip(names, bounds, bounds[1:]):
                terms[name] = (weight, slice(start, stop))

        for h in range(1, L):
            split(self.node_maps[h - 1].weight, h, (f"b_{h} <- W_{h}", f"b_{h} <- b_{h}",
                                                    f"b_{h} <- W_{h + 1}"))
        if L > 1:
            split(self.first_edge.weight, 1, ("W_1 <- W_1", "W_1 <- b_1", "W_1 <- W_2"))
            split(self.last_edge.weight, L - 1, (f"W_{L} <- W_{L - 1}", f"W_{L} <- b_{L - 1}",
                                                 f"W_{L} <- W_{L}"))
        for layer in range(2, L):
            k = layer - 2
            terms[f"W_{layer} <- W_{layer} (pointwise)"] = (self.pointwise[k].weight, slice(None))
            split(self.src_maps[k].weight, layer - 1,
                  (f"W_{layer} <- W_{layer - 1}", f"W_{layer} <- b_{layer - 1}",
                   f"W_{layer} <- W_{layer} (column mean)"))
            split(self.dst_maps[k].weight, layer,
                  (f"W_{layer} <- W_{layer} (row mean)", f"W_{layer} <- b_{layer}",
                   f"W_{layer} <- W_{layer + 1}"))
        return terms

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, "
                f"num_layers={self.num_layers}, num_inputs={self.num_inputs}, "
                f"num_outputs={self.num_outputs})")


@dataclass
class _FixedEdges:
    """The edges of :math:`W_1` (or :math:`W_L`) seen from their hidden neuron:
    ``neuron`` its rank in its layer (``num_neurons`` there), ``position`` the
    position of the fixed (input / output) neuron, one of ``num_positions``,
    ``slot = neuron * num_positions + position``, ``plan`` the edges grouped by
    position."""

    edges: Tensor
    neuron: Tensor
    position: Tensor
    slot: Tensor
    num_neurons: int
    num_positions: int
    plan: TypePlan | None


@dataclass
class _HNPRows:
    """The ``"hnp_conv"`` part: the rows :class:`HNPConv`'s reference path reads.

    ``layer_nodes[h]``: the neurons of hidden layer ``h`` over the batch (``rank``
    of a neuron: its place there), ``hidden_nodes`` all of them in that order;
    ``first`` / ``last``: the edges of :math:`W_1` / :math:`W_L`; ``term_rows``
    ``[2, E]``: the row of each edge in the reference's ``as_src`` / ``as_dst``
    tables.
    """

    layer_nodes: dict[int, Tensor]
    hidden_nodes: Tensor
    first: _FixedEdges
    last: _FixedEdges
    term_rows: Tensor


def _hnp_rows(index: WeightGraphIndex) -> _HNPRows:
    typing = index.parts["hnp"]     # built by check_hnp before
    L, n_in, n_out = typing.num_layers, typing.num_inputs, typing.num_outputs
    src, dst, pos, layer = index.src, index.dst, index.node_pos, index.edge_layer
    layer_nodes = {h: (index.node_layer == h).nonzero().view(-1) for h in range(1, L)}
    count = {h: nodes.numel() for h, nodes in layer_nodes.items()}
    rank = torch.zeros_like(pos)
    for nodes in layer_nodes.values():
        rank[nodes] = torch.arange(nodes.numel(), device=pos.device)

    def fixed_end(edges: Tensor, hidden: Tensor, fixed: Tensor, h: int, P: int) -> _FixedEdges:
        neuron, position = rank[hidden[edges]], pos[fixed[edges]]
        return _FixedEdges(edges, neuron, position, neuron * P + position, count[h], P,
                         TypePlan.of(position, P, index.num_graphs))
    first = fixed_end((layer == 1).nonzero().view(-1), dst, src, 1, n_in)
    last = fixed_end((layer == L).nonzero().view(-1), src, dst, L - 1, n_out)
    # as_src: [B terms of hidden layers 1..L-2 | M^(L) terms of the W_L edges | zero]
    src_offset = [0]
    for h in range(1, L - 1):
        src_offset.append(src_offset[-1] + count[h])
    src_row = torch.full_like(layer, src_offset[-1] + last.edges.numel())
    # as_dst: [M^(1) terms of the W_1 edges | C terms of hidden layers 2..L-1 | zero]
    dst_offset = [0, first.edges.numel()]
    for h in range(2, L):
        dst_offset.append(dst_offset[-1] + count[h])
    dst_row = torch.full_like(layer, dst_offset[-1])
    for l in range(2, L):
        rows = (layer == l).nonzero().view(-1)
        src_row[rows] = src_offset[l - 2] + rank[src[rows]]
        dst_row[rows] = dst_offset[l - 1] + rank[dst[rows]]
    src_row[last.edges] = src_offset[-1] + torch.arange(last.edges.numel(), device=pos.device)
    dst_row[first.edges] = torch.arange(first.edges.numel(), device=pos.device)
    return _HNPRows(layer_nodes, torch.cat(list(layer_nodes.values())), first, last,
                    torch.stack([src_row, dst_row]))
