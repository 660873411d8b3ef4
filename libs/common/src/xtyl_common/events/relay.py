"""The outbox relay: publishes committed outbox rows to Redis Streams.

One pass over an outbox, in one Postgres transaction:

1. ``pg_try_advisory_xact_lock`` on the outbox: one relay at a time publishes a given outbox,
   so entries reach the stream in commit order even with many replicas running (the others
   skip it and move on; the lock is transaction-scoped, so it works through Supabase's
   transaction pooler);
2. ``select ... where published_at is null order by seq limit N for update skip locked``;
3. ``XADD <prefix>:<domain> MAXLEN ~ <maxlen>`` for each row, in one MULTI/EXEC pipeline;
4. mark the rows published (with their entry ids) and commit.

If Redis fails, the transaction rolls back: the rows stay unpublished and are retried with
exponential backoff, then published in order when Redis returns. Two relays never publish the
same row (the lock and the row locks are held until the marking commits).

**The contract is at-least-once.** If the process dies (or the database connection breaks)
after EXEC and before COMMIT, the rows are published again by the next pass: consumers must be
idempotent (they are: every handler is). That window is a few milliseconds; ordinary
operation, including any number of relays, publishes each row exactly once.

The relay wakes on ``LISTEN xtyl_outbox`` (the outbox trigger NOTIFYs at commit) and also polls
every ``relay_poll_interval_s``, since LISTEN does not pass the transaction pooler. Published rows
older than ``outbox_retention_s`` are deleted every ``prune_interval_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

import asyncpg
import msgspec
import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from xtyl_common.events.contracts import stream_key
from xtyl_common.events.outbox import check_schema_name
from xtyl_common.events.settings import EventSettings
from xtyl_common.events.streams import EVENT_FIELD, TYPE_FIELD

log = structlog.stdlib.get_logger("xtyl.events.relay")

NOTIFY_CHANNEL = "xtyl_outbox"
_LOCK_CLASS = 7_291_002  # first key of the per-outbox advisory lock
_PRUNE_CHUNK = 5_000

_TRANSIENT = (RedisError, OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)

# {outbox} is a checked identifier (check_schema_name), never user input.
_SELECT_BATCH = (
    "select seq, id, stream, type, version, payload::text as payload, producer, request_id,"
    " occurred_at from {outbox} where published_at is null order by seq limit $1"
    " for update skip locked"
)
_MARK_PUBLISHED = (
    "update {outbox} as o set published_at = now(), stream_id = x.sid,"
    " attempts = o.attempts + 1, last_error = null"
    " from unnest($1::bigint[], $2::text[]) as x(seq, sid) where o.seq = x.seq"
)
_RECORD_FAILURE = (
    "update {outbox} set attempts = attempts + 1, last_error = $2"
    " where seq = any($1::bigint[]) and published_at is null"
)
_PRUNE = (
    "delete from {outbox} where seq in (select seq from {outbox}"
    " where published_at < now() - make_interval(secs => $1) order by published_at limit $2)"
)


def _sql(template: str, schema: str) -> str:
    return template.format(outbox=f"{schema}.outbox")


class _WireEnvelope(msgspec.Struct, frozen=True, kw_only=True):
    """The envelope as the relay builds it from a row: the payload stays raw JSON."""

    type: str
    producer: str
    id: UUID
    occurred_at: datetime
    request_id: str | None
    version: int
    payload: msgspec.Raw


_wire_encoder = msgspec.json.Encoder()


class OutboxRelay:
    """Publishes the outboxes of ``schemas``; run :meth:`run` as a task or use
    :meth:`start`/:meth:`stop` from a lifespan or arq's ``on_startup``/``on_shutdown``."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        redis: Redis,
        *,
        schemas: Sequence[str],
        settings: EventSettings | None = None,
        listen: bool = True,
    ) -> None:
        self.pool = pool
        self.redis = redis
        self.schemas = [check_schema_name(s) for s in schemas]
        self.settings = settings or EventSettings()
        self.listen = listen
        self._wakeup = asyncio.Event()
        self._stopping = asyncio.Event()
        self._listen_conn: asyncpg.pool.PoolConnectionProxy | None = None
        self._task: asyncio.Task[None] | None = None

    # --- one pass -------------------------------------------------------------------------

    async def publish_pending(self) -> int:
        """Publish everything pending in every outbox (batch after batch); rows published."""
        total = 0
        for schema in self.schemas:
            while True:
                published = await self.publish_batch(schema)
                total += published or 0
                if published is None or published < self.settings.relay_batch_size:
                    break
        return total

    async def publish_batch(self, schema: str) -> int | None:
        """Publish up to one batch of ``schema``'s outbox; None if another relay holds it."""
        s = self.settings
        async with self.pool.acquire(timeout=s.db_timeout_s) as conn, conn.transaction():
            locked = await conn.fetchval(
                "select pg_try_advisory_xact_lock($1, hashtext($2))",
                _LOCK_CLASS,
                schema,
                timeout=s.db_timeout_s,
            )
            if not locked:
                return None
            rows = await conn.fetch(
                _sql(_SELECT_BATCH, schema),
                s.relay_batch_size,
                timeout=s.db_timeout_s,
            )
            if not rows:
                return 0
            try:
                entry_ids = await self._xadd(rows)
            except _TRANSIENT as exc:
                raise _PublishFailed(schema, [r["seq"] for r in rows], exc) from exc
            await conn.execute(
                _sql(_MARK_PUBLISHED, schema),
                [r["seq"] for r in rows],
                entry_ids,
                timeout=s.db_timeout_s,
            )
        log.debug("events_published", schema=schema, count=len(rows))
        return len(rows)

    async def _xadd(self, rows: Sequence[asyncpg.Record]) -> list[str]:
        s = self.settings
        async with (
            asyncio.timeout(s.redis_timeout_s),
            self.redis.pipeline(transaction=True) as pipe,
        ):
            for row in rows:
                envelope = _WireEnvelope(
                    type=row["type"],
                    producer=row["producer"],
                    id=row["id"],
                    occurred_at=row["occurred_at"],
                    request_id=row["request_id"],
                    version=row["version"],
                    payload=msgspec.Raw(row["payload"].encode()),
                )
                pipe.xadd(
                    stream_key(row["stream"], s.stream_prefix),
                    {TYPE_FIELD: row["type"].encode(), EVENT_FIELD: _wire_encoder.encode(envelope)},  # pyright: ignore[reportArgumentType]
                    maxlen=s.stream_maxlen,
                    approximate=True,
                )
            results: list[bytes] = await pipe.execute()
        return [r.decode() for r in results]

    async def _record_failure(self, failure: _PublishFailed) -> None:
        """Count the failed attempt on the rows (best effort: the database may be down too)."""
        with contextlib.suppress(*_TRANSIENT):
            async with self.pool.acquire(timeout=self.settings.db_timeout_s) as conn:
                await conn.execute(
                    _sql(_RECORD_FAILURE, failure.schema),
                    failure.seqs,
                    _describe(failure.cause)[:500],
                    timeout=self.settings.db_timeout_s,
                )

    async def prune(self) -> int:
        """Delete published rows older than the retention; rows deleted."""
        deleted = 0
        for schema in self.schemas:
            while True:
                async with self.pool.acquire(timeout=self.settings.db_timeout_s) as conn:
                    status = await conn.execute(
                        _sql(_PRUNE, schema),
                        self.settings.outbox_retention_s,
                        _PRUNE_CHUNK,
                        timeout=self.settings.db_timeout_s,
                    )
                count = int(status.split()[-1])
                deleted += count
                if count < _PRUNE_CHUNK:
                    break
        if deleted:
            log.info("outbox_pruned", count=deleted)
        return deleted

    # --- the loop -------------------------------------------------------------------------

    async def run(self) -> None:
        """Publish until :meth:`stop`: on NOTIFY, every poll interval, with backoff on errors."""
        s = self.settings
        backoff = s.relay_backoff_initial_s
        next_prune = time.monotonic()
        log.info("relay_started", schemas=self.schemas, stream_prefix=s.stream_prefix)
        try:
            while not self._stopping.is_set():
                await self._ensure_listening()
                self._wakeup.clear()
                try:
                    published = await self.publish_pending()
                    if time.monotonic() >= next_prune:
                        next_prune = time.monotonic() + s.prune_interval_s
                        await self.prune()
                except _PublishFailed as failure:
                    await self._record_failure(failure)
                    log.warning(
                        "relay_publish_failed",
                        schema=failure.schema,
                        rows=len(failure.seqs),
                        error=_describe(failure.cause),
                        retry_in_s=round(backoff, 2),
                    )
                    await self._pause(backoff)
                    backoff = min(backoff * 2, s.relay_backoff_max_s) * random.uniform(0.8, 1.2)  # noqa: S311
                    continue
                except _TRANSIENT as exc:
                    log.warning("relay_failed", error=_describe(exc), retry_in_s=round(backoff, 2))
                    await self._drop_listener()
                    await self._pause(backoff)
                    backoff = min(backoff * 2, s.relay_backoff_max_s) * random.uniform(0.8, 1.2)  # noqa: S311
                    continue
                if published:
                    log.info("events_published", count=published)
                backoff = s.relay_backoff_initial_s
                await self._pause(s.relay_poll_interval_s, wake_on_notify=True)
        finally:
            await self._drop_listener()
            log.info("relay_stopped")

    def start(self) -> asyncio.Task[None]:
        self._stopping.clear()
        self._task = asyncio.create_task(self.run(), name="outbox-relay")
        return self._task

    async def stop(self, timeout_s: float = 10.0) -> None:
        self._stopping.set()
        self._wakeup.set()
        if self._task is not None:
            try:
                async with asyncio.timeout(timeout_s):
                    await self._task
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            self._task = None

    async def _pause(self, seconds: float, *, wake_on_notify: bool = False) -> None:
        waits = [asyncio.ensure_future(self._stopping.wait())]
        if wake_on_notify:
            waits.append(asyncio.ensure_future(self._wakeup.wait()))
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waits:
                waiter.cancel()

    # --- LISTEN ---------------------------------------------------------------------------

    async def _ensure_listening(self) -> None:
        if not self.listen:
            return
        if self._listen_conn is not None and not self._listen_conn.is_closed():
            return
        await self._drop_listener()
        try:
            conn = await self.pool.acquire(timeout=self.settings.db_timeout_s)
        except _TRANSIENT as exc:
            log.warning("relay_listen_failed", error=_describe(exc))
            return
        try:
            await conn.add_listener(NOTIFY_CHANNEL, self._on_notify)
        except _TRANSIENT as exc:
            log.warning("relay_listen_failed", error=_describe(exc))
            await self.pool.release(conn)
            return
        self._listen_conn = conn

    def _on_notify(self, *_: object) -> None:
        self._wakeup.set()

    async def _drop_listener(self) -> None:
        conn, self._listen_conn = self._listen_conn, None
        if conn is None:
            return
        with contextlib.suppress(*_TRANSIENT):
            await conn.remove_listener(NOTIFY_CHANNEL, self._on_notify)
        with contextlib.suppress(*_TRANSIENT):
            await self.pool.release(conn, timeout=self.settings.db_timeout_s)


class _PublishFailed(Exception):
    def __init__(self, schema: str, seqs: list[int], cause: BaseException) -> None:
        super().__init__(f"publishing {schema}.outbox failed: {cause}")
        self.schema = schema
        self.seqs = seqs
        self.cause = cause


def _describe(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
