"""Weight-space neural network modules (operators, pools, encodings, models)."""
from .structure import LayerStructure

__all__ = ["LayerStructure"]
