"""``python -m xtyl_devstack up``: the whole backend on this machine, no Docker.

Starts the stack with its data under ``--data-dir`` (kept across runs), applies the migrations,
starts the services of :data:`xtyl_devstack.services.SERVICES`, waits until each answers
``GET /readyz`` with 200, prints where everything is, then watches them. Ctrl-C or SIGTERM
stops the services, then the servers. A child (service, worker or server) that dies is started
again, alone: ``up`` prints which one exited, with its exit code and last log lines, when it
will be restarted, and when it is back. The wait starts at 1 s and doubles up to 30 s while the
child keeps dying; a child that ran for a minute before dying starts at 1 s again.

While it runs, ``<data dir>/stack.json`` holds the :class:`StackInfo` and
``python -m xtyl_devstack env`` prints the matching ``export`` lines.
"""

from __future__ import annotations

import base64
import ctypes
import fcntl
import importlib.util
import logging
import os
import secrets
import shlex
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Generator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import msgspec

from xtyl_devstack.errors import DevstackError, ServerStartError
from xtyl_devstack.issuer import mint_anon_key, mint_service_role_key
from xtyl_devstack.pginstall import PG_LOCATION_FILE
from xtyl_devstack.ports import port_is_free
from xtyl_devstack.processes import ManagedProcess, run_checked, tail_file
from xtyl_devstack.services import (
    SERVICES,
    WORKERS,
    ProcessSpec,
    SpecsFactory,
    default_services,
    service_ports,
    stack_environment,
)
from xtyl_devstack.stack import Stack, StackInfo

__all__ = ["ProcessSpec", "default_services", "env_lines", "run_up"]

log = logging.getLogger("xtyl_devstack")

DEFAULT_DATA_DIR = Path(".data")
STACK_FILE = "stack.json"
_PR_SET_PDEATHSIG = 1
SERVICES_FILE = "services.json"
SECRET_FILE = "internal_jwt_secret"  # noqa: S105 - a file name
AUTH_SECRET_FILE = "supabase_jwt_secret"  # noqa: S105 - a file name
S3_KEYS_FILE = "s3_keys.json"
#: The local Supabase project's API keys and its Send Email Hook secret, made once.
ANON_KEY_FILE = "supabase_anon_key"
SERVICE_ROLE_KEY_FILE = "supabase_service_role_key"
HOOK_SECRET_FILE = "send_email_hook_secret"  # noqa: S105 - a file name
LOCK_FILE = "up.lock"
MIGRATION_MODULES = ("xtyl_common.migrations", "xtyl_common.migrate")
SERVICE_READY_TIMEOUT_S = 60.0
#: A dead child is started again after this, doubling while it keeps dying, up to the max.
RESTART_DELAY_INITIAL_S = 1.0
RESTART_DELAY_MAX_S = 30.0
#: A child that ran this long before it died is restarted after the initial delay again.
RESTART_RESET_AFTER_S = 60.0
_WATCH_INTERVAL_S = 0.25
EXIT_CHILD_DIED = 1
EXIT_CONFIG_ERROR = 2


class _Stop(Exception):  # a request to stop, not an error
    """SIGTERM or SIGINT arrived."""


def _read_or_create(path: Path, make: Callable[[], str]) -> str:
    if path.exists():
        return path.read_text().strip()
    value = make()
    path.touch(mode=0o600)
    path.write_text(value + "\n")
    return value


class _S3Keys(msgspec.Struct, frozen=True):
    access_key: str
    secret_key: str


def _s3_keys(data_dir: Path) -> _S3Keys:
    text = _read_or_create(
        data_dir / S3_KEYS_FILE,
        lambda: msgspec.json.encode(
            _S3Keys(f"xtyl{secrets.token_hex(8)}", secrets.token_urlsafe(30))
        ).decode(),
    )
    return msgspec.json.decode(text, type=_S3Keys)


def _auth_keys(data_dir: Path, auth_secret: str) -> dict[str, str]:
    """The anon and service-role keys (HS256 JWTs of the project's secret, as Supabase's
    legacy keys) and the hook secret (``v1,whsec_…``), kept in ``data_dir`` so that a
    frontend's ``.env.local`` stays valid across runs."""
    return {
        "SUPABASE_ANON_KEY": _read_or_create(
            data_dir / ANON_KEY_FILE, lambda: mint_anon_key(auth_secret)
        ),
        "SUPABASE_SERVICE_ROLE_KEY": _read_or_create(
            data_dir / SERVICE_ROLE_KEY_FILE, lambda: mint_service_role_key(auth_secret)
        ),
        "SEND_EMAIL_HOOK_SECRET": _read_or_create(
            data_dir / HOOK_SECRET_FILE,
            lambda: "v1,whsec_" + base64.b64encode(secrets.token_bytes(32)).decode(),
        ),
    }


