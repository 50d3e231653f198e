"""The scripts of ``benchmarks/`` as modules for the tests: each call loads a
fresh module, with ``benchmarks/`` on ``sys.path`` while it imports (the
scripts import ``common`` and ``results`` beside them)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = ROOT / "benchmarks"


def load_script(name: str, module_name: str | None = None) -> ModuleType:
    """``benchmarks/<name>.py`` as a new module named ``module_name`` (default ``name``)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location(module_name or name,
                                                      BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCHMARKS))
