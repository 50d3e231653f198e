"""Small utilities the whole package uses: atomic file writes and weights-only
loads (:mod:`.io`), a one-thread context for reproducible generation
(:mod:`.threads`). They import nothing else from ``nft_pyg``."""
from .io import CorruptFileError, atomic_save, atomic_write_text, fingerprint, safe_load
from .threads import one_thread

__all__ = ["CorruptFileError", "atomic_save", "atomic_write_text", "fingerprint", "safe_load",
           "one_thread"]
