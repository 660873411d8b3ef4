"""What becomes of one stream entry: decode it, call its handler under a timeout, record the
success and acknowledge it; after a failure, retry it later or dead-letter it, as
:mod:`.retries` decides (the kind of failure, the retry horizon measured from the entry's
first failure).

A success is recorded in two steps. Right after the handler returns, the entry's **done
marker** (``<stream>:done:<group>:<entry id>``, see :func:`.streams.done_key`) is written;
then the entry is acknowledged in a batch (one pipeline per stream every few milliseconds:
``XACK`` and the retry state's removal). If the process dies between the two, or the
``XACK`` fails, the entry stays pending: whoever takes it over finds the marker and
acknowledges it without running the handler again. The marker lives ``keep_result_s``, and
at least three times ``claim_idle_ms`` past the last attempt to acknowledge the entry.

Each attempt runs in a ``handle <type>`` span whose parent is the trace context the event
carried (attributes: stream, group, entry id, event type and id, attempt, outcome), and is
counted with its handler's time by outcome: ``ok``, ``retry`` or ``dead``
(``xtyl_stream_job_attempts_total``, ``xtyl_stream_job_duration_seconds``). Every entry
dead-lettered, whether its handler ran or not, counts in ``xtyl_stream_dead_lettered_total``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Any

import structlog
from opentelemetry.trace import Span
from redis.asyncio import Redis
from redis.exceptions import RedisError

from xtyl_common.context import set_request_id
from xtyl_common.events.contracts import AnyEvent, InvalidEvent, UnknownEventType, decode_event
from xtyl_common.events.retries import (
    FINAL_ATTEMPT_KEY,
    GiveUp,
    RetryPolicy,
    RetryState,
    kind_of,
    load_states,
    now_ms,
    save_state,
)
from xtyl_common.events.settings import EventSettings
from xtyl_common.events.streams import (
    EVENT_FIELD,
    TYPE_FIELD,
    Fields,
    dead_letter,
    done_key,
    retries_key,
)
from xtyl_common.events.telemetry import (
    DEAD,
    OK,
    RETRY,
    ConsumerMetrics,
    end_attempt_span,
    handler_span,
    trace_carrier,
)
from xtyl_common.supervise import describe

log = structlog.stdlib.get_logger("xtyl.events.consumer")

#: ``await handler(event, ctx)``. ``ctx`` is the worker's arq ctx (what its ``on_startup`` put
#: there) plus ``job_id`` (``<group>:<stream>:<entry id>``), ``job_try`` (1 for the first
#: attempt), ``enqueue_time`` (when the entry was added) and :func:`.retries.is_final_attempt`.
#: Must be idempotent. Raise a ``ClientError`` for a permanent failure, a ``DependencyError``
#: for a transient one.
Handler = Callable[[Any, dict[str, Any]], Awaitable[object]]

#: Redis failing or unreachable (what the consumer's own Redis calls survive).
TRANSIENT = (RedisError, OSError, TimeoutError)


class Outcome(Enum):
    """How one attempt ended."""

    #: The handler succeeded; the entry is marked done and waits (briefly) for its XACK.
    DONE = "done"
    #: Moved to ``<stream>:dead`` and acknowledged.
    DEAD_LETTERED = "dead_lettered"
    #: Failed; its next attempt is due at ``entry.state.next_attempt_ms``.
    RETRY = "retry"


@dataclass(slots=True, eq=False)
class Entry:
    """One stream entry held by a consumer (running, ready, waiting for a retry, or done
    and waiting for its acknowledgement)."""

    stream: str
    entry_id: str
    event_type: str
    data: bytes
    #: Times the group delivered it (XPENDING's counter: each takeover adds one).
    deliveries: int = 1
    #: The retry state, once it failed.
    state: RetryState | None = None
    #: When a retry is scheduled: its time (ms since the epoch).
    due_ms: int | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.stream, self.entry_id)

    @property
    def fields(self) -> dict[bytes, bytes]:
        return {TYPE_FIELD: self.event_type.encode(), EVENT_FIELD: self.data}

    @property
    def job_try(self) -> int:
        """Which attempt this is, as far as Redis tells: one per failure recorded, and one per
        delivery (a takeover) beyond those."""
        failures = self.state.failures if self.state is not None else 0
        return max(self.deliveries, failures + 1)


class EntryHandling:
    """Runs the attempts of one consumer's entries and batches their acknowledgements."""

    def __init__(
        self,
        redis: Redis,
        *,
        group: str,
        consumer: str,
        handlers: Mapping[str, Handler],
        settings: EventSettings,
        metrics: ConsumerMetrics | None = None,
    ) -> None:
        self.redis = redis
        self.group = group
        self.consumer = consumer
        self.handlers = handlers
        self.settings = settings
        self.metrics = metrics or ConsumerMetrics(group, (), handlers)
        self.policy = RetryPolicy.of(settings)
        self.done_keep_ms = max(int(settings.keep_result_s * 1000), 3 * settings.claim_idle_ms)
        #: stream -> entry id -> whether its done marker still has to be written
        self._acks: dict[str, dict[str, bool]] = {}
        self._acks_waiting = asyncio.Event()

    # --- one attempt ----------------------------------------------------------------------

    async def run(self, entry: Entry, worker_ctx: Mapping[str, Any]) -> Outcome:
        """Decode the entry and call its handler (within ``handler_timeout_s``), in a span
        that continues the event's trace; then mark it done and queue its XACK, or decide what
        its failure means. Counted by outcome (:mod:`.telemetry`)."""
        job_try = entry.job_try
        try:
            event = decode_event(entry.data)
        except (UnknownEventType, InvalidEvent) as exc:
            await self.dead_letter(entry.key, entry.fields, f"undecodable event: {exc}", job_try)
            return Outcome.DEAD_LETTERED
        attributes: dict[str, str | int] = {
            "messaging.system": "redis",
            "messaging.destination.name": entry.stream,
            "messaging.consumer.group.name": self.group,
            "messaging.message.id": entry.entry_id,
            "xtyl.event_type": entry.event_type,
            "xtyl.event_id": str(event.id),
            "xtyl.attempt": job_try,
        }
        carrier = trace_carrier(event.traceparent, event.tracestate)
        with handler_span(entry.event_type, carrier, attributes) as span:
            return await self._attempt(entry, event, worker_ctx, job_try, span)

    async def _attempt(
        self, entry: Entry, event: AnyEvent, worker_ctx: Mapping[str, Any], job_try: int, span: Span
    ) -> Outcome:
        job_id = f"{self.group}:{entry.stream}:{entry.entry_id}"
        structlog.contextvars.bind_contextvars(
            job_id=job_id,
            event_id=str(event.id),
            event_type=entry.event_type,
            request_id=event.request_id,
        )
        set_request_id(event.request_id)
        final = self.policy.is_final(entry.state, now_ms())
        ctx: dict[str, Any] = {
            **worker_ctx,
            "job_id": job_id,
            "job_try": job_try,
            "enqueue_time": enqueue_time(entry.entry_id),
            FINAL_ATTEMPT_KEY: final,
        }
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.settings.handler_timeout_s):
                await self.handlers[entry.event_type](event, ctx)
        except Exception as exc:
            took_s = time.perf_counter() - started
            outcome = RETRY  # if recording the failure fails, the entry is delivered again
            try:
                result = await self._failed(entry, exc, job_try=job_try, final=final)
                outcome = DEAD if result is Outcome.DEAD_LETTERED else RETRY
            finally:
                self.metrics.attempted(entry.event_type, outcome, took_s)
                end_attempt_span(span, outcome, exc)
            return result
        self.metrics.attempted(entry.event_type, OK, time.perf_counter() - started)
        end_attempt_span(span, OK)
        await self._mark_done(entry)
        return Outcome.DONE

    async def _failed(self, entry: Entry, exc: Exception, *, job_try: int, final: bool) -> Outcome:
        """Dead-letter the entry, or record the failure and set its next attempt."""
        error = describe(exc)
        state = entry.state
        if state is None:
            # maybe not the entry's first failure (a group made again re-delivered it): the
            # horizon counts from the first one
            with contextlib.suppress(*TRANSIENT):
                state = await self.retry_state(entry.stream, entry.entry_id)
        now = now_ms()
        decision = self.policy.decide(state, exc, error, now_ms=now, final=final)
        if isinstance(decision, GiveUp):
            await self.dead_letter(entry.key, entry.fields, decision.reason, job_try)
            return Outcome.DEAD_LETTERED
        new_state = decision.state
        try:
            await save_state(
                self.redis,
                entry.stream,
                self.group,
                entry.entry_id,
                new_state,
                keep_ms=self.policy.keep_ms,
                timeout_s=self.settings.redis_timeout_s,
            )
        except TRANSIENT as save_error:
            # the retry still happens (this consumer holds it); only the horizon may start
            # later if another consumer has to take it over
            log.warning(
                "retry_state_not_saved", entry_id=entry.entry_id, error=describe(save_error)
            )
        entry.state = new_state
        delay_s = max(0.0, (new_state.next_attempt_ms - now) / 1000)
        horizon_left_s = new_state.first_failure_ms / 1000 + self.policy.horizon_s - now / 1000
        log.warning(
            "job_retry",
            kind=kind_of(exc).value,
            job_try=job_try,
            failures=new_state.failures,
            retry_in_s=round(delay_s, 3),
            gives_up_in_s=round(max(0.0, horizon_left_s)),
            error=error,
        )
        return Outcome.RETRY

    async def _mark_done(self, entry: Entry) -> None:
        """Write the done marker now, then queue the XACK (the acknowledgement loop writes the
        marker with it if Redis failed here)."""
        marked = True
        try:
            async with asyncio.timeout(self.settings.redis_timeout_s):
                await self.redis.set(
                    done_key(entry.stream, self.group, entry.entry_id), b"1", px=self.done_keep_ms
                )
        except TRANSIENT as exc:
            marked = False
            log.warning("entry_done_not_marked", entry_id=entry.entry_id, error=describe(exc))
        self.queue_ack(entry.stream, [entry.entry_id], mark_done=not marked)

    # --- what Redis remembers of entries --------------------------------------------------

    async def retry_state(self, stream: str, entry_id: str) -> RetryState | None:
        states = await load_states(
            self.redis, stream, self.group, [entry_id], timeout_s=self.settings.redis_timeout_s
        )
        return states.get(entry_id)

    async def retry_states(self, entries: Iterable[tuple[str, str]]) -> dict[str, RetryState]:
        """The retry states of ``(stream, entry id)`` pairs, by entry id (those that have one)."""
        states: dict[str, RetryState] = {}
        for stream, entry_ids in _by_stream(entries).items():
            states.update(
                await load_states(
                    self.redis,
                    stream,
                    self.group,
                    entry_ids,
                    timeout_s=self.settings.redis_timeout_s,
                )
            )
        return states

    async def already_done(self, entries: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which of these ``(stream, entry id)`` pairs have a done marker (one round trip)."""
        pairs = list(entries)
        if not pairs:
            return set()
        async with (
            asyncio.timeout(self.settings.redis_timeout_s),
            self.redis.pipeline(transaction=False) as pipe,
        ):
            for stream, entry_id in pairs:
                pipe.exists(done_key(stream, self.group, entry_id))
            found: list[int] = await pipe.execute()
        return {pair for pair, exists in zip(pairs, found, strict=True) if exists}

    # --- acknowledgements -----------------------------------------------------------------

    def queue_ack(self, stream: str, entry_ids: Iterable[str], *, mark_done: bool = False) -> None:
        """Acknowledge these entries in the next batch (writing their done markers first
        when ``mark_done``)."""
        batch = self._acks.setdefault(stream, {})
        for entry_id in entry_ids:
            batch[entry_id] = batch.get(entry_id, False) or mark_done
        self._acks_waiting.set()

    async def flush_acks(self) -> list[tuple[str, str]]:
        """Acknowledge what is queued, one pipeline per stream (waits up to a second for
        work); returns the ``(stream, entry id)`` pairs acknowledged. When Redis fails, what is
        left stays queued and the error is raised (the caller backs off)."""
        if not self._acks:
            self._acks_waiting.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._acks_waiting.wait()
        acks, self._acks = self._acks, {}
        acked: list[tuple[str, str]] = []
        streams = list(acks)
        for index, stream in enumerate(streams):
            try:
                await self._ack(stream, acks[stream])
            except BaseException:
                for left in streams[index:]:
                    for entry_id, mark in acks[left].items():
                        self.queue_ack(left, [entry_id], mark_done=mark)
                raise
            acked += [(stream, entry_id) for entry_id in acks[stream]]
        return acked

    async def _ack(self, stream: str, entries: Mapping[str, bool]) -> None:
        """Done markers still missing, XACK, and the retry states dropped: one round trip."""
        entry_ids = list(entries)
        async with (
            asyncio.timeout(self.settings.redis_timeout_s),
            self.redis.pipeline(transaction=False) as pipe,
        ):
            for entry_id, mark in entries.items():
                if mark:  # before the XACK: whoever sees it pending can also see it done
                    pipe.set(done_key(stream, self.group, entry_id), b"1", px=self.done_keep_ms)
            pipe.xack(stream, self.group, *entry_ids)
            pipe.hdel(retries_key(stream, self.group), *entry_ids)
            await pipe.execute()

    def wake(self) -> None:
        """Let a waiting :meth:`flush_acks` return now (shutdown)."""
        self._acks_waiting.set()

    @property
    def acks_queued(self) -> int:
        return sum(len(ids) for ids in self._acks.values())

    async def dead_letter(
        self, key: tuple[str, str], fields: Fields, error: str, deliveries: int
    ) -> None:
        """Move the entry ``(stream, entry id)`` to ``<stream>:dead`` and acknowledge it."""
        s = self.settings
        stream, entry_id = key
        await dead_letter(
            self.redis,
            stream=stream,
            group=self.group,
            consumer=self.consumer,
            entry_id=entry_id,
            fields=fields,
            error=error,
            deliveries=deliveries,
            maxlen=s.dead_letter_maxlen,
            timeout_s=s.redis_timeout_s,
        )
        self.metrics.dead_lettered(stream)


def enqueue_time(entry_id: str) -> datetime:
    """When the entry was added to its stream (the milliseconds of its id)."""
    millis, _, _ = entry_id.partition("-")
    return datetime.fromtimestamp(int(millis) / 1000, tz=UTC)


def _by_stream(entries: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    by_stream: dict[str, list[str]] = {}
    for stream, entry_id in entries:
        by_stream.setdefault(stream, []).append(entry_id)
    return by_stream
