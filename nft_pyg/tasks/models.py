"""The models compared on each task, built from a dataset's layout and
training-set statistics.

Every model reads the raw neuron graph through :class:`LayerScale`, which
divides each layer's weights and biases by their training-set standard
deviation: SIREN layers differ in scale by two orders of magnitude (the
first layer is drawn in ``[-1/2, 1/2]``, hidden layers in
``[-sqrt(6 / n) / w0, sqrt(6 / n) / w0]``), and without it the models see
the deep layers as noise. Dividing (no mean shift) keeps zero padding zero
and every permutation and sign-flip symmetry.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch_geometric.nn import TransformerConv, global_mean_pool

from ..graph.accessors import is_input_neuron
from ..graph.layout import Layout
from ..nn.models.baselines import GNNBaseline, StatNN
from ..nn.models.inr2array import Inr2Array, LatentClassifier
from ..nn.models.nfn import NFN, NFNEditor, mlp_head
from ..nn.models.nft import NFT


class LayerScale(nn.Module):
    """Divide raw weights and biases by per-layer scales (buffers, so they
    are saved with the model).

    Args:
        weight_std, bias_std: ``[L]`` scales of weight layers ``1..L``.
    """

    def __init__(self, weight_std: Tensor, bias_std: Tensor):
        super().__init__()
        pad = torch.ones(1)
        self.register_buffer("weight_std", torch.cat([pad, weight_std.float()]))
        self.register_buffer("bias_std", torch.cat([pad, bias_std.float()]))

    @classmethod
    def from_dataset(cls, dataset, num_layers: int, max_graphs: int = 2000) -> LayerScale:
        """Root mean square of each layer's weights / biases over (up to
        ``max_graphs``) graphs of ``dataset``; padding excluded."""
        w2, wn = torch.zeros(num_layers + 1), torch.zeros(num_layers + 1)
        b2, bn = torch.zeros(num_layers + 1), torch.zeros(num_layers + 1)
        for i in range(min(len(dataset), max_graphs)):
            graph = dataset[i]
            positions = torch.tensor([1] + [layer.positions for layer in
                                            Layout.coerce(graph.layout).weight_layers()])
            own = torch.arange(graph.edge_attr.size(1)) < positions[graph.edge_layer, None]
            w2.index_add_(0, graph.edge_layer, (graph.edge_attr.double() ** 2 * own).sum(1).float())
            wn.index_add_(0, graph.edge_layer, own.sum(1).float())
            b2.index_add_(0, graph.node_layer, graph.x[:, 0].float() ** 2)
            bn.index_add_(0, graph.node_layer, torch.ones(graph.num_nodes))
        weight = (w2 / wn.clamp(min=1)).sqrt().clamp(min=1e-6)[1:]
        bias = (b2 / bn.clamp(min=1)).sqrt().clamp(min=1e-6)[1:]
        return cls(weight, bias)

    def edge_scale(self, graph) -> Tensor:
        return self.weight_std[graph.edge_layer].unsqueeze(1)

    def node_scale(self, graph) -> Tensor:
        return self.bias_std[graph.node_layer].unsqueeze(1)

    def forward(self, graph):
        scaled = graph.clone()
        scaled.x = graph.x / self.node_scale(graph)
        scaled.edge_attr = graph.edge_attr / self.edge_scale(graph)
        return scaled


# --- flattened weights (padded to the widest architecture) --------------------------
class PaddedFlatten(nn.Module):
    """``[B, P]``: every network's weights and biases at fixed positions of a
    zero-padded weight vector of the widest architecture (``max_sizes``
    neurons per layer, ``kernel_width`` entries per edge). For one
    architecture this is the flattened weight vector up to a fixed
    reordering; for mixed widths the extra neurons are zeros, which is the
    function-preserving way to embed a narrow net in a wide one."""

    def __init__(self, max_sizes: Sequence[int], kernel_width: int):
        super().__init__()
        self.max_sizes, self.kernel_width = [int(n) for n in max_sizes], int(kernel_width)
        edge_offsets, node_offsets, total = [0], [0], 0
        for layer in range(1, len(self.max_sizes)):
            edge_offsets.append(total)
            total += self.max_sizes[layer] * self.max_sizes[layer - 1] * self.kernel_width
        for layer in range(1, len(self.max_sizes)):
            node_offsets.append(total)
            total += self.max_sizes[layer]
        self.register_buffer("edge_offsets", torch.tensor(edge_offsets))
        self.register_buffer("node_offsets", torch.tensor(node_offsets))
        self.num_features = total

    def positions(self, graph) -> tuple[Tensor, Tensor, Tensor]:
        """Flat positions ``[E, S]`` of the edges' entries and ``[N']`` of the
        non-input biases, and the mask of those nodes."""
        pos, layer = graph.node_pos, graph.edge_layer
        src, dst = graph.edge_index
        if int(layer.max()) >= len(self.max_sizes) or \
                int(graph.node_layer.max()) >= len(self.max_sizes):
            raise ValueError("PaddedFlatten: a network is deeper than the widest layout")
        fan_in = torch.tensor(self.max_sizes, device=pos.device)[layer - 1]
        edge_base = self.edge_offsets[layer] + (pos[dst] * fan_in + pos[src]) * self.kernel_width
        edge_pos = edge_base.unsqueeze(1) + torch.arange(self.kernel_width, device=pos.device)
        has_bias = ~is_input_neuron(graph)
        node_pos = self.node_offsets[graph.node_layer[has_bias]] + pos[has_bias]
        return edge_pos, node_pos, has_bias

    def forward(self, graph) -> Tensor:
        edge_pos, node_pos, has_bias = self.positions(graph)
        batch = _batch(graph)
        num_graphs = int(batch.max()) + 1
        flat = graph.x.new_zeros(num_graphs, self.num_features)
        edge_batch = batch[graph.edge_index[0]].unsqueeze(1).expand_as(edge_pos)
        flat = flat.index_put((edge_batch, edge_pos), graph.edge_attr[:, :self.kernel_width])
        return flat.index_put((batch[has_bias], node_pos), graph.x[has_bias, 0])

    def unflatten(self, flat: Tensor, graph) -> tuple[Tensor, Tensor]:
        """The inverse read-out: ``(x_delta [N, 1], edge_delta [E, S])`` of a
        flat vector per network (zero on input neurons)."""
        edge_pos, node_pos, has_bias = self.positions(graph)
        batch = _batch(graph)
        edge_batch = batch[graph.edge_index[0]].unsqueeze(1).expand_as(edge_pos)
        edge_delta = flat[edge_batch, edge_pos]
        x_delta = flat.new_zeros(graph.num_nodes, 1)
        x_delta = x_delta.index_put((has_bias.nonzero().view(-1), torch.zeros_like(node_pos)),
                                    flat[batch[has_bias], node_pos])
        return x_delta, edge_delta


def _batch(graph) -> Tensor:
    batch = getattr(graph, "batch", None)
    return batch if batch is not None else graph.x.new_zeros(graph.num_nodes, dtype=torch.long)


class FlatMLPModel(nn.Module):
    """MLP on the (padded) flattened weights: the non-equivariant baseline."""

    def __init__(self, max_sizes: Sequence[int], kernel_width: int, hidden: Sequence[int],
                 out: int, dropout: float = 0.0):
        super().__init__()
        self.flatten = PaddedFlatten(max_sizes, kernel_width)
        self.mlp = mlp_head(self.flatten.num_features, list(hidden), out, dropout)

    def forward(self, graph) -> Tensor:
        return self.mlp(self.flatten(graph))


class FlatMLPEditor(nn.Module):
    """MLP from the flattened weights to a flattened weight delta."""

    def __init__(self, max_sizes: Sequence[int], kernel_width: int, hidden: Sequence[int],
                 init_scale: float = 1e-3):
        super().__init__()
        self.flatten = PaddedFlatten(max_sizes, kernel_width)
        self.mlp = mlp_head(self.flatten.num_features, list(hidden), self.flatten.num_features)
        with torch.no_grad():
            self.mlp[-1].weight.mul_(init_scale)
            self.mlp[-1].bias.zero_()

    def forward(self, graph) -> tuple[Tensor, Tensor]:
        return self.flatten.unflatten(self.mlp(self.flatten(graph)), graph)


class NFNThenGNN(nn.Module):
    """NF layers and ordinary PyG layers in one model: the NFN-NP body
    (encoder and NP layers) gives every neuron and weight a feature vector,
    then :class:`~torch_geometric.nn.TransformerConv` layers pass messages
    along the weights both ways (the NF edge features as edge features), and
    a mean pool and an MLP read out. Both parts are invariant to neuron
    permutations, so the whole model is."""

    def __init__(self, layout: Layout | str, hidden: int, out: int, num_nf_layers: int = 2,
                 num_convs: int = 2, heads: int = 2):
        super().__init__()
        self.body = NFN.for_layout(layout, "np", hidden, out, num_nf_layers=num_nf_layers).body
        self.convs = nn.ModuleList(
            TransformerConv(hidden, hidden // heads, heads=heads, edge_dim=hidden)
            for _ in range(num_convs))
        self.head = mlp_head(hidden, [hidden], out)

    def forward(self, graph) -> Tensor:
        x, edge_attr = self.body(graph)
        both_ways = torch.cat([graph.edge_index, graph.edge_index.flip(0)], dim=1)
        edges = edge_attr.repeat(2, 1)
        for conv in self.convs:
            x = torch.relu(conv(x, both_ways, edges))
        return self.head(global_mean_pool(x, _batch(graph)))


class Scaled(nn.Module):
    """``model(LayerScale(graph))``; for editors, the delta is mapped back
    to the raw scale (times each layer's scale)."""

    def __init__(self, scale: LayerScale, model: nn.Module, editor: bool = False):
        super().__init__()
        self.scale, self.model, self.editor = scale, model, editor

    def forward(self, graph):
        out = self.model(self.scale(graph))
        if not self.editor:
            return out
        x_delta, edge_delta = out
        return x_delta * self.scale.node_scale(graph), edge_delta * self.scale.edge_scale(graph)


class Inr2ArrayClassifier(nn.Module):
    """Inr2Array autoencoder and a :class:`LatentClassifier` trained together
    but separately: the classifier sees the latents with the gradient
    stopped, so the encoder is trained by the reconstruction loss only (as in
    the NFT paper's two-stage recipe, run concurrently)."""

    def __init__(self, scale: LayerScale, autoencoder: Inr2Array,
                 classifier: LatentClassifier, resolution: int = 28):
        super().__init__()
        self.scale, self.autoencoder, self.classifier = scale, autoencoder, classifier
        self.resolution = resolution

    def forward(self, graph, with_reconstruction: bool = False):
        latents = self.autoencoder(self.scale(graph))
        logits = self.classifier(latents.detach())
        if not with_reconstruction:
            return logits
        with torch.no_grad():
            target = self.autoencoder.target(graph, self.resolution)
        pred = self.autoencoder.render(latents, self.resolution)
        return logits, nn.functional.mse_loss(pred, target)


#: models of each task
TASK_MODELS = {
    "classification": ("mlp", "statnn", "nfn_hnp", "nfn_np", "nft", "inr2array", "gnn",
                       "nfn_gnn"),
    "generalization": ("mlp", "statnn", "nfn_hnp", "nfn_np", "nft", "gnn", "nfn_gnn"),
    "editing": ("mlp", "nfn_hnp", "nfn_np", "nft"),
}
#: default sizes per model, overridable with model options. ``pool_norm``
#: (BatchNorm1d on the pooled invariant vector) is on for the invariant NF /
#: NFT models: without it NFN-NP's pooled vectors differ across INRs by ~3 %
#: of their size and training stays at chance (docs/results.md). The Fourier
#: features of NFT / Inr2Array get ``sigma=1``: their inputs are scaled to unit
#: RMS per layer (:class:`LayerScale`); the encoders' default ``sigma=10`` suits
#: raw SIREN weights (hidden layers of RMS ~0.01-0.1) and would give nearly
#: random phases on unit-scale inputs.
DEFAULTS = {"mlp": {"hidden": [256, 256]}, "statnn": {"hidden": [256, 256]},
            "nfn_hnp": {"hidden": 32, "num_nf_layers": 3, "pool_norm": True},
            "nfn_np": {"hidden": 32, "num_nf_layers": 3, "pool_norm": True},
            "nft": {"hidden": 32, "num_blocks": 2, "heads": 2, "sigma": 1.0, "pool_norm": True},
            "inr2array": {"hidden": 32, "num_latents": 8, "num_blocks": 2, "heads": 2,
                          "sigma": 1.0},
            "gnn": {"hidden": 64, "num_convs": 3, "conv": "transformer", "heads": 2},
            "nfn_gnn": {"hidden": 32, "num_nf_layers": 2, "num_convs": 2, "heads": 2}}


#: options each model reads on top of its :data:`DEFAULTS`; any other key is an error
EXTRA_OPTIONS = {"mlp": {"dropout"}, "statnn": {"dropout"},
                 "nfn_hnp": {"dropout", "head_hidden", "fourier_features", "fourier_sigma", "pool",
                             "append_stats"},
                 "nfn_np": {"dropout", "head_hidden", "fourier_features", "fourier_sigma", "pool",
                            "io_embedding", "append_stats"},
                 "nft": {"fourier_features", "init_scale"},
                 "inr2array": {"decoder_channels"}, "gnn": set(), "nfn_gnn": set()}
#: options of the invariant NFN that its editor (task "editing") has no use for
INVARIANT_ONLY = {"pool", "append_stats", "head_hidden", "pool_norm"}


def max_layout_sizes(layouts: Sequence[str]) -> tuple[list[int], int]:
    """Largest neuron count per layer and largest kernel width over layouts."""
    sizes: list[int] = []
    width = 1
    for text in set(layouts):
        layout = Layout.coerce(text)
        for i, n in enumerate(layout.neuron_layer_sizes):
            if i >= len(sizes):
                sizes.append(n)
            sizes[i] = max(sizes[i], n)
        width = max(width, layout.kernel_width)
    return sizes, width


def build_model(task: str, name: str, train_set, out: int, options: dict | None = None,
                resolution: int = 28) -> nn.Module:
    """The model ``name`` for ``task``, sized from the graphs of ``train_set``."""
    if name not in TASK_MODELS[task]:
        raise ValueError(f"build_model: {name!r} is not a model of {task!r}; choose from "
                         f"{TASK_MODELS[task]}")
    unknown = set(options or {}) - set(DEFAULTS[name]) - EXTRA_OPTIONS[name]
    if unknown:
        raise ValueError(f"build_model: unknown option(s) {sorted(unknown)} for model {name!r}; "
                         f"it takes {sorted(set(DEFAULTS[name]) | EXTRA_OPTIONS[name])}")
    if task == "editing" and name.startswith("nfn_") and INVARIANT_ONLY & set(options or {}):
        raise ValueError(f"build_model: option(s) {sorted(INVARIANT_ONLY & set(options))} of "
                         f"the invariant {name!r} do not apply to its editor (task 'editing')")
    opts = {**DEFAULTS[name], **(options or {})}
    layouts = [train_set[i].layout for i in range(len(train_set))]
    sizes, width = max_layout_sizes(layouts)
    layout = Layout.coerce(layouts[0])
    num_layers = len(sizes) - 1
    scale = LayerScale.from_dataset(train_set, num_layers)
    editor = task == "editing"
    hidden = opts["hidden"]
    if name == "mlp":
        model = (FlatMLPEditor(sizes, width, hidden) if editor
                 else FlatMLPModel(sizes, width, hidden, out, opts.get("dropout", 0.0)))
    elif name == "statnn":
        model = StatNN(num_layers, hidden, out, opts.get("dropout", 0.0))
    elif name in ("nfn_hnp", "nfn_np"):
        mode = name.split("_")[1]
        kwargs = dict(num_nf_layers=opts["num_nf_layers"])
        if "fourier_features" in opts:
            kwargs["fourier_features"] = opts["fourier_features"]
        if "fourier_sigma" in opts:
            kwargs["fourier_sigma"] = opts["fourier_sigma"]
        if opts.get("io_embedding"):
            kwargs["io_embedding"] = True
        if opts.get("dropout"):
            kwargs["dropout"] = opts["dropout"]
        if editor:
            model = NFNEditor.for_layout(layout, mode, hidden, **kwargs)
        else:
            model = NFN.for_layout(layout, mode, hidden, out, head_hidden=opts.get(
                "head_hidden", 128), pool_norm=opts["pool_norm"], pool=opts.get("pool", "mean"),
                append_stats=bool(opts.get("append_stats", False)), **kwargs)
    elif name == "nft":
        kwargs = dict(num_blocks=opts["num_blocks"], heads=opts["heads"])
        if "fourier_features" in opts:
            kwargs["fourier_features"] = opts["fourier_features"]
        if "sigma" in opts:
            kwargs["sigma"] = opts["sigma"]
        if editor:
            model = NFT.for_layout(layout, hidden, 1, task="equivariant", **kwargs)
            with torch.no_grad():   # start near the identity edit, as NFNEditor does
                for param in model.readout.parameters():
                    param.mul_(opts.get("init_scale", 1e-3))
        else:
            model = NFT.for_layout(layout, hidden, out, pool_norm=opts["pool_norm"], **kwargs)
    elif name == "inr2array":
        autoencoder = Inr2Array(layout, channels=hidden, num_latents=opts["num_latents"],
                                num_blocks=opts["num_blocks"], heads=opts["heads"],
                                sigma=opts["sigma"],
                                decoder_channels=opts.get("decoder_channels", 128))
        classifier = LatentClassifier(hidden, out, depth=1, heads=opts["heads"],
                                      num_latents=opts["num_latents"])
        # the encoder reads scaled weights, the reconstruction target is the raw INR
        return Inr2ArrayClassifier(scale, autoencoder, classifier, resolution)
    elif name == "gnn":
        model = GNNBaseline(opts["conv"], hidden, out, num_convs=opts["num_convs"],
                            edge_dim=width, heads=opts["heads"], max_layers=num_layers + 1,
                            io_positions=task == "classification", num_inputs=sizes[0],
                            num_outputs=sizes[-1])
    elif name == "nfn_gnn":
        model = NFNThenGNN(layout, hidden, out, opts["num_nf_layers"], opts["num_convs"],
                           opts["heads"])
    return Scaled(scale, model, editor=editor)
