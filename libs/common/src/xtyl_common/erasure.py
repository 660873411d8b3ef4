"""A service's erasure ledger: when it began and finished erasing a deleted user (GDPR Art. 17).

Every service that holds a user's data consumes ``user.deleted`` and erases it. The ledger, a
table ``<schema>.erasures`` of the service's own (``select xtyl_events.install_erasures(...)``
in one of its migrations), is the record an operator shows to prove it, and the user's mark:
from the moment :meth:`ErasureLedger.begin` commits, the service's write paths refuse the user
(:meth:`ErasureLedger.refuse_if_erased`, ``403 account_deleted``).

The race it closes: a write that checked the mark just before the erasure began would commit a
row after the erasure read the user's rows, and be left behind. So a write takes the user's lock
*shared* (:meth:`ErasureLedger.lock_user`) in the transaction that checks the mark and writes;
:meth:`begin` takes it *exclusive*. Writes in flight finish before the erasure starts and are
erased with the rest; writes after it see the mark. The lock is a transaction-scoped advisory
lock, keyed on the schema and the user: nothing to clean up, no table row to contend on.

The erasure itself is the service's (each knows its rows and objects); it must be idempotent:
a worker killed half-way runs it again on redelivery (``attempts`` counts the runs), and a
finished erasure is not redone (:meth:`begin` answers ``False``)::

    async with pool.acquire() as conn, conn.transaction():
        fresh = await ledger.begin(conn, user_id, requested_at=event.occurred_at)
    if fresh:
        counts = await erase_everything(user_id)  # idempotent
        async with pool.acquire() as conn:
            await ledger.complete(conn, user_id, counts)
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Literal

import asyncpg
import msgspec
import structlog
from asyncpg.pool import PoolConnectionProxy

from xtyl_common.errors import Forbidden, XtylError
from xtyl_common.metrics import ERASURE_OLDEST_AGE, ERASURES_INCOMPLETE
from xtyl_common.supervise import log_failure

log = structlog.stdlib.get_logger("xtyl.erasure")

ErasureStatus = Literal["none", "erasing", "erased"]
#: A connection of its own or one taken from a pool.
Connection = asyncpg.Connection | PoolConnectionProxy

_SCHEMA = re.compile(r"[a-z_][a-z0-9_]*")

ACCOUNT_DELETED = "account_deleted"


class AccountDeleted(Forbidden):
    """The user was deleted: nothing more is written for them (``403 account_deleted``)."""

    default_code = ACCOUNT_DELETED


class ErasureState(msgspec.Struct, frozen=True, kw_only=True):
    """One service's erasure of one user, as the operator and the user see it."""

    status: ErasureStatus
    requested_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    attempts: int = 0
    erased: dict[str, int] = msgspec.field(default_factory=dict[str, int])


