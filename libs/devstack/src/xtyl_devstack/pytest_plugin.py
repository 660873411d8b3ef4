"""pytest plugin: one Postgres, one Redis and one S3 server per test session.

The controller process (the only process without xdist, or xdist's controller: no
``workerinput`` on its config) starts the stack in ``pytest_configure``, in a fresh temp dir,
and publishes its :class:`StackInfo` as JSON in ``XTYL_DEVSTACK_INFO``; xdist workers are
spawned later and inherit it. ``pytest_unconfigure`` stops the servers and removes the dir (it
also runs after failures and Ctrl-C; SIGTERM is turned into Ctrl-C). If ``XTYL_DEVSTACK_INFO``
is already set, that stack is used and nothing is started.

Fixtures: ``devstack`` (StackInfo), ``database_url`` (a database per worker, with pgvector),
``redis_url``, ``redis_prefix`` (per test), ``s3_client``, ``s3_bucket`` (a fresh bucket per
test), ``postgres_control`` and ``redis_control``.

Outage tests: ``postgres_control`` and ``redis_control`` are PRIVATE servers of the worker that
asks for them, started on first use (~0.5 s), never the shared ones: stopping them cannot break
a test running on another worker. Point the code under test at ``postgres_control.dsn()`` /
``redis_control.url``, then ``stop()`` and ``start()`` (same port, same data; Redis comes back
empty). Whatever a test left stopped is started again after it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import psutil
import pytest

from xtyl_devstack import s3
from xtyl_devstack.errors import DevstackError
from xtyl_devstack.postgres import PostgresServer, create_database, drop_database
from xtyl_devstack.redis import RedisServer
from xtyl_devstack.stack import Stack, StackInfo

ENV_INFO = "XTYL_DEVSTACK_INFO"
ENV_TMPDIR = "XTYL_DEVSTACK_TMPDIR"
_DIR_PREFIX = "xtyl-devstack-"
_OWNER_FILE = "owner"


@dataclass
class _OwnedStack:
    stack: Stack
    data_dir: Path
    restore_sigterm: bool = False


@dataclass
class _Controls:
    servers: list[PostgresServer | RedisServer] = field(default_factory=lambda: [])


_OWNED = pytest.StashKey[_OwnedStack]()
_CONTROLS = pytest.StashKey[_Controls]()


def _base_dir() -> Path:
    return Path(os.environ.get(ENV_TMPDIR) or tempfile.gettempdir())


def _worker_id() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


def sweep_stale_dirs(base: Path) -> None:
    """Remove the dirs of earlier runs whose owner process is gone (a SIGKILLed pytest)."""
    for candidate in base.glob(f"{_DIR_PREFIX}*"):
        try:
            pid_text, created_text = (candidate / _OWNER_FILE).read_text().split()
            owner = psutil.Process(int(pid_text))
            alive = abs(owner.create_time() - float(created_text)) < 1.0
        except psutil.NoSuchProcess:
            alive = False
        except (OSError, ValueError, psutil.Error):
            continue  # not ours, or not readable: leave it alone
        if not alive:
            shutil.rmtree(candidate, ignore_errors=True)


def make_run_dir(kind: str) -> Path:
    """A fresh dir under the temp dir that the Postgres account can enter, owned by us."""
    base = _base_dir()
    run_dir = Path(tempfile.mkdtemp(prefix=f"{_DIR_PREFIX}{kind}-", dir=base))
    run_dir.chmod(0o755)
    me = psutil.Process()
    (run_dir / _OWNER_FILE).write_text(f"{me.pid} {me.create_time()}")
    return run_dir


def _informational(config: pytest.Config) -> bool:
    return any(
        bool(getattr(config.option, name, False))
        for name in ("help", "version", "collectonly", "showfixtures", "markers")
    )


def _sigterm_as_ctrl_c(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config, "workerinput") or os.environ.get(ENV_INFO) or _informational(config):
        return
    sweep_stale_dirs(_base_dir())
    data_dir = make_run_dir("session")
    stack = Stack(data_dir)
    try:
        info = stack.start()
    except DevstackError as exc:
        shutil.rmtree(data_dir, ignore_errors=True)
        raise pytest.UsageError(f"xtyl-devstack could not start the stack: {exc}") from None
    except BaseException:
        shutil.rmtree(data_dir, ignore_errors=True)
        raise
    owned = _OwnedStack(stack=stack, data_dir=data_dir)
    config.stash[_OWNED] = owned
    os.environ[ENV_INFO] = info.to_json()
    in_main_thread = threading.current_thread() is threading.main_thread()
    if in_main_thread and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        owned.restore_sigterm = True
        signal.signal(signal.SIGTERM, _sigterm_as_ctrl_c)


def pytest_unconfigure(config: pytest.Config) -> None:
    owned = config.stash.get(_OWNED, None)
    if owned is None:
        return
    del config.stash[_OWNED]
    try:
        owned.stack.stop()
    finally:
        os.environ.pop(ENV_INFO, None)
        shutil.rmtree(owned.data_dir, ignore_errors=True)
        if owned.restore_sigterm:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


def pytest_report_header(config: pytest.Config) -> str | None:
    owned = config.stash.get(_OWNED, None)
    if owned is None:
        return None
    info, timings = owned.stack.info, owned.stack.timings
    return (
        f"xtyl-devstack: ready in {timings.get('total', 0.0):.1f} s: {info.database_url}, "
        f"{info.redis_url}, S3 {info.s3_endpoint}"
    )


@pytest.fixture(scope="session")
def devstack() -> StackInfo:
    """Where the session's servers are (shared by every xdist worker)."""
    raw = os.environ.get(ENV_INFO)
    if not raw:
        raise DevstackError(
            f"no stack: {ENV_INFO} is not set (is the xtyl_devstack plugin disabled?)"
        )
    return StackInfo.from_json(raw)


