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
older than ``outbox_retention_s`` are deleted every ``prune_interval_s``, and then the streams'
entries every group has handled are trimmed past ``stream_retention_s`` (dead letters past
``dead_letter_retention_s``: :mod:`.retention`). Every
``recovery_check_interval_s`` the relay also checks that Redis still holds what it was given
(:mod:`xtyl_common.events.recovery`): after Redis lost its data, the rows it lost are
published again.

**The loop is supervised** (:mod:`xtyl_common.supervise`): whatever a pass raises (Postgres
or Redis gone, a timeout, a LISTEN connection that broke and went back to the pool, a bug),
the relay logs it (``relay_failed``; with the traceback when it is not a dependency error),
backs off (``relay_backoff_initial_s`` doubling to ``relay_backoff_max_s``, jittered, never
above it) and tries again; only :meth:`OutboxRelay.stop` (cancellation) ends it. So after a
Postgres restart the pending rows are published at most ``relay_backoff_max_s`` after its
return. :meth:`OutboxRelay.check_health` is a ``/readyz`` check: it fails when the relay's task
has ended, or when no pass has succeeded for ``stale_after_s`` while Postgres and Redis both
answer (a relay waiting for a dependency that is down is healthy: that dependency's own check
says what is wrong). :meth:`OutboxRelay.state` is the same as plain data, for a worker's
health listener.

**What operators see** (:mod:`.telemetry`): rows published (``xtyl_relay_published_total``)
and failed passes (``xtyl_relay_failures_total``) per outbox; after each pass, what still
waits (``xtyl_outbox_rows_waiting``, ``xtyl_outbox_oldest_age_seconds``: one query on the
partial index of unpublished rows, also after a pass Redis refused, so a backlog shows while
Redis is down); at each completed pass ``xtyl_worker_loop_last_pass_timestamp_seconds``
with ``loop="outbox-relay"`` and ``worker`` the process: the worker whose start-up started the
relay (rag-worker, see :mod:`.worker_health`), else named after the outbox (``gateway``,
``storage``), or ``worker=`` given. Each row's trace context (written with it, see
:mod:`.outbox`) goes into the envelope, with a ``publish <type>`` span per traced row; the
relay's own queries are not traced.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

import asyncpg
import msgspec
import structlog
from opentelemetry.trace import Span
from redis.asyncio import Redis
from redis.exceptions import RedisError

from xtyl_common.errors import Unavailable
from xtyl_common.events.contracts import DOMAINS, stream_key
from xtyl_common.events.outbox import check_schema_name
from xtyl_common.events.recovery import EventSource, StreamRecovery
from xtyl_common.events.retention import trim_streams
from xtyl_common.events.settings import EventSettings
from xtyl_common.events.streams import EVENT_FIELD, TYPE_FIELD
from xtyl_common.events.telemetry import (
    RELAY_LOOP,
    LoopHeartbeat,
    RelayMetrics,
    end_publish_spans,
    publish_span,
    trace_carrier,
    untraced,
)
from xtyl_common.events.worker_health import joining_worker
from xtyl_common.supervise import Backoff, LoopHealth, LoopState, describe, log_failure

log = structlog.stdlib.get_logger("xtyl.events.relay")

NOTIFY_CHANNEL = "xtyl_outbox"
_LOCK_CLASS = 7_291_002  # first key of the per-outbox advisory lock
_PRUNE_CHUNK = 5_000

#: Dependency errors: logged as warnings. Anything else a pass raises is logged with its
#: traceback; either way the relay backs off and goes on.
_TRANSIENT = (RedisError, OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)
#: How long a health probe of Postgres or Redis may take (inside ``/readyz``'s own timeout).
_PROBE_TIMEOUT_S = 1.0

