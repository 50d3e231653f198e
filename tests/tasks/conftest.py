import sys
from pathlib import Path

import pytest

from nft_pyg.utils.threads import one_thread

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(autouse=True)
def _single_thread():
    with one_thread():
        yield