@contextmanager
def _data_dir_lock(data_dir: Path) -> Generator[None]:
    with (data_dir / LOCK_FILE).open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DevstackError(
                f"another `up` is already running with {data_dir} (stop it first)"
            ) from None
        yield


def _up_is_running(data_dir: Path) -> bool:
    path = data_dir / LOCK_FILE
    if not path.exists():
        return False
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


def _is_ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - our own http URL
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _migration_module() -> str | None:
    for module in MIGRATION_MODULES:
        try:
            spec = importlib.util.find_spec(module)
            if spec is None:
                continue
            if spec.submodule_search_locations is None:  # a plain module
                return module
            if importlib.util.find_spec(f"{module}.__main__") is not None:
                return module
        except ImportError:
            continue
    return None


def _run_migrations(database_url: str) -> None:
    module = _migration_module()
    if module is None:
        log.warning("no migration runner (%s) yet: skipping migrations", MIGRATION_MODULES[0])
        return
    env = {**os.environ, "DATABASE_URL": database_url}
    output = run_checked(
        [sys.executable, "-m", module], what=f"python -m {module}", env=env, timeout=300
    )
    for line in output.splitlines():
        print(f"{'migrate':<8} | {line}", flush=True)


def _wait_services_ready(processes: list[tuple[ProcessSpec, ManagedProcess]]) -> None:
    deadline = time.monotonic() + SERVICE_READY_TIMEOUT_S
    pending = [(spec, proc) for spec, proc in processes if spec.ready_url is not None]
    while pending:
        for spec, proc in list(pending):
            code = proc.returncode
            if code is not None:
                raise ServerStartError(
                    f"{spec.name} exited with code {code} while starting; "
                    f"last log lines:\n{proc.log_tail()}"
                )
            if spec.ready_url is not None and _is_ready(spec.ready_url):
                log.info("%s ready", spec.name)
                pending.remove((spec, proc))
        if pending and time.monotonic() > deadline:
            names = ", ".join(spec.name for spec, _ in pending)
            raise ServerStartError(
                f"not ready after {SERVICE_READY_TIMEOUT_S:.0f} s (GET /readyz != 200): {names}"
            )
        time.sleep(0.1)


def _summary(
    info: StackInfo,
    specs: list[ProcessSpec],
    data_dir: Path,
    elapsed: float,
    anon_key: str = "",
) -> str:
    rows: list[tuple[str, str]] = []
    for spec in specs:
        if spec.name == "auth" and spec.ready_url is not None:
            supabase_url = spec.ready_url.split("/auth/v1/", 1)[0]
            rows.append(("auth", f"{supabase_url}   (local Supabase Auth, supabase/config.toml)"))
            rows.append(("frontend", f"NEXT_PUBLIC_SUPABASE_URL={supabase_url}"))
            rows.append(("", f"NEXT_PUBLIC_SUPABASE_ANON_KEY={anon_key}"))
        elif spec.name == "brevo":
            rows.append(("brevo", f"emails sent: {spec.ready_url}   (local Brevo stand-in)"))
        elif spec.base_url is not None:
            rows.append((spec.name, f"{spec.base_url}   docs {spec.base_url}/schema/swagger"))
        elif spec.health_url is not None:
            url = spec.health_url
            rows.append((spec.name, f"{url}/readyz   metrics {url}/metrics   (arq worker)"))
        else:
            rows.append((spec.name, "running (arq worker fed from Redis Streams)"))
    rows += [
        ("postgres", info.database_url),
        ("redis", info.redis_url),
        ("s3", f"{info.s3_endpoint}   bucket {info.s3_bucket}"),
        ("logs", str(data_dir / "logs")),
        *_pg_location_row(data_dir),
        ("token", "make user EMAIL=you@example.com   (signs up, prints an access token)"),
    ]
    lines = [f"xtyl local stack ready in {elapsed:.1f} s"]
    lines += [f"  {name:<9} {value}" for name, value in rows]
    lines.append("Ctrl-C stops everything; `python -m xtyl_devstack env` prints the variables.")
    return "\n".join(lines)


def _pg_location_row(data_dir: Path) -> list[tuple[str, str]]:
    location = data_dir / PG_LOCATION_FILE
    if not location.exists():
        return []
    where = location.read_text().strip()
    return [("pg data", f"{where}   (PostgreSQL cannot enter {data_dir}; make clean removes it)")]