# {outbox} is a checked identifier (check_schema_name), never user input.
_SELECT_BATCH = (
    "select seq, id, stream, type, version, payload::text as payload, producer, request_id,"
    " occurred_at, traceparent, tracestate from {outbox} where published_at is null"
    " order by seq limit $1 for update skip locked"
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
#: What waits: one scan of the partial index of unpublished rows (a few rows after a pass).
_BACKLOG = (
    "select count(*) as waiting, coalesce(extract(epoch from clock_timestamp()"
    " - min(created_at)), 0)::float8 as oldest_age_s from {outbox} where published_at is null"
)
_PRUNE = (
    "delete from {outbox} where seq in (select seq from {outbox}"
    " where published_at < now() - make_interval(secs => $1) order by published_at limit $2)"
)


def _sql(template: str, schema: str) -> str:
    return template.format(outbox=f"{schema}.outbox")


class _WireEnvelope(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The envelope as the relay builds it from a row: the payload stays raw JSON (the trace
    context only when the row has one)."""

    type: str
    producer: str
    id: UUID
    occurred_at: datetime
    request_id: str | None
    version: int
    traceparent: str | None = None
    tracestate: str | None = None
    payload: msgspec.Raw


_wire_encoder = msgspec.json.Encoder()


def stale_after_s(settings: EventSettings) -> float:
    """How long without a successful pass makes a relay unhealthy: ten poll intervals plus
    two of its longest backoffs plus one slow batch (35 s with the defaults)."""
    s = settings
    return (
        10 * s.relay_poll_interval_s
        + 2 * s.relay_backoff_max_s
        + s.db_timeout_s
        + s.redis_timeout_s
    )


class OutboxRelay:
    """Publishes the outboxes of ``schemas``; use :meth:`start`/:meth:`stop` from a lifespan
    or arq's ``on_startup``/``on_shutdown`` (or run :meth:`run` as a task of your own), and
    register :meth:`check_health` as a readiness check."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        redis: Redis,
        *,
        schemas: Sequence[str],
        settings: EventSettings | None = None,
        listen: bool = True,
        sources: Sequence[EventSource] = (),
        worker: str | None = None,
    ) -> None:
        self.pool = pool
        self.redis = redis
        self.schemas = [check_schema_name(s) for s in schemas]
        self.settings = settings or EventSettings()
        self.listen = listen
        #: Notices that Redis lost its data and queues the lost rows again (see .recovery).
        self.recovery = StreamRecovery(
            pool, redis, schemas=self.schemas, settings=self.settings, sources=sources
        )
        self._wakeup = asyncio.Event()
        self._stopping = asyncio.Event()
        self._listen_conn: asyncpg.pool.PoolConnectionProxy | None = None
        self._task: asyncio.Task[None] | None = None
        self.health = LoopHealth("outbox relay", stale_after_s=stale_after_s(self.settings))
        #: The worker started with it, if any (see .worker_health): it reports this relay.
        self.joined = joining_worker()
        if worker is None:
            worker = self.joined.name if self.joined is not None else _worker_of(self.schemas)
        #: The ``worker`` label of its loop's heartbeat (gateway, storage, rag-worker).
        self.worker = worker
        self._heartbeat = LoopHeartbeat(worker, RELAY_LOOP)
        self._metrics = {schema: RelayMetrics(schema) for schema in self.schemas}
        self._schema_in_pass: str | None = None

    # --- one pass -------------------------------------------------------------------------

    async def publish_pending(self) -> int:
        """Publish everything pending in every outbox (batch after batch); rows published."""
        total = 0
        for schema in self.schemas:
            self._schema_in_pass = schema
            while True:
                published = await self.publish_batch(schema)
                total += published or 0
                if published:
                    self.health.progressed()
                if published is None or published < self.settings.relay_batch_size:
                    break
            await self.measure_backlog(schema)
        self._schema_in_pass = None
        return total

    async def measure_backlog(self, schema: str) -> tuple[int, float]:
        """Rows of ``schema``'s outbox waiting to be published, and the oldest one's age in
        seconds (0 when none waits); sets ``xtyl_outbox_rows_waiting`` and
        ``xtyl_outbox_oldest_age_seconds``."""
        timeout = self.settings.db_timeout_s
        async with self.pool.acquire(timeout=timeout) as conn:
            row = await conn.fetchrow(_sql(_BACKLOG, schema), timeout=timeout)
        assert row is not None  # an aggregate always has a row
        waiting, oldest_age_s = int(row["waiting"]), float(row["oldest_age_s"])
        self._metrics[schema].backlog(waiting, oldest_age_s)
        return waiting, oldest_age_s

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
                entry_ids = await self._xadd(schema, rows)
            except _TRANSIENT as exc:
                raise _PublishFailed(schema, [r["seq"] for r in rows], exc) from exc
            await conn.execute(
                _sql(_MARK_PUBLISHED, schema),
                [r["seq"] for r in rows],
                entry_ids,
                timeout=s.db_timeout_s,
            )
        self._metrics[schema].published.inc(len(rows))
        log.debug("events_published", schema=schema, count=len(rows))
        return len(rows)

    async def _xadd(self, schema: str, rows: Sequence[asyncpg.Record]) -> list[str]:
        s = self.settings
        spans: list[tuple[Span | None, str | None]] = []
        try:
            async with (
                asyncio.timeout(s.redis_timeout_s),
                self.redis.pipeline(transaction=True) as pipe,
            ):
                for row in rows:
                    stream = stream_key(row["stream"], s.stream_prefix)
                    carrier = trace_carrier(row["traceparent"], row["tracestate"])
                    spans.append((publish_span(row["type"], stream, schema, carrier), None))
                    envelope = _WireEnvelope(
                        type=row["type"],
                        producer=row["producer"],
                        id=row["id"],
                        occurred_at=row["occurred_at"],
                        request_id=row["request_id"],
                        version=row["version"],
                        traceparent=row["traceparent"],
                        tracestate=row["tracestate"],
                        payload=msgspec.Raw(row["payload"].encode()),
                    )
                    fields = {
                        TYPE_FIELD: row["type"].encode(),
                        EVENT_FIELD: _wire_encoder.encode(envelope),
                    }
                    pipe.xadd(stream, fields, maxlen=s.stream_maxlen, approximate=True)  # pyright: ignore[reportArgumentType]
                results: list[bytes] = await pipe.execute()
        except BaseException as exc:
            end_publish_spans(spans, exc)
            raise
        entry_ids = [r.decode() for r in results]
        end_publish_spans(
            (span, entry_id) for (span, _), entry_id in zip(spans, entry_ids, strict=True)
        )
        return entry_ids

    async def _record_failure(self, failure: _PublishFailed) -> None:
        """Count the failed attempt on the rows (best effort: the database may be down too)."""
        try:
            async with self.pool.acquire(timeout=self.settings.db_timeout_s) as conn:
                await conn.execute(
                    _sql(_RECORD_FAILURE, failure.schema),
                    failure.seqs,
                    describe(failure.cause)[:500],
                    timeout=self.settings.db_timeout_s,
                )
        except Exception as exc:
            log_failure(log, "relay_record_failure_failed", exc, expected=_TRANSIENT)

    async def _measure_backlog_quietly(self, schema: str) -> None:
        try:
            await self.measure_backlog(schema)
        except Exception as exc:
            log_failure(log, "relay_backlog_not_measured", exc, expected=_TRANSIENT)

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

    async def trim_streams(self) -> int:
        """Trim the streams' handled entries and dead letters past their retention (see
        :mod:`.retention`); entries removed."""
        s = self.settings
        removed = await trim_streams(
            self.redis,
            s.stream_prefix,
            DOMAINS,
            retention_s=s.stream_retention_s,
            dead_letter_retention_s=s.dead_letter_retention_s,
            timeout_s=s.redis_timeout_s,
        )
        if removed:
            log.info("streams_trimmed", removed=removed)
        return sum(removed.values())

    async def _trim_streams_quietly(self) -> None:
        """Housekeeping: a trim that fails is logged and tried again at the next prune; it
        never fails the pass (publishing is what the relay's health is about)."""
        try:
            await self.trim_streams()
        except Exception as exc:
            log_failure(log, "streams_not_trimmed", exc, expected=_TRANSIENT)

    # --- the loop -------------------------------------------------------------------------

    async def run(self) -> None:
        """Publish until :meth:`stop`: on NOTIFY, every poll interval, with backoff after a
        failed pass. No exception ends it: each is logged, backed off and retried."""
        s = self.settings
        backoff = Backoff(s.relay_backoff_initial_s, s.relay_backoff_max_s)
        log.info("relay_started", schemas=self.schemas, stream_prefix=s.stream_prefix)
        try:
            with untraced():  # its polling; a row with a trace context gets a span of its own
                await self._passes(backoff)
        finally:
            await self._drop_listener()
            log.info("relay_stopped")

    async def _passes(self, backoff: Backoff) -> None:
        s = self.settings
        next_prune = time.monotonic()
        while not self._stopping.is_set():
            self._wakeup.clear()
            try:
                await self._ensure_listening()
                published = await self.publish_pending()
                if time.monotonic() >= next_prune:
                    next_prune = time.monotonic() + s.prune_interval_s
                    await self.prune()
                    await self._trim_streams_quietly()
                if await self.recovery.check_if_due():
                    self._wakeup.set()  # rows Redis lost are pending again: publish now
            except Exception as exc:
                delay = backoff.next_delay()
                self.health.failed(exc)
                self._count_failure(exc)
                await self._after_failure(exc, delay)
                await self._pause(delay)
                continue
            self.health.passed()
            self._heartbeat.beat()
            backoff.reset()
            if published:
                log.info("events_published", count=published)
            await self._pause(s.relay_poll_interval_s, wake_on_notify=True)

    def _count_failure(self, exc: Exception) -> None:
        """``xtyl_relay_failures_total`` of the outbox the pass failed on (every outbox of the
        relay when it failed outside one: pruning, recovery)."""
        schema = exc.schema if isinstance(exc, _PublishFailed) else self._schema_in_pass
        self._schema_in_pass = None
        for failed in [schema] if schema is not None else self.schemas:
            self._metrics[failed].failures.inc()

    async def _after_failure(self, exc: Exception, retry_in_s: float) -> None:
        """Log a failed pass; keep what can be kept (never raises)."""
        retry = round(retry_in_s, 2)
        if isinstance(exc, _PublishFailed):
            # Redis refused the rows: Postgres is fine, keep the LISTEN connection, and show
            # the backlog growing meanwhile.
            await self._record_failure(exc)
            await self._measure_backlog_quietly(exc.schema)
            log_failure(
                log,
                "relay_publish_failed",
                exc.cause,
                expected=_TRANSIENT,
                schema=exc.schema,
                rows=len(exc.seqs),
                retry_in_s=retry,
            )
            return
        log_failure(log, "relay_failed", exc, expected=_TRANSIENT, retry_in_s=retry)
        await self._drop_listener()

    def start(self) -> asyncio.Task[None]:
        self._stopping.clear()
        self._task = asyncio.create_task(self.run(), name="outbox-relay")
        self.health.watch(self._task)
        if self.joined is not None:
            self.joined.add("outbox_relay", self.check_health, lambda: [self.state()])
        return self._task

    async def stop(self, timeout_s: float = 10.0) -> None:
        self._stopping.set()
        self._wakeup.set()
        task, self._task = self._task, None
        if task is None:
            return
        try:
            done, _ = await asyncio.wait([task], timeout=timeout_s)
        except asyncio.CancelledError:
            task.cancel()
            raise
        if not done:
            log.warning("relay_stop_timeout", waited_s=timeout_s)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        elif not task.cancelled() and (error := task.exception()) is not None:
            # run() never raises: only a task someone else broke gets here
            log.error("relay_ended_with_error", error=describe(error), exc_info=error)

    async def _pause(self, seconds: float, *, wake_on_notify: bool = False) -> None:
        waits = [asyncio.ensure_future(self._stopping.wait())]
        if wake_on_notify:
            waits.append(asyncio.ensure_future(self._wakeup.wait()))
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waits:
                waiter.cancel()

    # --- health ---------------------------------------------------------------------------

    def state(self) -> LoopState:
        """The relay loop's health as plain data (for a worker's health listener)."""
        return self.health.state()

    def healthy(self) -> bool:
        """Running, and a pass succeeded within ``stale_after_s`` (no dependency probe)."""
        return self.health.healthy()

    async def check_health(self) -> None:
        """``/readyz`` check: raises :class:`~xtyl_common.errors.Unavailable` with the reason
        when the relay's task has ended, or when no pass has succeeded for ``stale_after_s``
        although Postgres and Redis both answer. While one of them is down the relay is only
        waiting for it, and that dependency's own check is the one to fail."""
        problem = self.health.problem()
        if problem is None:
            return
        if self.health.running and not await self._dependencies_answer():
            return
        raise Unavailable(problem, code="outbox_relay_unhealthy")

    async def _dependencies_answer(self) -> bool:
        try:
            async with asyncio.timeout(_PROBE_TIMEOUT_S):
                async with self.pool.acquire() as conn:
                    await conn.fetchval("select 1")
                await self.redis.ping()  # pyright: ignore[reportUnknownMemberType]
        except Exception:  # the probe's answer is the point, not its error
            return False
        return True

    # --- LISTEN ---------------------------------------------------------------------------

    def _listening(self) -> bool:
        conn = self._listen_conn
        if conn is None:
            return False
        try:
            return not conn.is_closed()
        except asyncpg.InterfaceError:
            # its connection broke (a Postgres restart) and asyncpg gave it back to the pool
            return False

    async def _ensure_listening(self) -> None:
        """LISTEN on a pooled connection, again after it broke. Failing to is not a failed
        pass (the poll still publishes): it is logged and tried again next pass."""
        if not self.listen or self._listening():
            return
        await self._drop_listener()
        try:
            conn = await self.pool.acquire(timeout=self.settings.db_timeout_s)
        except Exception as exc:
            log_failure(log, "relay_listen_failed", exc, expected=_TRANSIENT)
            return
        try:
            await conn.add_listener(NOTIFY_CHANNEL, self._on_notify)
        except Exception as exc:
            log_failure(log, "relay_listen_failed", exc, expected=_TRANSIENT)
            await self._release(conn)
            return
        self._listen_conn = conn

    def _on_notify(self, *_: object) -> None:
        self._wakeup.set()

    async def _drop_listener(self) -> None:
        conn, self._listen_conn = self._listen_conn, None
        if conn is None:
            return
        try:
            await conn.remove_listener(NOTIFY_CHANNEL, self._on_notify)
        except asyncpg.InterfaceError:
            pass  # already back in the pool: its connection broke, and the listener with it
        except Exception as exc:
            log_failure(log, "relay_unlisten_failed", exc, expected=_TRANSIENT)
        await self._release(conn)

    async def _release(self, conn: asyncpg.pool.PoolConnectionProxy) -> None:
        try:
            await self.pool.release(conn, timeout=self.settings.db_timeout_s)
        except Exception as exc:
            log_failure(log, "relay_release_failed", exc, expected=_TRANSIENT)


def _worker_of(schemas: Sequence[str]) -> str:
    """The ``worker`` label of a relay no worker started: its process, named after its outbox
    (``xtyl_gateway`` -> ``gateway``, ``xtyl_storage`` -> ``storage``)."""
    return "+".join(schema.removeprefix("xtyl_") for schema in schemas) or "relay"


class _PublishFailed(Exception):
    def __init__(self, schema: str, seqs: list[int], cause: BaseException) -> None:
        super().__init__(f"publishing {schema}.outbox failed: {cause}")
        self.schema = schema
        self.seqs = seqs
        self.cause = cause
