"""The datasets' file helpers; they live in :mod:`nft_pyg.utils.io` (the
library below the datasets writes files too) and keep this name for the
code that imports them from here."""
from ..utils.io import CorruptFileError, atomic_save, atomic_write_text, fingerprint, safe_load

__all__ = ["CorruptFileError", "atomic_save", "atomic_write_text", "fingerprint", "safe_load"]
