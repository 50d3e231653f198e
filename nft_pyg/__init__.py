"""nft_pyg: learning on neural-network weights with PyTorch Geometric."""
from .graph import (
                    GraphFormatError,
                    GraphLoader,
                    Layout,
                    NeuronGraph,
                    Sine,
                    UnsupportedModuleError,
                    collate_graphs,
                    from_module,
                    from_modules,
                    from_state_dict,
                    from_state_dicts,
                    to_module,
                    to_state_dict,
                    validate,
)
from .tensor import WeightSpace

__version__ = "0.1.0"
__all__ = ["Layout", "NeuronGraph", "Sine", "UnsupportedModuleError", "GraphFormatError",
           "from_module", "from_modules", "from_state_dict", "from_state_dicts", "to_module",
           "to_state_dict", "validate", "collate_graphs", "GraphLoader", "WeightSpace",
           "__version__"]
