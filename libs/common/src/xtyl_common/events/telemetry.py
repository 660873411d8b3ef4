"""What the event backbone shows operators: its Prometheus series and its trace spans.

Metrics (the objects of :mod:`xtyl_common.metrics`, catalogued in ``docs/metrics.md``):

* the relay (:mod:`.relay`): ``xtyl_relay_published_total{schema}`` per row published,
  ``xtyl_relay_failures_total{schema}`` per failed pass, and after each pass the outbox's
  backlog, ``xtyl_outbox_rows_waiting{schema}`` and ``xtyl_outbox_oldest_age_seconds{schema}``;
* the consumer (:mod:`.consumer`, :mod:`.handling`): per handler run,
  ``xtyl_stream_job_attempts_total`` and ``xtyl_stream_job_duration_seconds`` by ``group``,
  ``event_type`` and ``outcome`` (:data:`OUTCOMES`); per entry dead-lettered or taken over,
  ``xtyl_stream_dead_lettered_total`` and ``xtyl_stream_redeliveries_total`` by ``stream``
  (the key, ``xtyl:events:files``) and ``group``; every few seconds the group's
  ``xtyl_stream_lag`` and ``xtyl_stream_pending``, read by the function ``make streams``
  prints them with (:func:`.ops.group_counts`);
* every supervised loop: ``xtyl_worker_loop_last_pass_timestamp_seconds{worker, loop}`` at
  each completed pass.

Counters are created at 0 for every label set known at start, so ``increase()`` sees the
first event.

Traces (when tracing is on, :mod:`xtyl_common.tracing`): an event carries the W3C trace
context current when it was made (``traceparent``, ``tracestate``: in the envelope and the
outbox row); the relay publishes it in the envelope, with a ``publish <type>`` producer span
per traced row, and the consumer runs each handler attempt in a ``handle <type>`` consumer span
whose parent is that context (:func:`handler_span`), so the handler's own calls (asyncpg,
aiohttp, redis) are its children. The backbone's own polling (reads, claims, heartbeats,
acknowledgements, the relay's queries) runs :func:`untraced`: a trace per poll would bury the
ones that matter.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Iterable, Mapping
from contextlib import contextmanager

from opentelemetry import context as otel_context
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from prometheus_client import Counter, Gauge, Histogram

from xtyl_common import metrics
from xtyl_common.tracing import context_of, tracer

#: How a handler run ended: succeeded; failed and tried again later; given up (dead-lettered).
OK, RETRY, DEAD = "ok", "retry", "dead"
OUTCOMES = (OK, RETRY, DEAD)
#: The ``loop`` label of the outbox relay's loop.
RELAY_LOOP = "outbox-relay"
#: Programs are ``xtyl-<worker>``; the ``worker`` label is the rest.
PROGRAM_PREFIX = "xtyl-"

_tracer = tracer("xtyl.events")

#: The backbone's own Redis and Postgres calls make no spans inside this (a context manager).
untraced = suppress_instrumentation


def worker_label(program: str) -> str:
    """The ``worker`` label of a program: ``rag-worker`` for ``xtyl-rag-worker``."""
    return program.removeprefix(PROGRAM_PREFIX)


class LoopHeartbeat:
    """Sets a supervised loop's ``xtyl_worker_loop_last_pass_timestamp_seconds`` to the
    current time at each completed pass. The series appears with the first pass: before it,
    a 0 would read as a pass in 1970."""

    def __init__(self, worker: str, loop: str) -> None:
        self.worker = worker
        self.loop = loop
        self._gauge: Gauge | None = None

    def beat(self) -> None:
        if self._gauge is None:
            self._gauge = metrics.WORKER_LOOP_LAST_PASS.labels(self.worker, self.loop)
        self._gauge.set_to_current_time()


# --- the relay -------------------------------------------------------------------------------


class RelayMetrics:
    """The series of one outbox (``schema``) published by this process."""

    def __init__(self, schema: str) -> None:
        self.published: Counter = metrics.RELAY_PUBLISHED.labels(schema)
        self.failures: Counter = metrics.RELAY_FAILURES.labels(schema)
        self._waiting: Gauge = metrics.OUTBOX_WAITING.labels(schema)
        self._oldest_age: Gauge = metrics.OUTBOX_OLDEST_AGE.labels(schema)

    def backlog(self, waiting: int, oldest_age_s: float) -> None:
        self._waiting.set(waiting)
        self._oldest_age.set(oldest_age_s if waiting else 0.0)


# --- the consumer ------------------------------------------------------------------------------


class ConsumerMetrics:
    """The series of one consumer group in this process; its counters start at 0."""

    def __init__(self, group: str, streams: Iterable[str], event_types: Iterable[str]) -> None:
        self.group = group
        self._dead: dict[str, Counter] = {}
        self._redelivered: dict[str, Counter] = {}
        self._lag: dict[str, Gauge] = {}
        self._pending: dict[str, Gauge] = {}
        for stream in streams:
            self._dead[stream] = metrics.STREAM_DEAD_LETTERED.labels(stream, group)
            self._redelivered[stream] = metrics.STREAM_REDELIVERIES.labels(stream, group)
            self._lag[stream] = metrics.STREAM_LAG.labels(stream, group)
            self._pending[stream] = metrics.STREAM_PENDING.labels(stream, group)
        self._attempts: dict[tuple[str, str], Counter] = {}
        self._durations: dict[tuple[str, str], Histogram] = {}
        for event_type in event_types:
            for outcome in OUTCOMES:
                self._attempt_series(event_type, outcome)

    def _attempt_series(self, event_type: str, outcome: str) -> tuple[Counter, Histogram]:
        key = (event_type, outcome)
        attempts = self._attempts.get(key)
        if attempts is None:
            attempts = self._attempts[key] = metrics.JOB_ATTEMPTS.labels(self.group, *key)
            self._durations[key] = metrics.JOB_DURATION.labels(self.group, *key)
        return attempts, self._durations[key]

    def attempted(self, event_type: str, outcome: str, duration_s: float) -> None:
        """One handler run of an entry of ``event_type``, ended with ``outcome``."""
        attempts, duration = self._attempt_series(event_type, outcome)
        attempts.inc()
        duration.observe(duration_s)

    def dead_lettered(self, stream: str) -> None:
        counter = self._dead.get(stream)
        if counter is None:
            counter = self._dead[stream] = metrics.STREAM_DEAD_LETTERED.labels(stream, self.group)
        counter.inc()

    def redelivered(self, stream: str, count: int) -> None:
        """``count`` entries of ``stream`` taken over (XAUTOCLAIM) from another consumer."""
        self._redelivered[stream].inc(count)

    def group_counts(self, stream: str, *, pending: int, lag: int | None) -> None:
        """The group's pending entries and lag on ``stream`` (lag kept when Redis cannot
        tell)."""
        self._pending[stream].set(pending)
        if lag is not None:
            self._lag[stream].set(lag)


# --- traces ------------------------------------------------------------------------------------


def trace_carrier(traceparent: str | None, tracestate: str | None) -> dict[str, str]:
    """The W3C headers an event carried (empty when it carried none)."""
    carrier: dict[str, str] = {}
    if traceparent:
        carrier["traceparent"] = traceparent
        if tracestate:
            carrier["tracestate"] = tracestate
    return carrier


@contextmanager
def handler_span(
    event_type: str, carrier: Mapping[str, str], attributes: Mapping[str, str | int]
) -> Generator[Span]:
    """The span of one handler attempt, current while it runs: a child of the context the
    event carried (a new trace when it carried none), in a context of its own, so the
    handler's calls are traced even though the consumer's polling is not."""
    parent = context_of(carrier) if carrier else otel_context.Context()
    token = otel_context.attach(parent)
    try:
        with _tracer.start_as_current_span(
            f"handle {event_type}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=dict(attributes),
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            yield span
    finally:
        otel_context.detach(token)


def end_attempt_span(span: Span, outcome: str, error: BaseException | None = None) -> None:
    """Record how the attempt ended on its span."""
    span.set_attribute("xtyl.outcome", outcome)
    if error is not None:
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"[:200]))


def publish_span(
    event_type: str, stream: str, schema: str, carrier: Mapping[str, str]
) -> Span | None:
    """A producer span for one traced outbox row being published (``None`` for a row that
    carries no trace context: an untraced row makes no trace of its own)."""
    if not carrier:
        return None
    return _tracer.start_span(
        f"publish {event_type}",
        context=context_of(carrier),
        kind=SpanKind.PRODUCER,
        attributes={
            "messaging.system": "redis",
            "messaging.destination.name": stream,
            "xtyl.outbox_schema": schema,
            "xtyl.event_type": event_type,
        },
    )


def end_publish_spans(
    spans: Iterable[tuple[Span | None, str | None]], error: BaseException | None = None
) -> None:
    """End the publish spans of a batch: each with its entry id, or all with ``error``."""
    now = time.time_ns()
    for span, entry_id in spans:
        if span is None:
            continue
        if entry_id is not None:
            span.set_attribute("messaging.message.id", entry_id)
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"[:200]))
        span.end(end_time=now)
