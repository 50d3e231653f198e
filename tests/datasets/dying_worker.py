"""A DigitsINR whose shard 1 kills the process generating it, for the
dying-worker test of test_generated_cache.py (in a module of its own so the
spawned worker processes can import it)."""
import os
import signal

from nft_pyg.datasets import DigitsINR


class DigitsINRWithADyingWorker(DigitsINR):
    def generate_shard(self, index):
        if index == 1:
            os.kill(os.getpid(), signal.SIGKILL)  # as the out-of-memory killer would
        return super().generate_shard(index)