@pytest.fixture(scope="session")
def database_url(devstack: StackInfo) -> Iterator[str]:
    """A database of this worker's own, with the vector extension; dropped at the end."""
    name = f"xtyl_test_{_worker_id()}_{secrets.token_hex(4)}"
    create_database(devstack.postgres_dsn, name)
    yield devstack.dsn(name)
    drop_database(devstack.postgres_dsn, name)


@pytest.fixture(scope="session")
def redis_url(devstack: StackInfo) -> str:
    return devstack.redis_url


@pytest.fixture
def redis_prefix() -> str:
    """A key prefix of this test's own, e.g. ``test:gw0:1f2e3d4c5b6a:``."""
    return f"test:{_worker_id()}:{secrets.token_hex(6)}:"


@pytest.fixture(scope="session")
def s3_client(devstack: StackInfo) -> Iterator[Any]:
    """A botocore S3 client for the session's S3 server (checks what code under test wrote)."""
    client = s3_client_for(devstack)
    yield client
    client.close()


def s3_client_for(info: StackInfo) -> Any:
    return s3.s3_client(info.s3_endpoint, info.s3_access_key, info.s3_secret_key)


@pytest.fixture
def s3_bucket(s3_client: Any) -> Iterator[str]:
    """A fresh, empty bucket for this test; emptied and deleted afterwards."""
    name = f"test-{_worker_id()}-{secrets.token_hex(6)}".lower()
    s3_client.create_bucket(Bucket=name)
    yield name
    s3.delete_bucket(s3_client, name)


def _controls(request: pytest.FixtureRequest) -> _Controls:
    stash = request.session.stash
    if _CONTROLS not in stash:
        stash[_CONTROLS] = _Controls()
    return stash[_CONTROLS]


@pytest.fixture(scope="session")
def postgres_control(request: pytest.FixtureRequest) -> Iterator[PostgresServer]:
    """A PRIVATE Postgres (database ``xtyl``, pgvector) for outage tests: ``stop()``/``start()``."""
    run_dir = make_run_dir("pg")
    server = PostgresServer(run_dir / "pg", log_path=run_dir / "postgres.log")
    try:
        server.start()
        _controls(request).servers.append(server)
        yield server
    finally:
        server.stop()
        shutil.rmtree(run_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_control(request: pytest.FixtureRequest) -> Iterator[RedisServer]:
    """A PRIVATE Redis for outage tests: ``stop()``/``start()`` (it comes back empty)."""
    run_dir = make_run_dir("redis")
    server = RedisServer(run_dir / "redis", log_path=run_dir / "redis.log")
    try:
        server.start()
        _controls(request).servers.append(server)
        yield server
    finally:
        server.stop()
        shutil.rmtree(run_dir, ignore_errors=True)


@pytest.fixture(autouse=True)
def _restart_stopped_controls(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test, start again the private servers a test left stopped."""
    yield
    if _CONTROLS in request.session.stash:
        for server in request.session.stash[_CONTROLS].servers:
            if not server.running:
                server.start()
