"""Datasets of networks as neuron graphs.

Generated offline (deterministic, sharded, resumable, atomically written):

- :class:`DigitsINR`: SIRENs fitted to the scikit-learn digits.
- :class:`DigitsCNNZoo`: small CNNs trained on the scikit-learn digits.
- :class:`DigitsTickets`: initialisations with their IMP winning-ticket masks.
- :class:`MNISTINR`: SIRENs fitted to real MNIST digits (the papers' INR datasets).

Readers of published formats the user already has:

- :func:`read_small_cnn_zoo`: the Small CNN Zoo (``weights.npy``,
  ``layout.csv``, ``metrics.csv.gz``).
- :func:`read_siren_folder`: folders of SIREN state dicts (DWSNets / NFN).
"""
from ..utils.io import CorruptFileError, atomic_save, safe_load
from .digits_cnn_zoo import DigitsCNNZoo
from .digits_inr import DigitsINR
from .digits_tickets import DigitsTickets
from .generated import GeneratedDataset
from .mnist_inr import MNISTINR
from .readers import MalformedFileError, read_siren_folder, read_small_cnn_zoo

__all__ = ["DigitsINR", "MNISTINR", "DigitsCNNZoo", "DigitsTickets", "GeneratedDataset",
           "CorruptFileError",
           "MalformedFileError", "atomic_save", "safe_load", "read_siren_folder",
           "read_small_cnn_zoo"]
