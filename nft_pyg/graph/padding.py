"""Zero-padding of edge kernels, so graphs of different kernel widths collate."""
from __future__ import annotations

from typing import Any

import torch


def pad_kernels(data: Any, width: int) -> Any:
    """Pad each edge's kernel of ``data`` (in place) to ``width`` positions.

    The function behind :class:`~nft_pyg.transforms.PadKernels` and the
    automatic padding of :func:`~nft_pyg.graph.collate_graphs`: channel-major
    feature graphs are padded per channel, ``kernel_width`` becomes ``width``.
    """
    kernel_width = getattr(data, "kernel_width", None)
    if kernel_width is None or getattr(data, "edge_attr", None) is None:
        raise ValueError("PadKernels: the graph has no kernel_width / edge_attr; "
                         "expected a NeuronGraph (nft_pyg.from_module)")
    widths = kernel_width.reshape(-1).unique()
    if widths.numel() != 1:
        raise ValueError(f"PadKernels: the batch mixes kernel widths {widths.tolist()}")
    current = int(widths[0])
    if width < current:
        raise ValueError(f"PadKernels: width={width} is smaller than the graph's "
                         f"kernel_width={current}; padding cannot drop kernel positions")
    edge_attr = data.edge_attr
    if edge_attr.size(-1) % current:
        raise ValueError(f"PadKernels: edge_attr has {edge_attr.size(-1)} columns, not a "
                         f"multiple of kernel_width={current}")
    if width != current:
        kernels = edge_attr.reshape(edge_attr.size(0), -1, current)
        data.edge_attr = torch.nn.functional.pad(
            kernels, (0, width - current)).reshape(edge_attr.size(0), -1)
    data.kernel_width = torch.full_like(kernel_width, width)
    return data
