"""Helpers of the tests that spawn torch.distributed (gloo) processes."""
import socket


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago, for ``init_method``."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
