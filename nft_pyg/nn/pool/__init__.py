"""Invariant readouts of neuron graphs."""
from .hnp_pool import HNPPool
from .np_pool import NPPool

__all__ = ["NPPool", "HNPPool"]
