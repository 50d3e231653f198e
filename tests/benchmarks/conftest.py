"""Fixtures of the benchmark-script tests."""
from __future__ import annotations

import pytest
from benchmark_scripts import load_script


@pytest.fixture(scope="module")
def results():
    """``benchmarks/results.py``, loaded once per test module."""
    return load_script("results", "results_script")
