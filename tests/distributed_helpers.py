"""Helpers of the tests that spawn torch.distributed (gloo) processes."""
import socket


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago, for ``init_method``."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun_environment(rank: int, world: int, port: int) -> dict[str, str]:
    """The environment ``torchrun --nproc-per-node WORLD`` gives process ``rank``
    on one node (Lightning reads it as a TorchElastic environment)."""
    return {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(world),
            "RANK": str(rank), "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": str(world),
            "GROUP_RANK": "0", "ROLE_RANK": str(rank), "ROLE_WORLD_SIZE": str(world),
            "TORCHELASTIC_RUN_ID": "nft-pyg-test"}
