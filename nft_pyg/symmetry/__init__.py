"""Neuron-permutation symmetry: permutations, equivariance checks, isomorphism, drawing."""
from .draw import draw
from .equivariance import EquivarianceReport, assert_equivariant, check_equivariance
from .isomorphism import is_type_preserving_isomorphic, to_networkx
from .permutation import (NeuronPermutation, permute, permute_features, permute_state_dict,
                          random_permutation)

__all__ = ["NeuronPermutation", "random_permutation", "permute", "permute_features",
           "permute_state_dict", "to_networkx", "is_type_preserving_isomorphic", "draw",
           "check_equivariance", "assert_equivariant", "EquivarianceReport"]
