"""Pad the kernel dimension of neuron graphs so different networks collate."""
from __future__ import annotations

from typing import Any

import torch
from torch_geometric.transforms import BaseTransform


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

    Example::

        loader = DataLoader(dataset, batch_size=32, transform=PadKernels(9))
    """

    def __init__(self, width: int):
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise ValueError(f"PadKernels: width must be a positive int, got {width!r}")
        self.width = width

    def forward(self, data: Any) -> Any:
        kernel_width = getattr(data, "kernel_width", None)
        if kernel_width is None or getattr(data, "edge_attr", None) is None:
            raise ValueError("PadKernels: the graph has no kernel_width / edge_attr; "
                             "expected a NeuronGraph (nft_pyg.from_module)")
        widths = kernel_width.reshape(-1).unique()
        if widths.numel() != 1:
            raise ValueError(f"PadKernels: the batch mixes kernel widths {widths.tolist()}")
        current = int(widths[0])
        if self.width < current:
            raise ValueError(f"PadKernels: width={self.width} is smaller than the graph's "
                             f"kernel_width={current}; padding cannot drop kernel positions")
        edge_attr = data.edge_attr
        if edge_attr.size(-1) % current:
            raise ValueError(f"PadKernels: edge_attr has {edge_attr.size(-1)} columns, not a "
                             f"multiple of kernel_width={current}")
        if self.width != current:
            kernels = edge_attr.reshape(edge_attr.size(0), -1, current)
            data.edge_attr = torch.nn.functional.pad(
                kernels, (0, self.width - current)).reshape(edge_attr.size(0), -1)
        data.kernel_width = torch.full_like(kernel_width, self.width)
        return data

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(width={self.width})"
