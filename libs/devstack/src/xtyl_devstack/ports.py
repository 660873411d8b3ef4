"""Free TCP ports on 127.0.0.1.

Ports are drawn at random below the kernel's ephemeral range (so an outgoing connection never
takes one between our check and the server's bind) and remembered for the life of the process,
so two servers started in parallel never get the same one. A port is "free" when we can bind it.
"""

from __future__ import annotations

import random
import socket
import threading
from pathlib import Path

HOST = "127.0.0.1"

_LOW = 12000
_EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_handed_out: set[int] = set()
_lock = threading.Lock()


class NoFreePortError(RuntimeError):
    """No free port was found after many tries."""


def port_is_free(port: int, host: str = HOST) -> bool:
    """True when nothing listens on ``host:port`` and we may bind it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # like the servers do: connections of a process that just stopped (TIME_WAIT) don't count
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _high() -> int:
    """First port of the ephemeral range (exclusive upper bound of our draws)."""
    try:
        return int(_EPHEMERAL_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(*, also_free_at: tuple[int, ...] = ()) -> int:
    """A free port ``p`` such that ``p + offset`` is free too for every offset in ``also_free_at``.

    SeaweedFS derives gRPC ports as ``http port + 10000`` in places, hence the offsets.
    """
    high = _high() - max(also_free_at, default=0)
    with _lock:
        for _ in range(500):
            port = random.randrange(_LOW, high)  # noqa: S311 - not cryptographic
            group = [port, *(port + offset for offset in also_free_at)]
            if any(p in _handed_out for p in group):
                continue
            if all(port_is_free(p) for p in group):
                _handed_out.update(group)
                return port
    raise NoFreePortError(f"no free TCP port on {HOST} between {_LOW} and {high}")
