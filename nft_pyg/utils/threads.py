"""Thread-count control for reproducible generation."""
from __future__ import annotations

from contextlib import contextmanager

import torch


@contextmanager
def one_thread():
    """Run a block with one torch thread, so results do not depend on the
    caller's thread count (float summation order inside matmuls / convs)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
