"""PyG transforms for neuron graphs."""
from .pad_kernels import PadKernels

__all__ = ["PadKernels"]
