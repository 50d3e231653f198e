"""PyG transforms for neuron graphs (``torch_geometric.transforms.BaseTransform``)."""
from .augment import RandomHiddenPermutation, RandomSignFlip
from .encodings import AddIOPositions, AddLayerEncoding
from .normalize import NormalizeWeights, WeightStatistics
from .pad_kernels import PadKernels
from .reverse_edges import AddReverseEdges, forward_edges

__all__ = ["RandomSignFlip", "RandomHiddenPermutation", "PadKernels", "AddLayerEncoding",
           "AddIOPositions", "NormalizeWeights", "WeightStatistics", "AddReverseEdges",
           "forward_edges"]
