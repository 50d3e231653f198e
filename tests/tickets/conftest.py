"""The ticket tests run on one thread (the timings and results assume it)."""
import pytest

from nft_pyg.utils.threads import one_thread


@pytest.fixture(autouse=True)
def _single_thread():
    with one_thread():
        yield
