"""Networks <-> neuron graphs."""
from .collate import GraphCollater, GraphLoader, collate_graphs
from .convert import (
                      from_module,
                      from_modules,
                      from_state_dict,
                      from_state_dicts,
                      graph_structure,
                      layout_of,
                      to_module,
                      to_state_dict,
)
from .escnn import EscnnUnsupportedError, from_escnn
from .layout import Layout, WeightLayer
from .modules import Sine, UnsupportedModuleError, register_activation
from .neuron_graph import NeuronGraph
from .types import Activation, EdgeKind, NodeRole
from .validate import (
    GraphFormatError,
    check_edge_index,
    check_no_residual,
    check_operator_inputs,
    has_residual,
    validate,
)

__all__ = ["from_module", "from_modules", "from_state_dict", "from_state_dicts",
           "graph_structure", "layout_of", "to_module", "to_state_dict", "collate_graphs",
           "GraphCollater", "GraphLoader", "Layout", "WeightLayer", "Sine",
           "UnsupportedModuleError", "register_activation",
           "NeuronGraph", "Activation", "EdgeKind", "NodeRole", "GraphFormatError", "validate",
           "has_residual", "check_no_residual", "check_edge_index", "check_operator_inputs",
           "from_escnn", "EscnnUnsupportedError"]
