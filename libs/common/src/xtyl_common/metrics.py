"""Prometheus metrics: the ones every process shares (HTTP server, event backbone, worker
loops), and how a process serves them. The catalogue, with what each answers, is
``docs/metrics.md``; a service's own metrics live in its ``adapters/metrics.py``.

Names follow Prometheus' conventions (base units, ``_total`` counters, ``_seconds``); every
label is bounded: a route template (``/v1/files/{file_id}``), never a raw path or an id; an
unknown HTTP method is ``other``; a request no route matched is ``unmatched``.

A process served by several granian workers (``WEB_CONCURRENCY`` > 1) is several Python
processes: :func:`xtyl_common.serve.serve` then points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh
directory before they start, and :func:`exposition` adds up what each of them wrote.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

#: Request durations: 5 ms to 30 s (uploads and answers are slow, the rest fast).
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: Stream jobs: 10 ms to 5 min (an embedding job on a big document).
JOB_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED_ROUTE = "unmatched"

# --- HTTP server (every service) -----------------------------------------------------------

HTTP_REQUESTS = Counter(
    "xtyl_http_requests",
    "HTTP requests answered, by route template, method and status.",
    ["service", "route", "method", "status"],
)
HTTP_DURATION = Histogram(
    "xtyl_http_request_duration_seconds",
    "Time from the request's arrival to the end of its answer.",
    ["service", "route", "method", "status"],
    buckets=HTTP_BUCKETS,
)
HTTP_IN_FLIGHT = Gauge(
    "xtyl_http_requests_in_flight",
    "Requests being handled now.",
    ["service"],
    multiprocess_mode="livesum",
)

# --- event backbone --------------------------------------------------------------------------

OUTBOX_WAITING = Gauge(
    "xtyl_outbox_rows_waiting",
    "Outbox rows not yet published to their stream.",
    ["schema"],
    multiprocess_mode="max",
)
OUTBOX_OLDEST_AGE = Gauge(
    "xtyl_outbox_oldest_age_seconds",
    "Age of the oldest outbox row not yet published (0 when none waits).",
    ["schema"],
    multiprocess_mode="max",
)
ERASURES_INCOMPLETE = Gauge(
    "xtyl_erasures_incomplete",
    "Erasures of deleted users begun and not completed, in the service's ledger.",
    ["schema"],
    multiprocess_mode="max",
)
ERASURE_OLDEST_AGE = Gauge(
    "xtyl_erasure_oldest_incomplete_age_seconds",
    "Time since the oldest incomplete erasure's user was deleted (0 when none).",
    ["schema"],
    multiprocess_mode="max",
)
RELAY_PUBLISHED = Counter(
    "xtyl_relay_published", "Outbox rows published to their stream.", ["schema"]
)
RELAY_FAILURES = Counter(
    "xtyl_relay_failures", "Relay passes that failed (Postgres or Redis).", ["schema"]
)
STREAM_LAG = Gauge(
    "xtyl_stream_lag",
    "Entries of a stream not yet delivered to a consumer group.",
    ["stream", "group"],
    multiprocess_mode="max",
)
STREAM_PENDING = Gauge(
    "xtyl_stream_pending",
    "Entries delivered to a consumer group and not yet acknowledged.",
    ["stream", "group"],
    multiprocess_mode="max",
)
STREAM_DEAD_LETTERED = Counter(
    "xtyl_stream_dead_lettered", "Entries moved to the stream's dead letters.", ["stream", "group"]
)
STREAM_REDELIVERIES = Counter(
    "xtyl_stream_redeliveries",
    "Entries taken over from a consumer that stopped working on them.",
    ["stream", "group"],
)
JOB_DURATION = Histogram(
    "xtyl_stream_job_duration_seconds",
    "Time a handler took for one stream entry, by outcome (ok, retry, dead).",
    ["group", "event_type", "outcome"],
    buckets=JOB_BUCKETS,
)
JOB_ATTEMPTS = Counter(
    "xtyl_stream_job_attempts",
    "Handler runs for stream entries, by outcome (ok, retry, dead).",
    ["group", "event_type", "outcome"],
)

# --- worker processes ----------------------------------------------------------------------

WORKER_LOOP_LAST_PASS = Gauge(
    "xtyl_worker_loop_last_pass_timestamp_seconds",
    "Unix time of the last completed pass of each supervised loop (the worker's heartbeat).",
    ["worker", "loop"],
    multiprocess_mode="max",
)
WORKER_HEALTHY = Gauge(
    "xtyl_worker_healthy",
    "1 when every supervised loop of the worker runs and passes, else 0.",
    ["worker"],
    multiprocess_mode="min",
)


def http_labels(method: str | None, route: str | None) -> tuple[str, str]:
    """Bounded ``(method, route)`` labels of a request."""
    upper = (method or "").upper()
    return (upper if upper in KNOWN_METHODS else "other"), (route or UNMATCHED_ROUTE)


def exposition() -> tuple[bytes, str]:
    """The body and content type of ``GET /metrics`` for this process (all of its granian
    workers' numbers in multiprocess mode)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
