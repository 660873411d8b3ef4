"""Retry horizons against the real Redis: a dependency's outage is waited out however long it
lasts (up to the horizon), a permanent failure is dead-lettered at once, a dependency's
Retry-After is honoured, a waiting entry keeps its time when another consumer takes it over,
and ``make streams`` shows what is retrying and what was dead-lettered."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import msgspec
import pytest
from redis.asyncio import Redis

from xtyl_common.errors import InvalidInput, Unavailable
from xtyl_common.events import (
    EventSettings,
    FileUploaded,
    FileUploadedPayload,
    StreamConsumer,
    encode_event,
    stream_key,
)
from xtyl_common.events.contracts import dead_letter_key
from xtyl_common.events.ops import render, streams_report
from xtyl_common.events.retries import is_final_attempt
from xtyl_common.events.streams import retries_key
from xtyl_common.redis_client import create_redis
from xtyl_devstack.testing import eventually

pytestmark = pytest.mark.integration

GROUP = "mailers"


@pytest.fixture
def settings(redis_prefix: str) -> EventSettings:
    return EventSettings(
        stream_prefix=redis_prefix + "events",
        read_block_ms=200,
        claim_idle_ms=600,
        max_tries=3,
        retry_backoff_s=0.02,
        retry_backoff_max_s=0.2,
        retry_poll_s=0.02,
        redis_timeout_s=2.0,
        grace_period_s=2.0,
    )


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = create_redis(redis_url, socket_timeout_s=3.0)
    yield client
    await client.aclose()


@pytest.fixture
async def consumers() -> AsyncIterator[list[StreamConsumer]]:
    started: list[StreamConsumer] = []
    yield started
    for consumer in started:
        await consumer.stop(grace_period_s=0.5)


class Dependency:
    """A handler calling a dependency the test breaks and mends; records every call."""

    def __init__(self, failure: Callable[[FileUploaded], Exception | None]) -> None:
        self.failure = failure
        self.calls: list[tuple[float, bool]] = []  # (time.time(), is_final_attempt)
        self.done: list[uuid.UUID] = []
        self._changed = asyncio.Event()

    async def __call__(self, event: FileUploaded, ctx: dict[str, Any]) -> None:
        self.calls.append((time.time(), is_final_attempt(ctx)))
        self._changed.set()
        error = self.failure(event)
        if error is not None:
            raise error
        self.done.append(event.id)

    async def until(self, condition: Callable[[], bool], timeout_s: float = 15.0) -> None:
        async with asyncio.timeout(timeout_s):
            while not condition():
                self._changed.clear()
                await self._changed.wait()


def uploaded(name: str = "a.txt") -> FileUploaded:
    return FileUploaded(
        producer="test",
        payload=FileUploadedPayload(
            file_id=uuid.uuid4(),
            owner_id=uuid.uuid4(),
            key=f"k/{name}",
            name=name,
            content_type="text/plain",
            size=1,
            sha256="0" * 64,
        ),
    )


async def start(
    started: list[StreamConsumer], redis: Redis, settings: EventSettings, handler: Dependency
) -> StreamConsumer:
    consumer = StreamConsumer(
        redis, group=GROUP, handlers={FileUploaded: handler}, settings=settings
    )
    await consumer.start({})
    started.append(consumer)
    return consumer


async def publish(redis: Redis, settings: EventSettings, event: FileUploaded) -> None:
    await redis.xadd(
        stream_key("files", settings.stream_prefix),
        {b"type": event.type.encode(), b"event": encode_event(event)},
    )


async def dead_letters(redis: Redis, settings: EventSettings) -> list[dict[bytes, bytes]]:
    dead = await redis.xrange(dead_letter_key(stream_key("files", settings.stream_prefix)))
    return [fields for _, fields in dead]


async def settled(redis: Redis, settings: EventSettings) -> bool:
    """Nothing pending in the group and no retry state left."""
    stream = stream_key("files", settings.stream_prefix)
    pending = await redis.xpending(stream, GROUP)
    states = await cast("Awaitable[int]", redis.hlen(retries_key(stream, GROUP)))
    return int(pending["pending"]) == 0 and states == 0


async def test_a_dependency_down_for_many_more_tries_than_max_tries_is_waited_out(
    redis: Redis, settings: EventSettings, consumers: list[StreamConsumer]
) -> None:
    back_at = time.monotonic() + 2.0

    def down_for_two_seconds(event: FileUploaded) -> Exception | None:
        return Unavailable("embeddings endpoint down") if time.monotonic() < back_at else None

    dependency = Dependency(down_for_two_seconds)
    await start(consumers, redis, settings, dependency)
    event = uploaded()

    await publish(redis, settings, event)
    await dependency.until(lambda: dependency.done == [event.id])
    await eventually(lambda: settled(redis, settings))

    assert len(dependency.calls) > 2 * settings.max_tries  # tries did not end it
    assert await dead_letters(redis, settings) == []


async def test_a_permanent_failure_is_dead_lettered_on_its_first_try(
    redis: Redis, settings: EventSettings, consumers: list[StreamConsumer]
) -> None:
    dependency = Dependency(lambda event: InvalidInput("the document has no text"))
    await start(consumers, redis, settings, dependency)
    event = uploaded()

    await publish(redis, settings, event)
    await eventually(lambda: _has_dead_letters(redis, settings))
    await eventually(lambda: settled(redis, settings))

    [dead] = await dead_letters(redis, settings)
    assert dead[b"event"] == encode_event(event)
    assert dead[b"error"] == b"permanent failure: InvalidInput: the document has no text"
    assert dead[b"deliveries"] == b"1"
    assert len(dependency.calls) == 1


async def _has_dead_letters(redis: Redis, settings: EventSettings) -> bool:
    return bool(await dead_letters(redis, settings))


async def test_past_the_horizon_the_last_attempt_knows_it_and_then_the_entry_is_dead_lettered(
    redis: Redis, settings: EventSettings, consumers: list[StreamConsumer]
) -> None:
    settings = msgspec.structs.replace(settings, retry_horizon_s=1.0)
    dependency = Dependency(lambda event: Unavailable("brevo 503"))
    await start(consumers, redis, settings, dependency)
    event = uploaded()

    await publish(redis, settings, event)
    await eventually(lambda: _has_dead_letters(redis, settings))
    await eventually(lambda: settled(redis, settings))

    finals = [final for _, final in dependency.calls]
    assert finals == [False] * (len(finals) - 1) + [True]
    assert len(finals) > settings.max_tries
    first, last = dependency.calls[0][0], dependency.calls[-1][0]
    assert last - first >= settings.retry_horizon_s
    [dead] = await dead_letters(redis, settings)
    assert dead[b"event"] == encode_event(event)
    assert dead[b"error"].startswith(b"still failing ")
    assert dead[b"error"].endswith(f"({len(finals)} failures): Unavailable: brevo 503".encode())


async def test_the_wait_a_dependency_asks_for_is_honoured(
    redis: Redis, settings: EventSettings, consumers: list[StreamConsumer]
) -> None:
    answers = [Unavailable("rate limited", retry_after_s=1.5)]
    dependency = Dependency(lambda event: answers.pop() if answers else None)
    await start(consumers, redis, settings, dependency)
    event = uploaded()

    await publish(redis, settings, event)
    await dependency.until(lambda: dependency.done == [event.id])

    [(failed_at, _), (sent_at, _)] = dependency.calls
    assert sent_at - failed_at >= 1.5  # not the 0.02 s backoff


async def test_make_streams_shows_retrying_and_dead_lettered_entries_per_group(
    redis: Redis, settings: EventSettings, consumers: list[StreamConsumer]
) -> None:
    def fail(event: FileUploaded) -> Exception:
        if event.payload.name == "bad.txt":
            return InvalidInput("not a document")
        return Unavailable("down", retry_after_s=60)

    dependency = Dependency(fail)
    await start(consumers, redis, settings, dependency)
    for name in ("bad.txt", "later-1.txt", "later-2.txt"):
        await publish(redis, settings, uploaded(name))

    async def two_waiting() -> bool:
        stream = stream_key("files", settings.stream_prefix)
        return await cast("Awaitable[int]", redis.hlen(retries_key(stream, GROUP))) == 2

    await eventually(two_waiting)
    await eventually(lambda: _has_dead_letters(redis, settings))

    [files] = [
        s
        for s in await streams_report(redis, settings.stream_prefix)
        if s.stream.endswith(":files")
    ]
    [group] = files.groups
    assert (files.dead, group.pending, group.lag, group.retrying, group.dead) == (1, 2, 0, 2, 1)
    report = render(await streams_report(redis, settings.stream_prefix))
    assert f"{GROUP}: 1 consumers, 2 pending, lag 0, 2 retrying, 1 dead-lettered" in report


async def test_a_waiting_entry_taken_over_keeps_its_time_and_is_not_taken_for_a_crash(
    redis: Redis, settings: EventSettings, consumers: list[StreamConsumer]
) -> None:
    settings = msgspec.structs.replace(settings, max_deliveries=1)
    first = Dependency(lambda event: Unavailable("down", retry_after_s=3.0))
    doomed = await start(consumers, redis, settings, first)
    event = uploaded()
    await publish(redis, settings, event)
    await first.until(lambda: len(first.calls) == 1)

    async def waiting() -> bool:
        stream = stream_key("files", settings.stream_prefix)
        return await cast("Awaitable[int]", redis.hlen(retries_key(stream, GROUP))) == 1

    await eventually(waiting)
    await doomed.stop(grace_period_s=0.5)  # its worker goes away while the entry waits
    consumers.remove(doomed)

    second = Dependency(lambda event: None)
    await start(consumers, redis, settings, second)
    await second.until(lambda: second.done == [event.id], timeout_s=20)
    await eventually(lambda: settled(redis, settings))

    [(failed_at, _)] = first.calls
    [(retried_at, _)] = second.calls
    assert retried_at - failed_at >= 3.0  # the time the dependency asked for, kept
    assert await dead_letters(redis, settings) == []
