"""The stream consumer inside a worker process: consumer group entries -> handlers, as tasks.

What it does, per worker process (``StreamConsumer``, started from the arq worker's
``on_startup``, see :mod:`.worker`):

* creates its consumer group on each stream it handles, from ``0`` with ``MKSTREAM``, and again
  whenever Redis answers ``NOGROUP`` (a restart that lost the data);
* runs each entry's handler itself, as an asyncio task, at most ``max_jobs`` at once, with
  the worker's arq ctx (see :mod:`.handling`), within ``handler_timeout_s``;
* reads with ``XREADGROUP`` (blocking up to ``read_block_ms``) only as many entries as it has
  free slots (``max_jobs`` minus running and ready), split across its streams, so backlog
  stays in the stream as the group's **lag** (what an autoscaler reads);
* after a handler succeeded, writes the entry's done marker, then acknowledges it (``XACK``,
  batched); it moves the entry to ``<stream>:dead`` (acknowledging it) at once for a permanent
  failure, an unknown type or a body that does not decode; when a transient failure outlasts
  the retry horizon; after ``max_tries`` unexpected errors; after ``max_deliveries``
  deliveries (see :mod:`.retries`). Entries of known types this group has no handler for are
  acknowledged without running anything;
* keeps an entry that waits for a retry **pending** and schedules its next attempt in memory
  (a heap of due times, :mod:`.scheduling`, checked every ``retry_poll_s``); its retry state
  is in Redis;
* keeps the entries it holds fresh (``XCLAIM ... JUSTID`` heartbeat, every third of
  ``claim_idle_ms``), and takes over entries idle longer than ``claim_idle_ms`` (their consumer
  died) with ``XAUTOCLAIM``: one with a done marker is acknowledged without running again, one
  waiting for a retry keeps its schedule (its takeovers while it waited are not counted as
  deaths of workers on it), any other runs with its delivery count as ``job_try``;
* on shutdown stops reading, lets running handlers finish within ``grace_period_s``, cancels
  the rest, and leaves everything not handled pending for the other consumers;
* runs each of its loops (read, claim, retries, heartbeat, acks) supervised
  (:mod:`xtyl_common.supervise`): a failed pass is logged (with its traceback when it is not a
  Redis error) and backed off (0.1 s doubling to 5 s), never the end of the loop; only
  :meth:`StreamConsumer.stop` ends them. :meth:`StreamConsumer.healthy` and
  :meth:`StreamConsumer.state` say whether every loop runs and completes passes (for a
  worker's health listener, whose ``/readyz`` calls :meth:`StreamConsumer.check_health`);
* shows what it does (:mod:`.telemetry`): each handler run by outcome, entries dead-lettered
  and taken over, each loop's last completed pass (``worker`` label: ``worker=``, the group's
  name by default) and, every :data:`GAUGES_INTERVAL_S` (loop ``stream-gauges``), the group's
  lag and pending entries as ``make streams`` reads them; each handler attempt runs in a span
  continuing the trace the event carried, while its own Redis polling is not traced.

A new entry reaches its handler after one blocking read, nothing polls for new work: 0.35-0.7 ms
p50 from ``XADD`` to the handler, and 2,700-4,000 no-op entries/s through one process at
``max_jobs`` 10, on a busy 2-core machine (``bench/bench_events.py``; an arq job per entry, the
design before, measured 1.35-1.45 ms and 600-730 /s in the same runs). arq only hosts the
process (``on_startup``/``on_shutdown``, the service's own jobs, cron jobs); no stream entry
becomes an arq job.

Delivery is at least once: a handler may see an event again (a worker died after the handler
and before the done marker was written, the marker expired, or a relay republished), so every
handler must be idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import structlog
from redis.asyncio import Redis

from xtyl_common.errors import Unavailable
from xtyl_common.events.contracts import EVENT_TYPES, Event, stream_key, type_of
from xtyl_common.events.handling import TRANSIENT, Entry, EntryHandling, Handler
from xtyl_common.events.ops import group_counts
from xtyl_common.events.retries import now_ms
from xtyl_common.events.scheduling import EntryScheduler
from xtyl_common.events.settings import EventSettings
from xtyl_common.events.streams import (
    EVENT_FIELD,
    TYPE_FIELD,
    Fields,
    delivery_counts,
    ensure_group,
    is_nogroup,
)
from xtyl_common.events.telemetry import ConsumerMetrics, LoopHeartbeat, untraced
from xtyl_common.supervise import Backoff, LoopHealth, LoopState, describe, log_failure

log = structlog.stdlib.get_logger("xtyl.events.consumer")

#: How often a consumer reads its group's lag and pending count into its gauges.
GAUGES_INTERVAL_S = 5.0


def default_consumer_name() -> str:
    """Unique per process start, so a restarted pod never inherits a dead one's entries."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class StreamConsumer:
    """Feeds one consumer group's entries to handlers, at most ``max_jobs`` at once.

    ``handlers`` maps event types (classes or ``"file.uploaded"`` strings) to async handlers;
    the streams read are those of the handled types' domains.
    """

    def __init__(
        self,
        redis: Redis,
        *,
        group: str,
        handlers: Mapping[type[Event] | str, Handler],
        settings: EventSettings | None = None,
        name: str | None = None,
        worker: str | None = None,
    ) -> None:
        self.redis = redis
        self.group = group
        self.settings = s = settings or EventSettings()
        self.handlers: dict[str, Handler] = {}
        for key, handler in handlers.items():
            event_type = key if isinstance(key, str) else type_of(key)
            if event_type not in EVENT_TYPES:
                raise ValueError(f"no event type {event_type!r} in xtyl_common.events.contracts")
            self.handlers[event_type] = handler
        if not self.handlers:
            raise ValueError("a stream consumer needs at least one handler")
        domains = {EVENT_TYPES[t].domain for t in self.handlers}
        self.streams: list[str] = sorted(stream_key(d, s.stream_prefix) for d in domains)
        self.name = name or default_consumer_name()
        #: The ``worker`` label of its loops' heartbeats (the group's name by default).
        self.worker = worker or group
        self.metrics = ConsumerMetrics(group, self.streams, self.handlers)
        self._ctx: dict[Any, Any] = {}
        self._stopping = asyncio.Event()
        self._readers: list[asyncio.Task[None]] = []
        self._heartbeat: asyncio.Task[None] | None = None
        self._acker: asyncio.Task[None] | None = None
        self._loops: dict[str, LoopHealth] = {}
        self._claim_cursor: dict[str, str] = dict.fromkeys(self.streams, "0-0")
        self._handling = EntryHandling(
            redis,
            group=group,
            consumer=self.name,
            handlers=self.handlers,
            settings=s,
            metrics=self.metrics,
        )
        self._scheduler = EntryScheduler(
            lambda entry: self._handling.run(entry, self._ctx), max_jobs=s.max_jobs
        )

    # --- life cycle -----------------------------------------------------------------------

    @property
    def inflight(self) -> int:
        """Entries this consumer holds (running, ready, waiting to retry or to be acked)."""
        return len(self._scheduler.entries)

    @property
    def running(self) -> int:
        """Handlers running now (at most ``max_jobs``)."""
        return len(self._scheduler.running)

    @property
    def free_slots(self) -> int:
        """How many more entries it takes now: ``max_jobs`` minus running and ready ones."""
        return self._scheduler.free_slots

    async def start(self, ctx: dict[Any, Any] | None = None) -> None:
        """Create the groups and start reading; ``ctx`` is the arq worker's ctx (shared live
        with the handlers: each attempt gets a copy of it as it is then)."""
        s = self.settings
        self._ctx = ctx if ctx is not None else {}
        self._stopping.clear()
        try:
            with untraced():
                await self._ensure_groups()
        except TRANSIENT as exc:
            log.warning("consumer_group_setup_failed", error=describe(exc))
        self._readers = [
            self._spawn("stream-read", self.read_once, 0.0),
            self._spawn("stream-claim", self.claim_once, s.claim_idle_ms / 2000),
            self._spawn("stream-retries", self.start_due_retries, s.retry_poll_s),
            self._spawn("stream-gauges", self.refresh_gauges, GAUGES_INTERVAL_S),
        ]
        self._heartbeat = self._spawn("stream-heartbeat", self.heartbeat, s.claim_idle_ms / 3000)
        self._acker = self._spawn("stream-acks", self.acknowledge, 0.0)
        log.info("consumer_started", group=self.group, consumer=self.name, streams=self.streams)

    async def stop(self, grace_period_s: float | None = None) -> None:
        """Stop reading, let running handlers finish within the grace period, cancel the rest
        (their entries stay pending and are taken over by other consumers)."""
        grace = self.settings.grace_period_s if grace_period_s is None else grace_period_s
        self._stopping.set()
        self._scheduler.close()
        await _finish(self._readers, self.settings.read_block_ms / 1000 + 1.0)
        self._readers = []
        finished, left = await self._scheduler.drain(grace)
        if self._acker is not None:
            self._handling.wake()
            await _finish([self._acker], 0.0)
            self._acker = None
            if self._handling.acks_queued:  # what finished in the grace period
                with contextlib.suppress(*TRANSIENT):
                    await self.acknowledge()
        if self._heartbeat is not None:
            await _finish([self._heartbeat], 0.0)
            self._heartbeat = None
        log.info(
            "consumer_stopped",
            group=self.group,
            consumer=self.name,
            finished_in_grace=finished,
            cancelled=left,
            left_pending=len(self._scheduler.entries),
        )
        self._scheduler.clear()

    # --- supervision ----------------------------------------------------------------------

    def healthy(self) -> bool:
        """Every loop runs and has completed a pass lately (False while Redis is down for
        longer than a loop's ``stale_after_s``, and once stopped)."""
        return bool(self._loops) and all(h.healthy() for h in self._loops.values())

    def state(self) -> list[LoopState]:
        """Each loop's health as plain data, for a worker's health listener."""
        return [health.state() for health in self._loops.values()]

    async def check_health(self) -> None:
        """A ``/readyz`` check (a worker's health listener): raises
        :class:`~xtyl_common.errors.Unavailable` with each unhealthy loop's reason."""
        if not self._loops:
            raise Unavailable("the stream consumer has not started", code="consumer_unhealthy")
        problems = [p for health in self._loops.values() if (p := health.problem()) is not None]
        if problems:
            raise Unavailable("; ".join(problems), code="consumer_unhealthy")

    def _spawn(
        self, name: str, step: Callable[[], Awaitable[object]], pause_s: float
    ) -> asyncio.Task[None]:
        s = self.settings
        health = LoopHealth(
            name, stale_after_s=max(30.0, 3 * pause_s) + s.read_block_ms / 1000 + s.redis_timeout_s
        )
        self._loops[name] = health
        beat = LoopHeartbeat(self.worker, name)
        task = asyncio.create_task(self._supervised(step, pause_s, health, beat), name=name)
        health.watch(task)
        return task

    async def _supervised(
        self,
        step: Callable[[], Awaitable[object]],
        pause_s: float,
        health: LoopHealth,
        beat: LoopHeartbeat,
    ) -> None:
        """Run :meth:`_loop` until :meth:`stop`. Whatever escapes it (a bug, an error nobody
        foresaw) is logged with its traceback and backed off: only cancellation ends it.
        Untraced: each handler attempt has a span of its own (:mod:`.handling`)."""
        with untraced():
            await self._supervise(step, pause_s, health, beat)

    async def _supervise(
        self,
        step: Callable[[], Awaitable[object]],
        pause_s: float,
        health: LoopHealth,
        beat: LoopHeartbeat,
    ) -> None:
        backoff = Backoff(0.1, 5.0)
        while not self._stopping.is_set():
            try:
                await self._loop(step, pause_s, health, backoff, beat)
            except Exception as exc:
                delay = backoff.next_delay()
                health.failed(exc)
                log_failure(
                    log,
                    "consumer_step_failed",
                    exc,
                    expected=TRANSIENT,
                    step=step.__name__,
                    retry_in_s=round(delay, 2),
                )
                await self._pause(delay)

    async def _loop(
        self,
        step: Callable[[], Awaitable[object]],
        pause_s: float,
        health: LoopHealth,
        backoff: Backoff,
        beat: LoopHeartbeat,
    ) -> None:
        while not self._stopping.is_set():
            try:
                await step()
                backoff.reset()
                health.passed()
                beat.beat()
            except TRANSIENT as exc:
                if is_nogroup(exc):
                    with contextlib.suppress(*TRANSIENT):
                        await self._ensure_groups()
                    continue
                health.failed(exc)
                log.warning("consumer_redis_failed", step=step.__name__, error=describe(exc))
                await self._pause(backoff.next_delay())
                continue
            if pause_s:
                await self._pause(pause_s)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stopping.wait()

    async def _ensure_groups(self) -> None:
        for stream in self.streams:
            created = await ensure_group(
                self.redis, stream, self.group, timeout_s=self.settings.redis_timeout_s
            )
            if created:  # a new group (Redis lost the old one): scan its pending list from 0
                self._claim_cursor[stream] = "0-0"

    # --- reading --------------------------------------------------------------------------

    async def read_once(self) -> None:
        """One ``XREADGROUP`` of at most the free slots (waits for a slot when none is free)."""
        s = self.settings
        self._scheduler.start_due(now_ms())  # retries whose time has come take slots first
        free = self.free_slots
        if free <= 0:
            self._scheduler.slot_freed.clear()
            if self.free_slots <= 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(s.read_block_ms / 1000):
                        await self._scheduler.slot_freed.wait()
            return
        # COUNT applies per stream: split the free slots (at most one extra per stream).
        count = max(1, free // len(self.streams))
        async with asyncio.timeout(s.read_block_ms / 1000 + s.redis_timeout_s):
            response = await self.redis.xreadgroup(
                self.group,
                self.name,
                dict.fromkeys(self.streams, ">"),
                count=count,
                block=s.read_block_ms,
            )
        entries = [
            (stream.decode(), entry_id.decode(), fields)
            for stream, stream_entries in response or []
            for entry_id, fields in stream_entries
        ]
        if entries:
            await self._accept(entries, deliveries={})

    async def claim_once(self) -> None:
        """Take over entries idle longer than ``claim_idle_ms`` (``XAUTOCLAIM``)."""
        s = self.settings
        for stream in self.streams:
            free = self.free_slots
            if free <= 0:
                return
            async with asyncio.timeout(s.redis_timeout_s):
                cursor, claimed, deleted = await self.redis.xautoclaim(
                    stream,
                    self.group,
                    self.name,
                    min_idle_time=s.claim_idle_ms,
                    start_id=self._claim_cursor[stream],
                    count=free,
                )
            self._claim_cursor[stream] = cursor.decode()
            for entry_id in deleted or []:
                log.error(
                    "entry_lost",
                    stream=stream,
                    group=self.group,
                    entry_id=entry_id.decode(),
                    reason="trimmed from the stream before it was handled",
                )
            entries = [
                (stream, eid.decode(), fields) for eid, fields in claimed if fields is not None
            ]
            entries = [e for e in entries if (stream, e[1]) not in self._scheduler.entries]
            if not entries:
                continue
            self.metrics.redelivered(stream, len(entries))
            deliveries = await delivery_counts(
                self.redis, stream, self.group, [e[1] for e in entries], timeout_s=s.redis_timeout_s
            )
            log.info("entries_claimed", stream=stream, group=self.group, count=len(entries))
            await self._accept(entries, deliveries=deliveries)

    async def _accept(
        self, entries: Iterable[tuple[str, str, Fields]], *, deliveries: Mapping[str, int]
    ) -> None:
        """Take entries read (``deliveries`` empty) or taken over (their delivery counts)."""
        s = self.settings
        entries = [e for e in entries if (e[0], e[1]) not in self._scheduler.entries]
        taken_over = [(stream, eid) for stream, eid, _ in entries if eid in deliveries]
        # Taken over: one that was handled is only acknowledged; one that waits for a retry
        # keeps its schedule, and its takeovers while it waited (one per failure at most) are
        # not deaths of workers on it.
        done = await self._handling.already_done(taken_over)
        retrying = await self._handling.retry_states(taken_over)
        now = now_ms()
        for stream, entry_id, fields in entries:
            event_type = fields.get(TYPE_FIELD, b"").decode(errors="replace")
            count = deliveries.get(entry_id, 1)
            state = retrying.get(entry_id)
            waited = state.failures if state is not None else 0
            if event_type not in EVENT_TYPES or EVENT_FIELD not in fields:
                await self._handling.dead_letter(
                    (stream, entry_id), fields, f"unknown event type {event_type!r}", count
                )
            elif event_type not in self.handlers:
                self._handling.queue_ack(stream, [entry_id])
            elif (stream, entry_id) in done:
                log.info("entry_already_handled", stream=stream, entry_id=entry_id)
                self._handling.queue_ack(stream, [entry_id])
            elif count - waited > s.max_deliveries:
                error = f"delivered {count} times (max {s.max_deliveries}); workers died on it"
                await self._handling.dead_letter((stream, entry_id), fields, error, count)
            else:
                entry = Entry(
                    stream, entry_id, event_type, fields[EVENT_FIELD], deliveries=count, state=state
                )
                due = state.next_attempt_ms if state is not None else None
                self._scheduler.hold(entry, due_ms=due, now_ms=now)
        self._scheduler.fill()

    async def refresh_gauges(self) -> None:
        """Set ``xtyl_stream_lag`` and ``xtyl_stream_pending`` of the group on each stream from
        ``XINFO GROUPS``, as ``make streams`` reads them (:func:`.ops.group_counts`)."""
        for stream in self.streams:
            counts = await group_counts(self.redis, stream, timeout_s=self.settings.redis_timeout_s)
            for group in counts:
                if group.name == self.group:
                    self.metrics.group_counts(stream, pending=group.pending, lag=group.lag)

    async def start_due_retries(self) -> None:
        """Start the retries whose time has come (when slots are free)."""
        self._scheduler.start_due(now_ms())

    # --- keeping entries --------------------------------------------------------------------

    async def acknowledge(self) -> None:
        """XACK what finished (batched); forget the entries acknowledged."""
        for key in await self._handling.flush_acks():
            self._scheduler.forget(key)

    async def heartbeat(self) -> None:
        """Reset the idle time of the entries this consumer holds; forget the ones that are no
        longer pending (acknowledged elsewhere, or lost with Redis' data)."""
        s = self.settings
        by_stream: dict[str, list[str]] = {}
        for stream, entry_id in self._scheduler.entries:
            by_stream.setdefault(stream, []).append(entry_id)
        for stream, entry_ids in by_stream.items():
            async with asyncio.timeout(s.redis_timeout_s):
                kept: list[bytes] = await self.redis.xclaim(
                    stream, self.group, self.name, 0, list[Any](entry_ids), justid=True
                )
            still_pending = {k.decode() for k in kept}
            for entry_id in entry_ids:
                if entry_id not in still_pending:
                    self._scheduler.forget((stream, entry_id))


async def _finish(tasks: list[asyncio.Task[None]], wait_s: float) -> None:
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=wait_s) if wait_s > 0 else (set(), set(tasks))
    for task in pending:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
