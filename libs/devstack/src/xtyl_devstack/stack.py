"""The three servers together: started in parallel, described by :class:`StackInfo`, stopped in
reverse order.

    with Stack(data_dir, durable=False) as info:
        print(info.database_url, info.redis_url, info.s3_endpoint)
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import TracebackType

import msgspec

from xtyl_devstack.pginstall import postgres_data_dir
from xtyl_devstack.postgres import DEFAULT_DATABASE, PostgresServer
from xtyl_devstack.redis import RedisServer
from xtyl_devstack.s3 import REGION, S3Server

log = logging.getLogger("xtyl_devstack")

DEFAULT_BUCKET = "xtyl"
_START_TIMEOUT_S = 180.0  # each server has its own, shorter, start timeout


class StackInfo(msgspec.Struct, frozen=True, kw_only=True):
    """Where the servers of a running stack are; JSON in ``XTYL_DEVSTACK_INFO`` and stack.json."""

    #: ``postgresql://postgres@127.0.0.1:<port>`` (no database): append ``/<database>``.
    postgres_dsn: str
    #: The database created at start, with the vector extension.
    database: str
    redis_url: str
    s3_endpoint: str
    s3_access_key: str
    s3_secret_key: str
    s3_bucket: str
    s3_region: str = REGION
    data_dir: str
    #: The process that owns the servers (they die with it).
    pid: int

    @property
    def database_url(self) -> str:
        return self.dsn(self.database)

    def dsn(self, database: str) -> str:
        return f"{self.postgres_dsn}/{database}"

    def to_json(self) -> str:
        return msgspec.json.encode(self).decode()

    @classmethod
    def from_json(cls, text: str | bytes) -> StackInfo:
        return msgspec.json.decode(text, type=cls)


class Stack:
    """Postgres + pgvector, Redis and S3 under ``data_dir`` (``pg/``, ``redis/``, ``s3/``,
    ``logs/``). ``durable``: keep PostgreSQL's safe defaults and persist Redis (``up``); then
    a data dir PostgreSQL's account cannot enter has its cluster elsewhere
    (:func:`~xtyl_devstack.pginstall.postgres_data_dir`)."""

    def __init__(
        self,
        data_dir: Path,
        *,
        durable: bool = False,
        database: str = DEFAULT_DATABASE,
        bucket: str = DEFAULT_BUCKET,
        access_key: str | None = None,
        secret_key: str | None = None,
    ) -> None:
        self.data_dir = data_dir
        logs = data_dir / "logs"
        # kept data (`up`) goes where PostgreSQL's account can reach it, tied to this data dir
        pg_dir = postgres_data_dir(data_dir) if durable else data_dir / "pg"
        self.postgres = PostgresServer(
            pg_dir, database=database, durable=durable, log_path=logs / "postgres.log"
        )
        self.redis = RedisServer(
            data_dir / "redis", persistent=durable, log_path=logs / "redis.log"
        )
        self.s3 = S3Server(
            data_dir / "s3",
            access_key=access_key or f"xtyl{secrets.token_hex(8)}",
            secret_key=secret_key or secrets.token_urlsafe(30),
            bucket=bucket,
            durable=durable,
            log_path=logs / "s3.log",
        )
        #: Seconds each server took to be ready, and ``total``.
        self.timings: dict[str, float] = {}

    @property
    def info(self) -> StackInfo:
        return StackInfo(
            postgres_dsn=self.postgres.base_dsn,
            database=self.postgres.database,
            redis_url=self.redis.url,
            s3_endpoint=self.s3.endpoint,
            s3_access_key=self.s3.access_key,
            s3_secret_key=self.s3.secret_key,
            s3_bucket=self.s3.bucket,
            data_dir=str(self.data_dir),
            pid=os.getpid(),
        )

    def start(self) -> StackInfo:
        """Start the three servers in parallel; on any failure stop them all and re-raise."""
        started = time.monotonic()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        servers = {"postgres": self.postgres, "redis": self.redis, "s3": self.s3}
        with ThreadPoolExecutor(len(servers), thread_name_prefix="xtyl-devstack-start") as pool:
            futures: dict[str, Future[float]] = {
                name: pool.submit(server.start) for name, server in servers.items()
            }
            try:
                for name, future in futures.items():
                    self.timings[name] = future.result(timeout=_START_TIMEOUT_S)
            except BaseException:
                for future in futures.values():  # let the others finish before stopping them
                    future.cancel()
                    with contextlib.suppress(BaseException):  # the first error is re-raised
                        future.exception(timeout=_START_TIMEOUT_S)
                self.stop()
                raise
        self.timings["total"] = time.monotonic() - started
        log.info(
            "stack ready in %.2f s (%s)",
            self.timings["total"],
            ", ".join(f"{k} {v:.2f} s" for k, v in self.timings.items() if k != "total"),
        )
        return self.info

    def stop(self) -> None:
        """Stop S3, Redis, then Postgres; safe to call twice or after a failed start."""
        for server in (self.s3, self.redis, self.postgres):
            try:
                server.stop()
            except Exception:
                log.exception("could not stop %s", type(server).__name__)

    def __enter__(self) -> StackInfo:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"Stack({self.data_dir})"
