"""Pad the kernel dimension of neuron graphs so different networks collate."""
from __future__ import annotations

from typing import Any

from torch_geometric.transforms import BaseTransform

from ..graph.padding import pad_kernels


class PadKernels(BaseTransform):
    r"""Zero-pads each edge's kernel to ``width`` positions.

    A raw graph stores each weight layer's kernel in ``edge_attr``
    ``[E, kernel_width]`` (zero padded past the layer's own kernel). Graphs
    with different ``kernel_width`` (an MLP has 1, a 3x3 CNN 9) cannot be
    concatenated by a ``DataLoader``; padding them all to one ``width``
    makes them collate. Feature graphs with ``C`` channels
    (``edge_attr`` ``[E, C * kernel_width]``, channel-major) are padded per
    channel. ``kernel_width`` is set to ``width``; nothing else changes, so
    :func:`~nft_pyg.to_module` of the padded graph rebuilds the same network.

    Args:
        width (int): the number of kernel positions after padding; at least
            the graph's ``kernel_width`` (a :class:`ValueError` otherwise).

    :class:`~nft_pyg.GraphLoader` and :func:`~nft_pyg.collate_graphs` pad
    each batch to its widest kernel by themselves; PyG's own ``DataLoader``
    needs the graphs padded first, e.g. as the dataset's transform.

    Example::

        dataset.transform = PadKernels(25)        # a PyG Dataset
        loader = DataLoader(dataset, batch_size=32)
        # or: graphs = [PadKernels(25)(g) for g in graphs]
    """

    def __init__(self, width: int):
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise ValueError(f"PadKernels: width must be a positive int, got {width!r}")
        self.width = width

    def forward(self, data: Any) -> Any:
        return pad_kernels(data, self.width)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(width={self.width})"
