"""Imports of the packages that only some features need (``pip`` extras).

The library itself needs torch, torch-geometric, numpy, networkx and tqdm. The
digits datasets, IMP, the tasks and the command line need scikit-learn and
scipy (extra ``apps``); drawing and figures need matplotlib (extra ``plot``,
also part of ``apps``). Those are imported where they are used, through
:func:`optional_import`, so a missing one names the extra that installs it.
"""
from __future__ import annotations

import importlib
from types import ModuleType

#: top-level package -> (its name on PyPI, the extra of nft_pyg that installs it)
EXTRAS = {"matplotlib": ("matplotlib", "plot"), "sklearn": ("scikit-learn", "apps"),
          "scipy": ("scipy", "apps")}


def optional_import(name: str, feature: str) -> ModuleType:
    """Import ``name`` (e.g. ``"sklearn.datasets"``) for ``feature``.

    Raises:
        ImportError: the package is not installed; the message names the
            feature and the ``pip install`` line of the extra that has it.
    """
    try:
        return importlib.import_module(name)
    except ImportError as err:
        package = name.split(".")[0]
        if err.name is not None and err.name.split(".")[0] != package:
            raise  # the package is there but something it needs is broken
        distribution, extra = EXTRAS.get(package, (package, "apps"))
        raise ImportError(f"{feature} needs {distribution}, which is not installed; install "
                          f"it with: pip install 'nft_pyg[{extra}]'") from err
