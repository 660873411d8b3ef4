"""The event backbone's metrics move as its work implies, read from this process's
``/metrics`` text (prometheus-client's parser), against the real Postgres and Redis: rows
published and the outbox's backlog back to 0; failed relay passes counted while the backlog
shows; handler runs by outcome (ok, retry then dead), dead letters, takeovers; the group's lag
and pending count equal to what ``make streams`` reports; each loop's heartbeat.

Labels are made unique per test (schema, stream prefix, group), since the registry is the
process's."""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import asyncpg
import msgspec
import pytest
from redis.asyncio import Redis

from xtyl_common.errors import Unavailable
from xtyl_common.events import (
    Event,
    EventSettings,
    FileUploaded,
    FileUploadedPayload,
    OutboxRelay,
    StreamConsumer,
    add_event,
    encode_event,
    stream_key,
)
from xtyl_common.events.ops import stream_status
from xtyl_common.redis_client import create_redis
from xtyl_devstack.ports import free_port
from xtyl_devstack.testing import eventually

pytestmark = pytest.mark.integration

OUTCOMES = ("ok", "retry", "dead")
#: The ``sample`` fixture: one series' value from Prometheus' text format (conftest).
MetricSample = Callable[..., float | None]


@pytest.fixture
def settings(redis_prefix: str) -> EventSettings:
    return EventSettings(
        stream_prefix=redis_prefix + "events",
        relay_poll_interval_s=0.05,
        relay_backoff_initial_s=0.05,
        relay_backoff_max_s=0.2,
        read_block_ms=100,
        claim_idle_ms=300,
        retry_backoff_s=0.05,
        retry_backoff_max_s=0.1,
        retry_poll_s=0.02,
        redis_timeout_s=1.0,
    )


@pytest.fixture
def group() -> str:
    return f"g{secrets.token_hex(4)}"


def uploaded(name: str = "a.txt") -> FileUploaded:
    return FileUploaded(
        producer="test",
        payload=FileUploadedPayload(
            file_id=uuid.uuid4(),
            owner_id=uuid.uuid4(),
            key="k",
            name=name,
            content_type="text/plain",
            size=1,
            sha256="0" * 64,
        ),
    )


async def commit(pool: asyncpg.Pool, schema: str, events: Sequence[Event]) -> None:
    async with pool.acquire() as conn, conn.transaction():
        for event in events:
            await add_event(conn, event, schema=schema)


async def publish(redis: Redis, settings: EventSettings, events: Sequence[Event]) -> str:
    stream = stream_key("files", settings.stream_prefix)
    for event in events:
        await redis.xadd(stream, {b"type": event.type.encode(), b"event": encode_event(event)})
    return stream


# --- the relay ---------------------------------------------------------------------------------


async def test_published_rows_are_counted_and_the_backlog_goes_back_to_zero(
    pool: asyncpg.Pool,
    redis: Redis,
    schema: str,
    settings: EventSettings,
    sample: MetricSample,
) -> None:
    relay = OutboxRelay(pool, redis, schemas=[schema], settings=settings, listen=False)
    # served at 0 before the first row, so increase() sees it
    assert sample("xtyl_relay_published_total", schema=schema) == 0
    assert sample("xtyl_relay_failures_total", schema=schema) == 0

    await commit(pool, schema, [uploaded() for _ in range(5)])
    await asyncio.sleep(0.05)
    waiting, oldest_age_s = await relay.measure_backlog(schema)
    assert waiting == 5
    assert sample("xtyl_outbox_rows_waiting", schema=schema) == 5
    assert oldest_age_s >= 0.05
    assert sample("xtyl_outbox_oldest_age_seconds", schema=schema) == oldest_age_s

    relay.start()
    try:

        async def all_published() -> bool:
            return sample("xtyl_relay_published_total", schema=schema) == 5

        await eventually(all_published)
        await eventually(lambda: _is(sample("xtyl_outbox_rows_waiting", schema=schema), 0))
        assert sample("xtyl_outbox_oldest_age_seconds", schema=schema) == 0

        # the loop's heartbeat, named after the outbox (no worker started this relay); it is
        # stamped when a pass ends, which may come just after the rows show as published
        def heartbeat() -> float | None:
            return sample(
                "xtyl_worker_loop_last_pass_timestamp_seconds", worker=schema, loop="outbox-relay"
            )

        async def beaten() -> bool:
            return heartbeat() is not None

        await eventually(beaten)
        beat = heartbeat()
        assert beat is not None
        assert time.time() - beat < 5
    finally:
        await relay.stop()
    assert sample("xtyl_relay_failures_total", schema=schema) == 0


async def _is(value: float | None, expected: float) -> bool:
    return value == expected


async def test_while_redis_refuses_failed_passes_are_counted_and_the_backlog_shows(
    pool: asyncpg.Pool,
    schema: str,
    settings: EventSettings,
    sample: MetricSample,
) -> None:
    # nothing listens there: every XADD is refused
    nowhere = create_redis(
        f"redis://127.0.0.1:{free_port()}/0", socket_timeout_s=0.5, connect_timeout_s=0.5
    )
    relay = OutboxRelay(pool, nowhere, schemas=[schema], settings=settings, listen=False)
    await commit(pool, schema, [uploaded() for _ in range(3)])
    relay.start()
    try:

        async def failing_with_the_backlog_shown() -> bool:
            failures = sample("xtyl_relay_failures_total", schema=schema) or 0
            waiting = sample("xtyl_outbox_rows_waiting", schema=schema)
            return failures >= 2 and waiting == 3

        await eventually(failing_with_the_backlog_shown)
        age = sample("xtyl_outbox_oldest_age_seconds", schema=schema)
        assert age is not None
        assert age > 0
        assert sample("xtyl_relay_published_total", schema=schema) == 0
        # no pass completed: no heartbeat (its staleness is what alerts)
        assert (
            sample(
                "xtyl_worker_loop_last_pass_timestamp_seconds", worker=schema, loop="outbox-relay"
            )
            is None
        )
    finally:
        await relay.stop()
        await nowhere.aclose()


