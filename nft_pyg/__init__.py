"""nft_pyg: learning on neural-network weights with PyTorch Geometric."""
from .graph import (Layout, NeuronGraph, Sine, UnsupportedModuleError, from_module,
                    from_state_dict, to_module, to_state_dict)

from .tensor import WeightSpace

__version__ = "0.1.0"
__all__ = ["Layout", "NeuronGraph", "Sine", "UnsupportedModuleError", "from_module",
           "from_state_dict", "to_module", "to_state_dict", "WeightSpace", "__version__"]
