"""Run an xtyl service (``python -m xtyl_<svc>``) as a real process, for tests and benchmarks.

Tests of the HTTP edge talk to real processes over real sockets: the same granian server,
settings loading and lifespan as production. Each process is a :class:`ManagedProcess`, so it
cannot outlive the test run.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncGenerator, Generator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

from xtyl_devstack.ports import free_port
from xtyl_devstack.processes import ManagedProcess


@dataclass(frozen=True, slots=True)
class RunningService:
    name: str
    url: str
    process: ManagedProcess

    @property
    def pid(self) -> int:
        pid = self.process.pid
        assert pid is not None
        return pid


def answers(url: str) -> bool:
    """Whether ``url`` answers 200 within a second."""
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:  # noqa: S310 - our own http URL
            return int(resp.status) == 200
    except (urllib.error.URLError, OSError):
        return False


def _process_env(env: Mapping[str, str]) -> dict[str, str]:
    """A service's environment: ``env`` over a minimal base, JSON logs (nothing inherited)."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),  # noqa: S108 - only a fallback for HOME
        "LOG_JSON": "true",
        **env,
    }


def start_worker_process(
    module: str,
    env: Mapping[str, str],
    *,
    log_dir: Path,
    name: str,
    ready_log: bytes,
    timeout_s: float = 60.0,
) -> ManagedProcess:
    """Start ``python -m module`` (a worker: no port but its health listener's, a free one
    unless ``env`` sets ``HEALTH_PORT``) and wait until its log shows ``ready_log``; the
    caller stops it."""
    log_path = log_dir / f"{name}-{secrets.token_hex(3)}.log"
    env = {"HOST": "127.0.0.1", "HEALTH_PORT": str(free_port()), **env}
    process = ManagedProcess(
        name, [sys.executable, "-m", module], env=_process_env(env), log_path=log_path
    )
    process.start()
    process.wait_ready(
        lambda: log_path.exists() and ready_log in log_path.read_bytes(), timeout=timeout_s
    )
    return process


def _start(
    module: str,
    env: Mapping[str, str],
    *,
    log_dir: Path,
    name: str | None,
    port: int | None,
    ready_path: str,
    timeout_s: float,
) -> RunningService:
    name = name or module
    port = port or free_port()
    process = ManagedProcess(
        name,
        [sys.executable, "-m", module],
        env=_process_env({**env, "HOST": "127.0.0.1", "PORT": str(port)}),
        log_path=log_dir / f"{name}-{port}.log",
    )
    process.start()
    url = f"http://127.0.0.1:{port}"
    process.wait_ready(lambda: answers(url + ready_path), timeout=timeout_s)
    return RunningService(name, url, process)


@contextmanager
def running_service(
    module: str,
    env: Mapping[str, str],
    *,
    log_dir: Path,
    name: str | None = None,
    port: int | None = None,
    ready_path: str = "/livez",
    timeout_s: float = 30.0,
) -> Generator[RunningService]:
    """Start ``python -m module`` on 127.0.0.1 and a free port; stop it on the way out."""
    service = _start(
        module,
        env,
        log_dir=log_dir,
        name=name,
        port=port,
        ready_path=ready_path,
        timeout_s=timeout_s,
    )
    try:
        yield service
    finally:
        service.process.stop()


@asynccontextmanager
async def running_service_async(
    module: str,
    env: Mapping[str, str],
    *,
    log_dir: Path,
    name: str | None = None,
    port: int | None = None,
    ready_path: str = "/livez",
    timeout_s: float = 30.0,
) -> AsyncGenerator[RunningService]:
    """:func:`running_service` for async tests: waits in a thread, so the event loop (and any
    fake server it runs, such as the local JWKS issuer) keeps serving meanwhile."""
    service = await asyncio.to_thread(
        _start,
        module,
        env,
        log_dir=log_dir,
        name=name,
        port=port,
        ready_path=ready_path,
        timeout_s=timeout_s,
    )
    try:
        yield service
    finally:
        await asyncio.to_thread(service.process.stop)
