"""Test-session infrastructure: thread count per xdist worker, per-test seeding.

Owned by the infrastructure set-up; put shared test fixtures in their own
modules (or a dedicated conftest in a sub-package) rather than here.
"""
import os
import random

import numpy as np
import pytest
import torch

# Under pytest-xdist each worker is its own process; with one worker per core,
# letting every worker use all cores for torch's intra-op pool oversubscribes
# the CPU and makes the suite slower, not faster.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)

SEED = 0


@pytest.fixture(autouse=True)
def _seed_everything():
    """Seed python, numpy and torch before each test, so every test is
    reproducible on its own and independent of test order / worker."""
    random.seed(SEED)
    np.random.seed(SEED)
    torch.manual_seed(SEED)
    yield


#: The devices every device-parametrized test runs on: the CPU always, CUDA
#: when this machine has it (``make gpu-check`` runs them on a GPU).
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request) -> torch.device:
    """A test that takes ``device`` runs once on every available device."""
    return torch.device(request.param)