class ErasureLedger:
    """``<schema>.erasures``: the service's record of the users it erased."""

    def __init__(self, schema: str) -> None:
        if _SCHEMA.fullmatch(schema) is None:
            raise ValueError(f"{schema!r} is not a plain lower-case schema name")
        self.schema = schema
        self._table = f"{schema}.erasures"

    def _lock_key(self, user_id: uuid.UUID) -> str:
        return f"xtyl:erasure:{self.schema}:{user_id}"

    async def lock_user(
        self, conn: Connection, user_id: uuid.UUID, *, exclusive: bool = False
    ) -> None:
        """The user's lock until the transaction ends: shared for a write, exclusive for the
        erasure's start. Call inside a transaction."""
        function = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
        await conn.execute(
            f"select pg_catalog.{function}(pg_catalog.hashtextextended($1, 0))",
            self._lock_key(user_id),
        )

    async def is_erased(self, conn: Connection, user_id: uuid.UUID) -> bool:
        """The user's erasure has begun (or ended) in this service."""
        found = await conn.fetchval(
            f"select true from {self._table} where user_id = $1",  # noqa: S608 (checked name)
            user_id,
        )
        return bool(found)

    async def refuse_if_erased(self, conn: Connection, user_id: uuid.UUID) -> None:
        """Take the user's lock (shared) and raise :class:`AccountDeleted` if they were
        deleted. Call first in the transaction that writes for the user."""
        await self.lock_user(conn, user_id)
        if await self.is_erased(conn, user_id):
            raise AccountDeleted("this account was deleted; nothing more is stored for it")

    async def begin(self, conn: Connection, user_id: uuid.UUID, *, requested_at: datetime) -> bool:
        """Mark the user erased from now on (waiting for their writes in flight) and count a
        run; ``False`` when the erasure already completed (nothing to redo). Call inside a
        transaction and commit before erasing."""
        await self.lock_user(conn, user_id, exclusive=True)
        completed = await conn.fetchval(
            f"""
            insert into {self._table} as e (user_id, requested_at)
            values ($1, $2)
            on conflict (user_id) do update
                set attempts = e.attempts + (e.completed_at is null)::int
            returning completed_at is not null
            """,  # noqa: S608 (checked name)
            user_id,
            requested_at,
        )
        return not completed

    async def complete(
        self, conn: Connection, user_id: uuid.UUID, erased: Mapping[str, int]
    ) -> None:
        """Record that the erasure finished, with what it removed."""
        await conn.execute(
            f"""
            update {self._table}
            set completed_at = pg_catalog.now(), erased = $2::text::jsonb
            where user_id = $1 and completed_at is null
            """,  # noqa: S608 (checked name)
            user_id,
            msgspec.json.encode(dict(erased)).decode(),
        )

    async def backlog(self, conn: Connection) -> tuple[int, float]:
        """The erasures begun and not completed, and the seconds since the oldest one's user
        was deleted (0 when none)."""
        row = await conn.fetchrow(
            f"""
            select count(*) as incomplete,
                coalesce(extract(epoch from pg_catalog.now() - min(requested_at)), 0)::float8
                    as oldest_s
            from {self._table} where completed_at is null
            """,  # noqa: S608 (checked name)
        )
        assert row is not None  # an aggregate always answers a row
        return int(row["incomplete"]), max(0.0, float(row["oldest_s"]))

    async def state(self, conn: Connection, user_id: uuid.UUID) -> ErasureState:
        """Where this service is with the user's erasure (``none`` before it began)."""
        row = await conn.fetchrow(
            f"""
            select requested_at, started_at, completed_at, attempts, erased::text as erased
            from {self._table} where user_id = $1
            """,  # noqa: S608 (checked name)
            user_id,
        )
        if row is None:
            return ErasureState(status="none")
        return ErasureState(
            status="erased" if row["completed_at"] is not None else "erasing",
            requested_at=row["requested_at"],
            started_at=row["started_at"],
            completed_at=row["completed_at"],
            attempts=row["attempts"],
            erased=msgspec.json.decode(row["erased"], type=dict[str, int]),
        )


class ErasureBacklog:
    """Measures the ledger every ``interval_s`` into ``xtyl_erasures_incomplete`` and
    ``xtyl_erasure_oldest_incomplete_age_seconds`` (label ``schema``), for the alert on an
    erasure that does not finish. Every process of the service measures the same table, so
    every replica reports the same numbers (the rules take the max). A measurement that
    fails (Postgres away) is logged and the gauges keep their last values until the next."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        ledger: ErasureLedger,
        *,
        interval_s: float = 60.0,
        timeout_s: float = 5.0,
    ) -> None:
        self._pool = pool
        self._ledger = ledger
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self._task: asyncio.Task[None] | None = None

    async def measure(self) -> tuple[int, float]:
        """Measure once: the incomplete erasures and the oldest one's age, also set as the
        gauges."""
        async with asyncio.timeout(self._timeout_s), self._pool.acquire() as conn:
            incomplete, oldest_s = await self._ledger.backlog(conn)
        schema = self._ledger.schema
        ERASURES_INCOMPLETE.labels(schema).set(incomplete)
        ERASURE_OLDEST_AGE.labels(schema).set(oldest_s)
        return incomplete, oldest_s

    async def _run(self) -> None:
        while True:
            try:
                await self.measure()
            except Exception as exc:
                log_failure(log, "erasure_backlog_not_measured", exc, expected=_EXPECTED)
            await asyncio.sleep(self._interval_s)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="erasure-backlog")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


_EXPECTED = (
    XtylError,
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
)
