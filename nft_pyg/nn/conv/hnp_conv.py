r"""The HNP layer (hidden neurons permutable) as message passing."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch_geometric.nn import MessagePassing

from ...tensor.hnp_dense import HNPWeights, hnp_layer_dense, hnp_num_types
from ...tensor.weight_space import WeightSpace
from ..structure import WeightGraphIndex, operator_inputs
from ..summaries import check_hnp, hnp_summary, layer_grid


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
    zero in it; the dense twin computes the same map when given the presence
    mask (``forward_dense(ws, mask)``). The by-position parts of :math:`s(v)`
    (:math:`W_1` rows, :math:`W_L` columns) are read one edge at a time and
    the :math:`W_1` / :math:`W_L` outputs computed per edge, so their cost
    falls with the edges left.

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
        L, n_in, n_out, d = self.num_layers, self.num_inputs, self.num_outputs, \
            self.out_channels
        structure = operator_inputs("HNPConv", x, edge_index, edge_attr, index,
                                    self.in_channels, L)
        typing = check_hnp("HNPConv", structure, L, n_in, n_out)
        num_nodes = structure.num_nodes
        grid = layer_grid(structure) if L > 1 else None
        fixed: dict[str, Tensor] = {}
        if grid is not None:
            # complete networks of one architecture: every read of edge_attr is a view
            # of one split (one gradient for it, no scatter / gather)
            views = grid.weight_views(edge_attr)
            in_mean, out_mean = grid.neuron_means(views)
            fixed = {"first": views[0].reshape(-1, n_in * self.in_channels),
                     "last": views[-1].transpose(1, 2).reshape(-1, n_out * self.in_channels)}
            layer_rows = {l: views[l - 1].reshape(-1, self.in_channels) for l in range(2, L)}
        elif L > 1:
            in_mean = self.propagate(edge_index, edge_attr=edge_attr,
                                     size=(num_nodes, num_nodes))
            out_mean = self.propagate(structure.reversed_edge_index, edge_attr=edge_attr,
                                      size=(num_nodes, num_nodes))
        if L > 1:
            summary = hnp_summary(x, edge_attr, structure, typing, in_mean, out_mean)
        else:
            summary = hnp_summary(x, edge_attr, structure, typing)         # [B, G, C]
        glob = self.global_map(summary.flatten(1)).view(structure.num_graphs, -1, d)
        node_out = glob.view(-1, d).index_select(0, typing.node_glob_id) * typing.has_params
        if L == 1:
            return node_out, glob.view(-1, d).index_select(0, typing.edge_glob_id)

        index = structure.part("hnp_conv", _conv_index)
        plan = structure.edge_plan
        hidden = {h: self._hidden_layer_terms(h, x, edge_attr, in_mean, out_mean, index, fixed)
                  for h in index.layer_nodes}
        for h, nodes in index.layer_nodes.items():
            node_out.index_add_(0, nodes, hidden[h]["node"])

        # Each layer's rows, in the order of index.layer_edges; the global term of
        # an edge is added per neuron before gathering (its type is fixed by one
        # endpoint's graph and position), so no gather / scatter over all edges.
        def fixed_end_rows(end: _FixedEnd, term: Tensor, types: slice) -> Tensor:
            if end.sparse:  # already one row per edge
                return term + glob[:, types].reshape(-1, d).index_select(0, end.glob_row)
            by_position = term.view(-1, end.num_positions, d) + \
                glob[:, types].index_select(0, index.layer_batch[end.layer])
            return by_position.view(-1, d).index_select(0, end.cell)

        rows = [fixed_end_rows(index.first, hidden[1]["first"], slice(0, n_in))]
        if grid is None:
            layer_rows = _hidden_layer_rows(edge_attr, plan, index, L)
        for layer in range(2, L):
            k = layer - 2
            from_src = hidden[layer - 1]["src"]
            from_dst = hidden[layer]["dst"] + \
                glob[:, n_in + k].index_select(0, index.layer_batch[layer])
            local = self.pointwise[k](layer_rows[layer])
            grid = index.grid[layer]
            if grid is not None:  # complete W_l per graph, row-major: broadcast, no gather
                graphs, rows_, cols = grid
                local = local.view(graphs, rows_, cols, d).add_(
                    from_dst.view(graphs, rows_, 1, d)).add_(from_src.view(graphs, 1, cols, d))
                rows.append(local.view(-1, d))
            else:
                rows.append(local.add_(from_src.index_select(0, index.src_rank[layer])).add_(
                    from_dst.index_select(0, index.dst_rank[layer])))
        rows.append(fixed_end_rows(index.last, hidden[L - 1]["last"],
                                   slice(n_in + L - 2, n_in + L - 2 + n_out)))
        if plan is None:  # an edge outside layers 1..L: it keeps zero
            edge_out = edge_attr.new_zeros(edge_attr.size(0), d)
            edge_out.index_copy_(0, torch.cat(list(index.layer_edges.values())), torch.cat(rows))
        elif plan.order is None:  # blocks of identical layer sequences: interleave views
            edge_out = torch.cat([r.view(plan.period, -1, d) for r in rows], 1).view(-1, d)
        else:
            edge_out = torch.cat(rows).index_select(0, plan.inverse)
        return node_out, edge_out

    def _hidden_layer_terms(self, h: int, x: Tensor, edge_attr: Tensor, in_mean: Tensor,
                            out_mean: Tensor, index: _ConvIndex,
                            fixed: dict[str, Tensor]) -> dict[str, Tensor]:
        r"""Every linear map of :math:`s(v)` for the neurons :math:`v` of hidden layer
        ``h``: ``"node"`` (:math:`\mathbf{E}_h`), ``"src"`` / ``"dst"`` (the
        :math:`\mathbf{B}` / :math:`\mathbf{C}` of the hidden weight layer after /
        before it), each ``[n_h, C']``, and ``"first"`` / ``"last"`` (the
        by-position maps of :math:`W_1` / :math:`W_L`): ``[n_h, n C']`` on a
        complete layer, else ``[E_1, C']`` / ``[E_L, C']``, one row per edge.

        On a pruned graph the parts of :math:`s(v)` that hold the edges of
        :math:`W_1` / :math:`W_L` by position are mostly zero and each edge needs
        one output position only: the maps read those parts one edge at a time and
        sum per neuron, and the by-position outputs are computed per edge (both
        grouped by position, one batched matmul each), so their cost is that of
        the edges left rather than of ``n_h`` times all positions.
        """
        L, c = self.num_layers, self.in_channels
        nodes = index.layer_nodes[h]
        ins, _, outs = self.summary_parts[h]
        bounds = (0, ins * c, (ins + 1) * c, (ins + 1 + outs) * c)
        maps = {"node": self.node_maps[h - 1]}
        if h == 1:
            maps["first"] = self.first_edge
        if h + 1 < L:
            maps["src"] = self.src_maps[h - 1]
        if h > 1:
            maps["dst"] = self.dst_maps[h - 2]
        if h == L - 1:
            maps["last"] = self.last_edge
        per_edge = {name: end for name, end in (("first", index.first), ("last", index.last))
                    if name in maps and end.sparse}

        def part(end: _FixedEnd | None, mean: Tensor, columns: slice) -> tuple:
            if end is None:
                return columns, mean.index_select(0, nodes), None
            if end.sparse:
                return columns, None, end
            name = "first" if end is index.first else "last"
            features = fixed[name] if name in fixed else \
                end.dense_features(edge_attr, nodes.numel())
            return columns, features, None

        # (columns of s(v), dense features [n_h, .] or the fixed end to read by edge)
        parts = [part(index.first if h == 1 else None, in_mean, slice(bounds[0], bounds[1])),
                 (slice(bounds[1], bounds[2]), x.index_select(0, nodes), None),
                 part(index.last if h == L - 1 else None, out_mean, slice(bounds[2], bounds[3]))]
        dense = [p for p in parts if p[1] is not None]
        features = torch.cat([p[1] for p in dense], dim=1)

        # column blocks [in | x | out] of every map's weight: one split (its backward
        # one cat) rather than slices (each a zero-filled full-size gradient)
        widths = [bounds[1] - bounds[0], bounds[2] - bounds[1], bounds[3] - bounds[2]]
        blocks = {name: module.weight.split(widths, dim=1) for name, module in maps.items()}

        def dense_weight(name: str) -> Tensor:
            if len(dense) == len(parts):
                return maps[name].weight
            return torch.cat([blocks[name][j] for j, p in enumerate(parts) if p[1] is not None],
                             dim=1)

        # the by-position parts of s(v): every map at once, summed per neuron
        names = list(maps)
        summed = None
        for j, (_, _, end) in enumerate(parts):
            if end is not None:
                weight = torch.cat([blocks[name][j] for name in names])
                term = end.summed_map(edge_attr, weight, nodes.numel())
                summed = term if summed is None else summed + term
        summed = dict(zip(names, summed.split([maps[n].out_features for n in names], dim=1))
                      ) if summed is not None else {}

        per_neuron = [name for name in names if name not in per_edge]
        terms = {name: torch.nn.functional.linear(features, dense_weight(name))
                 for name in per_neuron}
        for name in per_neuron:
            if name in summed:
                terms[name] = terms[name] + summed[name]
        for name, end in per_edge.items():
            terms[name] = end.per_edge_map(features, dense_weight(name)) + \
                summed[name].reshape(-1, self.out_channels).index_select(0, end.cell)
        return terms

    def message(self, edge_attr: Tensor) -> Tensor:
        return edge_attr

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
class _FixedEnd:
    """The edges of :math:`W_1` (or :math:`W_L`) seen from their hidden neuron.

    ``neuron``: rank of each edge's hidden endpoint in its layer ``layer``;
    ``position``: the position of its fixed endpoint (input / output neuron),
    one of ``num_positions``; ``cell = neuron * num_positions + position``.
    ``sparse``: some (neuron, position) pair has no edge; then ``padded_slot``
    is each edge's row when the edges are grouped by position, ``max_count``
    rows per position, and ``glob_row`` its row ``graph * num_positions +
    position`` among its graph's by-position types.
    """

    layer: int
    edges: Tensor
    neuron: Tensor
    position: Tensor
    num_positions: int
    cell: Tensor
    sparse: bool
    padded_slot: Tensor | None = None
    max_count: int = 0
    glob_row: Tensor | None = None

    @classmethod
    def of(cls, layer: int, edges: Tensor, neuron: Tensor, position: Tensor,
           num_positions: int, num_neurons: int, neuron_batch: Tensor) -> _FixedEnd:
        cell = neuron * num_positions + position
        if edges.numel() == num_neurons * num_positions:  # complete (no duplicate edges)
            return cls(layer, edges, neuron, position, num_positions, cell, False)
        counts = torch.bincount(position, minlength=num_positions)
        order = torch.sort(position, stable=True).indices
        rank = torch.empty_like(order)
        rank[order] = torch.arange(order.numel(), device=order.device)
        rank = rank - (torch.cumsum(counts, 0) - counts)[position]
        max_count = max(int(counts.max()), 1) if counts.numel() else 1
        glob_row = neuron_batch[neuron] * num_positions + position
        return cls(layer, edges, neuron, position, num_positions, cell, True,
                   position * max_count + rank, max_count, glob_row)

    def dense_features(self, edge_attr: Tensor, num_neurons: int) -> Tensor:
        """``[n_h, P C]``: each neuron's edges by position (zero where absent)."""
        features = edge_attr.new_zeros(num_neurons * self.num_positions, edge_attr.size(1))
        features.index_copy_(0, self.cell, edge_attr.index_select(0, self.edges))
        return features.view(num_neurons, -1)

    def _by_position(self, rows: Tensor, blocks: Tensor) -> Tensor:
        """``[E_f, K]``: row ``e`` of ``rows`` ``[E_f, F]`` times its position's block
        of ``blocks`` ``[P, F, K]``, one batched matmul over positions."""
        grouped = rows.new_zeros(self.num_positions * self.max_count, rows.size(1))
        grouped.index_copy_(0, self.padded_slot, rows)
        out = torch.bmm(grouped.view(self.num_positions, self.max_count, -1), blocks)
        return out.view(-1, blocks.size(-1)).index_select(0, self.padded_slot)

    def summed_map(self, edge_attr: Tensor, weight: Tensor, num_neurons: int) -> Tensor:
        r"""``[n_h, K]``: ``dense_features(edge_attr) @ weight.T`` (``weight``
        ``[K, P C]``) without the zero blocks: each edge times its position's
        ``[C, K]`` block, summed per neuron."""
        channels, k = edge_attr.size(1), weight.size(0)
        blocks = weight.view(k, self.num_positions, channels).permute(1, 2, 0)
        per_edge = self._by_position(edge_attr.index_select(0, self.edges), blocks)
        return per_edge.new_zeros(num_neurons, k).index_add_(0, self.neuron, per_edge)

    def per_edge_map(self, features: Tensor, weight: Tensor) -> Tensor:
        r"""``[E_f, C']``: for each edge, its neuron's ``features`` ``[n_h, F]``
        times the ``[C', F]`` block of ``weight`` ``[P C', F]`` of its position."""
        blocks = weight.view(self.num_positions, -1, weight.size(1)).transpose(1, 2)
        return self._by_position(features.index_select(0, self.neuron), blocks)


@dataclass
class _ConvIndex:
    """Per-batch index sets of :class:`HNPConv` (cached on the structure).

    ``rank`` of a hidden neuron is its index among the neurons of its layer
    (over the whole batch); ``first`` / ``last`` are the edges of
    :math:`W_1` / :math:`W_L` seen from their hidden neuron.
    """

    layer_nodes: dict[int, Tensor]
    layer_edges: dict[int, Tensor]
    first: _FixedEnd
    last: _FixedEnd
    src_rank: dict[int, Tensor]
    dst_rank: dict[int, Tensor]
    layer_batch: dict[int, Tensor]
    grid: dict[int, tuple[int, int, int] | None]


def _hidden_layer_rows(edge_attr: Tensor, plan, index: _ConvIndex,
                       num_layers: int) -> dict[int, Tensor]:
    """The rows of weight layers ``2..L-1``, in the order of ``index.layer_edges``."""
    hidden = range(2, num_layers)
    if plan is not None and plan.order is None:
        # one split for all layers: its backward assembles the gradient once
        pieces = edge_attr.view(plan.period, -1, edge_attr.size(1)).split(plan.counts, 1)
        return {l: pieces[l - 1].reshape(-1, edge_attr.size(1)) for l in hidden}
    return {l: edge_attr.index_select(0, index.layer_edges[l]) for l in hidden}


def _conv_index(structure: WeightGraphIndex) -> _ConvIndex:
    """The ``"hnp_conv"`` part of an index whose ``"hnp"`` typing fits (built once)."""
    typing = structure.parts["hnp"]
    num_layers, num_inputs, num_outputs = typing.num_layers, typing.num_inputs, \
        typing.num_outputs

    def build() -> _ConvIndex:
        L, src, dst, pos = num_layers, structure.src, structure.dst, structure.node_pos
        layer_nodes = {h: (structure.node_layer == h).nonzero().view(-1) for h in range(1, L)}
        layer_edges = {l: (structure.edge_layer == l).nonzero().view(-1)
                       for l in range(1, L + 1)}
        rank = torch.zeros_like(pos)
        for nodes in layer_nodes.values():
            rank[nodes] = torch.arange(nodes.numel(), device=pos.device)
        first, last = layer_edges[1], layer_edges[L]
        first_end = _FixedEnd.of(1, first, rank[dst[first]], pos[src[first]], num_inputs,
                                 layer_nodes[1].numel(), structure.node_batch[layer_nodes[1]])
        last_end = _FixedEnd.of(L - 1, last, rank[src[last]], pos[dst[last]], num_outputs,
                                layer_nodes[L - 1].numel(),
                                structure.node_batch[layer_nodes[L - 1]])
        src_rank = {l: rank[src[layer_edges[l]]] for l in range(2, L)}
        dst_rank = {l: rank[dst[layer_edges[l]]] for l in range(2, L)}
        layer_batch = {h: structure.node_batch[nodes] for h, nodes in layer_nodes.items()}
        grid = {l: _grid(structure.num_graphs, layer_nodes[l].numel(),
                         layer_nodes[l - 1].numel(), src_rank[l], dst_rank[l])
                for l in range(2, L)}
        return _ConvIndex(layer_nodes, layer_edges, first_end, last_end, src_rank, dst_rank,
                          layer_batch, grid)
    return build()


def _grid(num_graphs: int, num_targets: int, num_sources: int, src_rank: Tensor,
          dst_rank: Tensor) -> tuple[int, int, int] | None:
    """``(B, n_l, n_{l-1})`` if the edges of a hidden weight layer (in their order)
    are every graph's complete ``W_l`` row-major, graphs of equal widths one after
    another; else ``None``."""
    if num_graphs == 0 or num_targets % num_graphs or num_sources % num_graphs:
        return None
    rows, cols = num_targets // num_graphs, num_sources // num_graphs
    if dst_rank.numel() != num_graphs * rows * cols:
        return None
    shape = (num_graphs, rows, cols)
    graph = torch.arange(num_graphs, device=dst_rank.device).view(-1, 1, 1)
    expected_dst = (graph * rows + torch.arange(rows, device=dst_rank.device).view(1, -1, 1))
    expected_src = (graph * cols + torch.arange(cols, device=dst_rank.device).view(1, 1, -1))
    if torch.equal(dst_rank.view(shape), expected_dst.expand(shape)) and \
            torch.equal(src_rank.view(shape), expected_src.expand(shape)):
        return shape
    return None