# --- the consumer ------------------------------------------------------------------------------


class Handler:
    """Succeeds, except for entries named ``fail.txt``: a dependency down (transient)."""

    def __init__(self) -> None:
        self.done: set[uuid.UUID] = set()
        self.failed = 0

    async def __call__(self, event: FileUploaded, ctx: dict[str, Any]) -> None:
        if event.payload.name == "fail.txt":
            self.failed += 1
            raise Unavailable("the embedder is down")
        self.done.add(event.id)


async def test_handler_runs_are_counted_by_outcome_and_dead_letters_by_stream(
    redis: Redis,
    settings: EventSettings,
    group: str,
    sample: MetricSample,
) -> None:
    # the horizon is 0: a transient failure is retried once (the final attempt), then dead
    settings = msgspec.structs.replace(settings, retry_horizon_s=0.0)
    stream = stream_key("files", settings.stream_prefix)
    handler = Handler()
    consumer = StreamConsumer(
        redis, group=group, handlers={FileUploaded: handler}, settings=settings, worker="w-test"
    )
    labels = {"group": group, "event_type": "file.uploaded"}
    for outcome in OUTCOMES:  # every label set known at start is served at 0
        assert sample("xtyl_stream_job_attempts_total", outcome=outcome, **labels) == 0
    assert sample("xtyl_stream_dead_lettered_total", stream=stream, group=group) == 0
    assert sample("xtyl_stream_redeliveries_total", stream=stream, group=group) == 0

    fine, failing = uploaded("fine.txt"), uploaded("fail.txt")
    await publish(redis, settings, [fine, failing])
    await consumer.start()
    try:

        async def dead_lettered() -> bool:
            return sample("xtyl_stream_dead_lettered_total", stream=stream, group=group) == 1

        await eventually(dead_lettered)
        assert handler.done == {fine.id}
        assert handler.failed == 2
        for outcome in OUTCOMES:
            assert sample("xtyl_stream_job_attempts_total", outcome=outcome, **labels) == 1
            count = sample("xtyl_stream_job_duration_seconds_count", outcome=outcome, **labels)
            assert count == 1
        beat = sample(
            "xtyl_worker_loop_last_pass_timestamp_seconds", worker="w-test", loop="stream-read"
        )
        assert beat is not None
        assert time.time() - beat < 5
    finally:
        await consumer.stop(grace_period_s=1.0)


async def test_entries_taken_over_from_a_dead_consumer_are_counted(
    redis: Redis,
    settings: EventSettings,
    group: str,
    sample: MetricSample,
) -> None:
    stream = stream_key("files", settings.stream_prefix)
    await redis.xgroup_create(stream, group, id="0", mkstream=True)
    events = [uploaded() for _ in range(2)]
    await publish(redis, settings, events)
    # a consumer that read both and died
    await redis.xreadgroup(group, "dead-one", {stream: ">"}, count=10)
    handler = Handler()
    consumer = StreamConsumer(
        redis, group=group, handlers={FileUploaded: handler}, settings=settings
    )
    await consumer.start()
    try:
        await eventually(lambda: _all_done(handler, events))
        assert sample("xtyl_stream_redeliveries_total", stream=stream, group=group) == 2
        assert sample("xtyl_stream_dead_lettered_total", stream=stream, group=group) == 0
    finally:
        await consumer.stop(grace_period_s=1.0)


async def _all_done(handler: Handler, events: Sequence[Event]) -> bool:
    return handler.done == {e.id for e in events}


async def test_lag_and_pending_gauges_equal_what_make_streams_reports(
    redis: Redis,
    settings: EventSettings,
    group: str,
    sample: MetricSample,
) -> None:
    settings = msgspec.structs.replace(settings, max_jobs=2)
    gate = asyncio.Event()
    started: list[uuid.UUID] = []

    async def held(event: FileUploaded, ctx: dict[str, Any]) -> None:
        started.append(event.id)
        await gate.wait()

    stream = await publish(redis, settings, [uploaded() for _ in range(5)])
    consumer = StreamConsumer(redis, group=group, handlers={FileUploaded: held}, settings=settings)
    await consumer.start()
    try:
        await eventually(lambda: _is(len(started), 2))  # two slots: two read, three left
        await consumer.refresh_gauges()  # what its stream-gauges loop does every 5 s
        status = await stream_status(redis, stream)
        [reported] = [g for g in status.groups if g.name == group]
        assert (reported.pending, reported.lag) == (2, 3)
        assert sample("xtyl_stream_pending", stream=stream, group=group) == reported.pending
        assert sample("xtyl_stream_lag", stream=stream, group=group) == reported.lag
    finally:
        gate.set()
        await consumer.stop(grace_period_s=1.0)
