"""The stream consumer inside an arq worker process: consumer group -> one arq job per entry.

What it does, per worker process (``StreamConsumer``, started from arq's ``on_startup``):

* creates its consumer group on each stream it handles, from ``0`` with ``MKSTREAM``, and again
  whenever Redis answers ``NOGROUP`` (a restart that lost the data);
* reads with ``XREADGROUP`` only as many entries as the process has free job slots
  (``max_jobs`` minus running), so backlog stays in the stream as the group's **lag** (what an
  autoscaler reads);
* turns each entry into one arq job whose id is ``<group>:<stream>:<entry id>``: a redelivered
  entry finds its job (queued, running or finished) instead of running twice while arq
  remembers it. Job payloads are msgpack (msgspec), never pickle;
* acknowledges (``XACK``) an entry when its handler succeeded, or when it was moved to
  ``<stream>:dead``: at once for a permanent failure, an unknown type or a body that does not
  decode; when a transient failure outlasts the retry horizon; after ``max_tries`` unexpected
  errors; after ``max_deliveries`` deliveries (see :mod:`.retries`). An entry waiting for a
  retry stays pending, its job deferred in the queue; a consumer that takes it over keeps its
  schedule. Entries of known types this group has no handler for are acknowledged without a
  job;
* keeps its running entries' idle time fresh (``XCLAIM ... JUSTID`` heartbeat), and takes over
  entries idle longer than ``claim_idle_ms`` (their consumer died) with ``XAUTOCLAIM``;
* on shutdown stops reading, lets running jobs finish within ``grace_period_s``, and leaves the
  rest pending for the other consumers;
* runs each of its loops (read, claim, retries, heartbeat, acks) supervised
  (:mod:`xtyl_common.supervise`): a failed pass is logged (with its traceback when it is not a
  Redis error) and backed off (0.1 s doubling to 5 s), never the end of the loop; only
  :meth:`StreamConsumer.stop` ends them. :meth:`StreamConsumer.healthy` and
  :meth:`StreamConsumer.state` say whether every loop runs and completes passes (for a
  worker's health listener).

Why the jobs do not go through arq's polled queue: plain arq finds new jobs by polling a sorted
set every ``poll_delay`` (0.5 s by default; measured here 271 ms p50 from enqueue to start, and
at most ~200 no-op jobs/s). Polling faster costs every idle worker hundreds of Redis calls a
second and still adds half a poll period. Instead each consumer drives an arq ``Worker`` of its
own (:class:`~xtyl_common.events.runner.StreamJobRunner`) on a private queue
(``<prefix>:jobs:<group>:<consumer>``): it enqueues the jobs for the entries it read (one
pipeline) and immediately hands their ids to arq's ``start_jobs``, which takes arq's
in-progress lock and runs ``run_job`` as usual: tries, timeouts, ``Retry`` deferral and results
are arq's. The only polling left is for deferred retries (``retry_poll_s``). A new entry reaches
its handler after one blocking read, one pipeline and arq's start, a few milliseconds (see
``bench/bench_events.py``). When another consumer takes over an entry whose job is still in
a dead consumer's queue, it moves the job to its own queue (same job id) and runs it there.

Delivery is at least once: a handler may see an event again (a worker died after the handler
and before ``XACK``, or a relay republished), so every handler must be idempotent.
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
from arq.utils import timestamp_ms
from arq.worker import func
from redis.asyncio import Redis

from xtyl_common.events import jobstore
from xtyl_common.events.contracts import (
    EVENT_TYPES,
    Event,
    stream_key,
    type_of,
)
from xtyl_common.events.handling import TRANSIENT, EntryHandling, Handler, describe
from xtyl_common.events.jobstore import JOB_FUNCTION, EntryJob
from xtyl_common.events.runner import StreamJobRunner
from xtyl_common.events.settings import EventSettings
from xtyl_common.events.streams import (
    EVENT_FIELD,
    TYPE_FIELD,
    Fields,
    ensure_group,
    is_nogroup,
)
from xtyl_common.supervise import Backoff, LoopHealth, LoopState, log_failure

log = structlog.stdlib.get_logger("xtyl.events.consumer")

#: arq must never refuse a try on its own: the job function counts tries and dead-letters.
_ARQ_MAX_TRIES = 1_000_000
_TRANSIENT = TRANSIENT


def default_consumer_name() -> str:
    """Unique per process start, so a restarted pod never inherits a dead one's queue."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class StreamConsumer:
    """Feeds one consumer group's entries to handlers through arq jobs.

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
        self.queue_name = f"{s.stream_prefix}:jobs:{group}:{self.name}"
        self._inflight: dict[str, EntryJob] = {}
        self._slot_freed = asyncio.Event()
        self._stopping = asyncio.Event()
        self._readers: list[asyncio.Task[None]] = []
        self._heartbeat: asyncio.Task[None] | None = None
        self._acker: asyncio.Task[None] | None = None
        self._loops: dict[str, LoopHealth] = {}
        self._claim_cursor: dict[str, str] = dict.fromkeys(self.streams, "0-0")
        self._runner: StreamJobRunner | None = None
        self._handling = EntryHandling(
            redis, group=group, consumer=self.name, handlers=self.handlers, settings=s
        )
        self._function = func(
            self._handling.run,
            name=JOB_FUNCTION,
            timeout=s.handler_timeout_s + 2 * s.redis_timeout_s,
            keep_result=s.keep_result_s,
            max_tries=_ARQ_MAX_TRIES,
        )

    # --- life cycle -----------------------------------------------------------------------

    @property
    def runner(self) -> StreamJobRunner:
        if self._runner is None:
            raise RuntimeError("the stream consumer is not started")
        return self._runner

    @property
    def inflight(self) -> int:
        """Entries this consumer holds a job for (queued, running or waiting to retry)."""
        return len(self._inflight)

    async def start(self, ctx: dict[str, Any] | None = None) -> None:
        """Create the groups and start reading; ``ctx`` is the arq worker's ctx (shared live
        with the handlers)."""
        s = self.settings
        self._stopping.clear()
        self._runner = StreamJobRunner(
            self._function,
            redis=self.redis,
            queue_name=self.queue_name,
            ctx=ctx if ctx is not None else {},
            max_jobs=s.max_jobs,
            job_timeout_s=s.handler_timeout_s + 2 * s.redis_timeout_s,
            keep_result_s=s.keep_result_s,
            max_tries=_ARQ_MAX_TRIES,
            on_job_done=self._job_done,
            on_slot_freed=self._slot_freed.set,
        )
        try:
            await self._ensure_groups()
        except _TRANSIENT as exc:
            log.warning("consumer_group_setup_failed", error=describe(exc))
        self._readers = [
            self._spawn("stream-read", self.read_once, 0.0),
            self._spawn("stream-claim", self.claim_once, s.claim_idle_ms / 2000),
            self._spawn("stream-retries", self.start_due_retries, s.retry_poll_s),
        ]
        self._heartbeat = self._spawn("stream-heartbeat", self.heartbeat, s.claim_idle_ms / 3000)
        self._acker = self._spawn("stream-acks", self._handling.flush_acks, 0.0)
        log.info("consumer_started", group=self.group, consumer=self.name, streams=self.streams)

    async def stop(self, grace_period_s: float | None = None) -> None:
        """Stop reading, let running jobs finish within the grace period, cancel the rest
        (their entries stay pending and are taken over by other consumers)."""
        grace = self.settings.grace_period_s if grace_period_s is None else grace_period_s
        self._stopping.set()
        self._slot_freed.set()
        await _finish(self._readers, self.settings.read_block_ms / 1000 + 1.0)
        self._readers = []
        finished = left = 0
        if self._runner is not None:
            running = list(self._runner.tasks.values())
            if running:
                done, pending = await asyncio.wait(running, timeout=grace)
                finished, left = len(done), len(pending)
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
        if self._acker is not None:
            self._handling.wake()
            await _finish([self._acker], 0.0)
            self._acker = None
            with contextlib.suppress(*_TRANSIENT):
                await self._handling.flush_acks()
        if self._heartbeat is not None:
            await _finish([self._heartbeat], 0.0)
            self._heartbeat = None
        log.info(
            "consumer_stopped",
            group=self.group,
            consumer=self.name,
            finished_in_grace=finished,
            cancelled=left,
            left_pending=len(self._inflight),
        )

    # --- supervision ----------------------------------------------------------------------

    def healthy(self) -> bool:
        """Every loop runs and has completed a pass lately (False while Redis is down for
        longer than a loop's ``stale_after_s``, and once stopped)."""
        return bool(self._loops) and all(h.healthy() for h in self._loops.values())

    def state(self) -> list[LoopState]:
        """Each loop's health as plain data, for a worker's health listener."""
        return [health.state() for health in self._loops.values()]

    def _spawn(
        self, name: str, step: Callable[[], Awaitable[object]], pause_s: float
    ) -> asyncio.Task[None]:
        s = self.settings
        health = LoopHealth(
            name, stale_after_s=max(30.0, 3 * pause_s) + s.read_block_ms / 1000 + s.redis_timeout_s
        )
        self._loops[name] = health
        task = asyncio.create_task(self._supervised(step, pause_s, health), name=name)
        health.watch(task)
        return task

    async def _supervised(
        self, step: Callable[[], Awaitable[object]], pause_s: float, health: LoopHealth
    ) -> None:
        """Run :meth:`_loop` until :meth:`stop`. Whatever escapes it (a bug, an error nobody
        foresaw) is logged with its traceback and backed off: only cancellation ends it."""
        backoff = Backoff(0.1, 5.0)
        while not self._stopping.is_set():
            try:
                await self._loop(step, pause_s, health, backoff)
            except Exception as exc:
                delay = backoff.next_delay()
                health.failed(exc)
                log_failure(
                    log,
                    "consumer_step_failed",
                    exc,
                    expected=_TRANSIENT,
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
    ) -> None:
        while not self._stopping.is_set():
            try:
                await step()
                backoff.reset()
                health.passed()
            except _TRANSIENT as exc:
                if is_nogroup(exc):
                    with contextlib.suppress(*_TRANSIENT):
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
        free = self.runner.free_slots
        if free <= 0:
            self._slot_freed.clear()
            if self.runner.free_slots <= 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(s.read_block_ms / 1000):
                        await self._slot_freed.wait()
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
        if self._stopping.is_set() and not response:
            return
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
            free = self.runner.free_slots
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
            if not entries:
                continue
            deliveries = await jobstore.delivery_counts(
                self.redis, stream, self.group, [e[1] for e in entries], timeout_s=s.redis_timeout_s
            )
            log.info("entries_claimed", stream=stream, group=self.group, count=len(entries))
            await self._accept(entries, deliveries=deliveries)

    async def _accept(
        self, entries: Iterable[tuple[str, str, Fields]], *, deliveries: Mapping[str, int]
    ) -> None:
        s = self.settings
        skipped: dict[str, list[str]] = {}
        fresh: list[EntryJob] = []
        claimed: list[tuple[EntryJob, int]] = []
        entries = list(entries)
        # Taken over: an entry that was waiting for a retry keeps its schedule, and its takeovers
        # while it waited (one per failure at most) are not deaths of workers on it.
        retrying = await self._handling.retry_states(
            (stream, entry_id) for stream, entry_id, _ in entries if entry_id in deliveries
        )
        for stream, entry_id, fields in entries:
            event_type = fields.get(TYPE_FIELD, b"").decode(errors="replace")
            count = deliveries.get(entry_id, 1)
            waited = retrying[entry_id].failures if entry_id in retrying else 0
            if event_type not in EVENT_TYPES or EVENT_FIELD not in fields:
                await self._handling.dead_letter(
                    stream, entry_id, fields, f"unknown event type {event_type!r}", count
                )
            elif event_type not in self.handlers:
                skipped.setdefault(stream, []).append(entry_id)
            elif count - waited > s.max_deliveries:
                error = f"delivered {count} times (max {s.max_deliveries}); workers died on it"
                await self._handling.dead_letter(stream, entry_id, fields, error, count)
            elif entry_id in deliveries:
                claimed.append((EntryJob(stream, entry_id, event_type, fields[EVENT_FIELD]), count))
            else:
                fresh.append(EntryJob(stream, entry_id, event_type, fields[EVENT_FIELD]))
        for stream, ids in skipped.items():
            await self._handling.ack(stream, ids)
        job_ids = await self._enqueue(fresh) if fresh else []
        if claimed:
            due = {entry_id: state.next_attempt_ms for entry_id, state in retrying.items()}
            job_ids += await self._adopt(claimed, due)
        if job_ids:
            await self.runner.start_jobs([job_id.encode() for job_id in job_ids])

    # --- jobs -----------------------------------------------------------------------------

    def job_id(self, entry: EntryJob) -> str:
        return f"{self.group}:{entry.stream}:{entry.entry_id}"

    async def _enqueue(
        self, entries: list[EntryJob], due: Mapping[str, int] | None = None
    ) -> list[str]:
        """Create one arq job per entry in this consumer's queue (one pipeline), due now or at
        ``due[entry id]``."""
        jobs = [(self.job_id(e), e) for e in entries]
        due = due or {}
        await jobstore.enqueue(
            self.redis,
            self.queue_name,
            jobs,
            due_ms={self.job_id(e): due[e.entry_id] for e in entries if e.entry_id in due},
            expires_ms=self._handling.policy.keep_ms,
            timeout_s=self.settings.redis_timeout_s,
        )
        self._inflight.update(jobs)
        return [job_id for job_id, _ in jobs]

    async def _adopt(
        self, claimed: list[tuple[EntryJob, int]], due: Mapping[str, int]
    ) -> list[str]:
        """Entries taken over from another consumer: find out what became of their jobs; those
        waiting for a retry run at its time (``due``, by entry id)."""
        timeout_s = self.settings.redis_timeout_s
        candidates = [(e, n) for e, n in claimed if self.job_id(e) not in self._inflight]
        found = await jobstore.records(
            self.redis, [self.job_id(e) for e, _ in candidates], timeout_s=timeout_s
        )
        orphaned: list[EntryJob] = []
        forgotten: list[EntryJob] = []
        for (entry, count), record in zip(candidates, found, strict=True):
            if record.exists:
                orphaned.append(entry)  # queued or running in a consumer that died: run it here
            elif record.result is not None:  # it ran to an end but was never acknowledged
                success, error = jobstore.read_result(record.result)
                if success:
                    await self._handling.ack(entry.stream, [entry.entry_id])
                else:
                    await self._handling.dead_letter(
                        entry.stream, entry.entry_id, entry.fields, error, count
                    )
            else:
                forgotten.append(entry)  # never enqueued, or arq forgot it: run it again
        taken = [(self.job_id(e), e) for e in orphaned]
        if taken:
            await jobstore.take_over(
                self.redis,
                self.queue_name,
                [j for j, _ in taken],
                due_ms={j: due[e.entry_id] for j, e in taken if e.entry_id in due},
                timeout_s=timeout_s,
            )
            self._inflight.update(taken)
        job_ids = [job_id for job_id, _ in taken]
        if forgotten:
            job_ids += await self._enqueue(forgotten, due)
        return job_ids

    async def start_due_retries(self) -> None:
        """Start jobs of this consumer's queue whose retry time has come."""
        free = self.runner.free_slots
        if free <= 0:
            return
        async with asyncio.timeout(self.settings.redis_timeout_s):
            due: list[bytes] = await self.redis.zrangebyscore(
                self.queue_name, "-inf", timestamp_ms(), start=0, num=free + len(self.runner.tasks)
            )
        waiting = [job_id for job_id in due if job_id.decode() not in self.runner.tasks]
        if waiting:
            await self.runner.start_jobs(waiting[:free])

    async def heartbeat(self) -> None:
        """Reset the idle time of the entries this consumer still works on; forget the ones
        that are no longer pending (acknowledged elsewhere, or lost with Redis' data)."""
        s = self.settings
        by_stream: dict[str, list[str]] = {}
        for entry in self._inflight.values():
            by_stream.setdefault(entry.stream, []).append(entry.entry_id)
        for stream, entry_ids in by_stream.items():
            async with asyncio.timeout(s.redis_timeout_s):
                kept: list[bytes] = await self.redis.xclaim(
                    stream, self.group, self.name, 0, list[Any](entry_ids), justid=True
                )
            still_pending = {k.decode() for k in kept}
            for entry_id in entry_ids:
                job_id = f"{self.group}:{stream}:{entry_id}"
                if entry_id not in still_pending and job_id not in self.runner.tasks:
                    self._inflight.pop(job_id, None)
        async with asyncio.timeout(s.redis_timeout_s):
            await self.redis.pexpire(self.queue_name, max(3 * s.claim_idle_ms, 60_000))

    def _job_done(self, job_id: str) -> None:
        if job_id in self._handling.retrying:
            self._handling.retrying.discard(job_id)  # stays queued (deferred) and in flight
        else:
            # finished, dead-lettered, or cancelled by shutdown (pending for others)
            self._inflight.pop(job_id, None)


async def _finish(tasks: list[asyncio.Task[None]], wait_s: float) -> None:
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=wait_s) if wait_s > 0 else (set(), set(tasks))
    for task in pending:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
