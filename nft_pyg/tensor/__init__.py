"""The tensor formulation (WeightSpace) and the dense reference operators."""
from .weight_space import WeightSpace

__all__ = ["WeightSpace"]