@dataclass
class _Child:
    """A child ``up`` keeps running: how to see it, start it again, and when it will be."""

    name: str
    running: Callable[[], bool]
    exit_code: Callable[[], int | None]
    start: Callable[[], None]
    log_tail: Callable[[], str]
    started_at: float
    delay_s: float = RESTART_DELAY_INITIAL_S
    restart_at: float | None = None
    restarts: int = 0

    def check(self, now: float) -> None:
        """Notice a death (schedule the restart and say so) or restart when it is time."""
        if self.restart_at is None:
            if self.running():
                return
            ran_s = now - self.started_at
            if ran_s >= RESTART_RESET_AFTER_S:
                self.delay_s = RESTART_DELAY_INITIAL_S
            self.restart_at = now + self.delay_s
            code = self.exit_code()
            print(
                f"up: {self.name} exited (code {'?' if code is None else code}) after"
                f" {ran_s:.1f} s; restarting it in {self.delay_s:.1f} s; last log lines:\n"
                f"{self.log_tail()}",
                flush=True,
            )
            self.delay_s = min(self.delay_s * 2, RESTART_DELAY_MAX_S)
            return
        if now < self.restart_at:
            return
        self.restart_at = None
        self.restarts += 1
        self.started_at = time.monotonic()
        try:
            self.start()
        except (DevstackError, OSError) as exc:  # seen as dead again on the next check
            print(f"up: {self.name} did not start again: {exc}", flush=True)
            return
        print(f"up: {self.name} restarted (restart {self.restarts})", flush=True)


def _service_child(spec: ProcessSpec, proc: ManagedProcess) -> _Child:
    return _Child(
        name=spec.name,
        running=lambda: proc.running,
        exit_code=lambda: proc.returncode,
        start=proc.restart,
        log_tail=proc.log_tail,
        started_at=time.monotonic(),
    )


def _server_children(stack: Stack) -> list[_Child]:
    servers = (("postgres", stack.postgres), ("redis", stack.redis), ("s3", stack.s3))
    return [
        _Child(
            name=name,
            running=lambda server=server: server.running,
            exit_code=lambda: None,
            start=lambda server=server: _discard(server.start()),
            log_tail=lambda server=server: tail_file(server.log_path),
            started_at=time.monotonic(),
        )
        for name, server in servers
    ]


def _discard(_: object) -> None:
    return None


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop(signal.Signals(signum).name)


def _port_of(spec: ProcessSpec) -> int | None:
    """The port a service listens on (``PORT``), or a worker's health listener
    (``HEALTH_PORT``)."""
    raw = spec.env.get("PORT", "") or spec.env.get("HEALTH_PORT", "")
    return int(raw) if raw.isdigit() else None


def _check_ports(ports: Mapping[str, int]) -> None:
    workers = {worker for worker, _ in WORKERS}
    for name, port in ports.items():
        if port_is_free(port):
            continue
        if name in workers:  # a free port drawn a moment ago
            raise _PortTaken(f"port {port} for {name}'s health listener was taken meanwhile")
        variable = next((s.port_variable for s in SERVICES if s.name == name), "PORT")
        raise _PortTaken(f"port {port} for {name} is already in use (set {variable})")


class _UpRun:
    """One run of ``up``: what was started, so that it can all be stopped."""

    def __init__(self, data_dir: Path, services: SpecsFactory | None, migrate: bool) -> None:
        self.data_dir = data_dir
        self.services = services
        self.migrate = migrate
        self.started = time.monotonic()
        self.stack: Stack | None = None
        self.processes: list[tuple[ProcessSpec, ManagedProcess]] = []

    def start(self) -> None:
        if self.services is default_services:  # fail before starting anything
            _check_ports(service_ports())
        secret = _read_or_create(self.data_dir / SECRET_FILE, lambda: secrets.token_urlsafe(48))
        auth_secret = _read_or_create(
            self.data_dir / AUTH_SECRET_FILE, lambda: secrets.token_urlsafe(48)
        )
        keys = _s3_keys(self.data_dir)
        self.stack = Stack(
            self.data_dir, durable=True, access_key=keys.access_key, secret_key=keys.secret_key
        )
        info = self.stack.start()
        (self.data_dir / STACK_FILE).write_text(info.to_json())
        if self.migrate:
            _run_migrations(info.database_url)
        keys = _auth_keys(self.data_dir, auth_secret)
        env = stack_environment(info, service_ports(), secret, auth_secret, auth_keys=keys)
        specs = self.services(info, env) if self.services is not None else []
        _check_ports({spec.name: port for spec in specs if (port := _port_of(spec))})
        (self.data_dir / SERVICES_FILE).write_text(
            msgspec.json.encode({spec.name: spec.base_url for spec in specs}).decode()
        )
        for spec in specs:
            proc = ManagedProcess(
                spec.name,
                spec.argv,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **spec.env},
                echo_prefix=f"{spec.name:<8}",
                stop_signal=signal.SIGTERM,
                death_signal=signal.SIGTERM,
                stop_timeout=15.0,
            )
            self.processes.append((spec, proc))
            proc.start()
        _wait_services_ready(self.processes)
        elapsed = time.monotonic() - self.started
        anon_key = keys["SUPABASE_ANON_KEY"]
        print(_summary(info, specs, self.data_dir, elapsed, anon_key), flush=True)

    def watch(self) -> int:
        """Keep every child running (a dead one is restarted with backoff) until a signal."""
        assert self.stack is not None
        children = [_service_child(spec, proc) for spec, proc in self.processes]
        children += _server_children(self.stack)
        while True:
            for child in children:
                child.check(time.monotonic())
            time.sleep(_WATCH_INTERVAL_S)

    def shutdown(self) -> None:
        """Services in reverse order, then the servers; no process is left."""
        for _, proc in reversed(self.processes):
            proc.stop()
        if self.stack is not None:
            self.stack.stop()
        for name in (STACK_FILE, SERVICES_FILE):
            (self.data_dir / name).unlink(missing_ok=True)


