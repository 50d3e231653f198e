"""Weight-space symmetries: neuron permutations, sign flips, equivariance checks,
isomorphism and drawing."""
from .draw import draw
from .equivariance import EquivarianceReport, assert_equivariant, check_equivariance
from .fields import field_to_channel_permutation, random_field_permutation
from .isomorphism import is_type_preserving_isomorphic, to_networkx
from .permutation import (
    NeuronPermutation,
    permute,
    permute_features,
    permute_state_dict,
    random_permutation,
)
from .sign_flip import (
    SignFlip,
    check_sign_flip_equivariance,
    flip_features,
    flippable_layers,
    random_sign_flip,
    sign_flip,
)

__all__ = ["NeuronPermutation", "random_permutation", "permute", "permute_features",
           "permute_state_dict", "to_networkx", "is_type_preserving_isomorphic", "draw",
           "check_equivariance", "assert_equivariant", "EquivarianceReport", "SignFlip",
           "random_sign_flip", "sign_flip", "flippable_layers", "flip_features",
           "check_sign_flip_equivariance", "random_field_permutation",
           "field_to_channel_permutation"]
