"""Invariant readouts of neuron graphs."""
from .hnp_pool import HNPPool
from .np_pool import NPPool
from .np_stat_pool import NPStatPool

__all__ = ["NPPool", "NPStatPool", "HNPPool"]