class _PortTaken(DevstackError):
    """A service's port is in use."""


def die_with_parent(signum: signal.Signals = signal.SIGTERM) -> None:
    """Ask the kernel for ``signum`` when our parent (make, a shell) dies."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, int(signum), 0, 0, 0)


def run_up(
    data_dir: Path = DEFAULT_DATA_DIR,
    *,
    services: SpecsFactory | None = default_services,
    migrate: bool = True,
) -> int:
    """Run the stack and the services until Ctrl-C/SIGTERM (0); 1 when they cannot start."""
    data_dir = data_dir.resolve()
    die_with_parent()  # `kill -TERM` of `make up` reaches us as SIGTERM: a clean shutdown
    previous_int = signal.signal(signal.SIGINT, _raise_stop)
    previous_term = signal.signal(signal.SIGTERM, _raise_stop)
    try:
        data_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
        with _data_dir_lock(data_dir):
            run = _UpRun(data_dir, services, migrate)
            try:
                run.start()
                return run.watch()
            except _Stop as stop:
                print(f"up: {stop} received, stopping", flush=True)
                return 0
            finally:
                signal.signal(signal.SIGINT, signal.SIG_IGN)  # a 2nd Ctrl-C must not cut cleanup
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                run.shutdown()
    except _Stop:
        return 0
    except _PortTaken as exc:
        print(f"up: {exc}", file=sys.stderr, flush=True)
        return EXIT_CONFIG_ERROR
    except DevstackError as exc:
        print(f"up: {exc}", file=sys.stderr, flush=True)
        return EXIT_CHILD_DIED
    finally:
        signal.signal(signal.SIGINT, previous_int)
        signal.signal(signal.SIGTERM, previous_term)


def running_urls(data_dir: Path) -> dict[str, str]:
    """The base URL of each process of the stack ``up`` runs with ``data_dir`` (the ports it
    was started with, whatever this shell's ``*_PORT`` say); ``auth`` is ``<url>/auth/v1``."""
    services_file = data_dir / SERVICES_FILE
    if not services_file.exists():
        return {}
    urls = msgspec.json.decode(services_file.read_bytes(), type=dict[str, str | None])
    return {name: url for name, url in urls.items() if url is not None}


def env_lines(data_dir: Path = DEFAULT_DATA_DIR) -> list[str]:
    """``export`` lines for the stack that ``up`` is running with ``data_dir``."""
    data_dir = data_dir.resolve()
    stack_file = data_dir / STACK_FILE
    if not stack_file.exists() or not _up_is_running(data_dir):
        raise DevstackError(f"no running stack in {data_dir} (start it with `make up`)")
    info = StackInfo.from_json(stack_file.read_bytes())
    secret = (data_dir / SECRET_FILE).read_text().strip()
    auth_secret = (data_dir / AUTH_SECRET_FILE).read_text().strip()
    keys = _auth_keys(data_dir, auth_secret)
    env = stack_environment(info, service_ports(), secret, auth_secret, auth_keys=keys)
    for name, url in running_urls(data_dir).items():
        env[f"{name.upper()}_URL"] = url
    if "AUTH_URL" in env:  # the Auth the stack runs, not this shell's AUTH_PORT
        env["SUPABASE_URL"] = env["AUTH_URL"].split("/auth/v1", 1)[0]
    env.pop("HOST", None)
    env["XTYL_DEVSTACK_INFO"] = info.to_json()  # pytest then reuses this stack
    return [f"export {name}={shlex.quote(value)}" for name, value in env.items()]
