"""Safe, atomic files for datasets, caches, statistics and runs.

Everything the project writes to disk goes through :func:`atomic_save` (a
temporary file in the same folder, flushed and renamed over the target, so
a reader never sees half a file; the file gets the permissions of any new
file of the user, ``0666`` less the umask) and everything it reads back through
:func:`safe_load` (``torch.load(weights_only=True)``, never a fallback to
unpickling arbitrary objects). Saved objects are therefore plain
containers of tensors, numbers and strings.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch


class CorruptFileError(RuntimeError):
    """A cache or dataset file is unreadable, truncated or of the wrong form."""


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to ``path`` atomically (write a temp file, then rename)."""
    _atomic_write(Path(path), lambda handle: torch.save(obj, handle))


def atomic_write_text(text: str, path: str | os.PathLike) -> None:
    """Write a text file atomically."""
    _atomic_write(Path(path), lambda handle: handle.write(text.encode()))


def current_umask() -> int:
    """The process's umask (read by setting it and putting it back at once)."""
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp creates 0600 files whatever the umask; give the file the mode
        # an ordinary open() would have
        os.fchmod(handle, 0o666 & ~current_umask())
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def safe_load(path: str | os.PathLike, expect: type | tuple[type, ...] = dict) -> Any:
    """Load a file written by :func:`atomic_save` with ``weights_only=True``.

    Raises:
        FileNotFoundError: the file does not exist.
        CorruptFileError: the file cannot be read as a weights-only torch
            file or does not hold an object of type ``expect``; the message
            names the file.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zips, pickles of arbitrary objects, ...
        raise CorruptFileError(f"{path}: not a readable weights-only torch file "
                               f"({type(err).__name__}: {err})") from None
    if not isinstance(obj, expect):
        raise CorruptFileError(f"{path}: holds a {type(obj).__name__}, expected "
                               f"{getattr(expect, '__name__', expect)}")
    return obj


def fingerprint(config: dict[str, Any]) -> str:
    """A short stable hash of a JSON-serialisable configuration."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
