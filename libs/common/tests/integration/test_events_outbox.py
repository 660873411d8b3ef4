"""Outbox and relay against the real Postgres and Redis: rows reach the stream once, in order,
through Redis outages and with several relays at once."""

from __future__ import annotations

import asyncio
import time
import uuid

import asyncpg
import msgspec
import pytest
from redis.asyncio import Redis

from xtyl_common.events import (
    EventSettings,
    FileDeleted,
    FileDeletedPayload,
    OutboxRelay,
    UserCreated,
    add_event,
    decode_event,
    stream_key,
)
from xtyl_common.redis_client import create_redis
from xtyl_devstack.redis import RedisServer
from xtyl_devstack.testing import eventually

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(redis_prefix: str) -> EventSettings:
    return EventSettings(
        stream_prefix=redis_prefix + "events",
        relay_batch_size=50,
        relay_poll_interval_s=0.2,
        relay_backoff_initial_s=0.05,
        relay_backoff_max_s=0.5,
        redis_timeout_s=2.0,
    )


def _deleted(owner: uuid.UUID) -> FileDeleted:
    return FileDeleted(
        producer="test", payload=FileDeletedPayload(file_id=uuid.uuid4(), owner_id=owner)
    )


async def _commit_events(pool: asyncpg.Pool, schema: str, events: list[FileDeleted]) -> None:
    async with pool.acquire() as conn, conn.transaction():
        for event in events:
            await add_event(conn, event, schema=schema)


async def _stream_event_ids(redis: Redis, stream: str) -> list[uuid.UUID]:
    entries = await redis.xrange(stream)
    return [decode_event(fields[b"event"]).id for _, fields in entries]


async def _unpublished(pool: asyncpg.Pool, schema: str) -> int:
    count: int = await pool.fetchval(
        f"select count(*) from {schema}.outbox where published_at is null"  # noqa: S608
    )
    return count


async def test_a_committed_event_is_published_with_its_envelope(
    pool: asyncpg.Pool, schema: str, redis: Redis, settings: EventSettings
) -> None:
    event = _deleted(uuid.uuid4())
    await _commit_events(pool, schema, [event])

    published = await OutboxRelay(
        pool, redis, schemas=[schema], settings=settings
    ).publish_pending()

    entries = await redis.xrange(stream_key("files", settings.stream_prefix))
    assert published == 1
    assert len(entries) == 1
    entry_id, fields = entries[0]
    assert fields[b"type"] == b"file.deleted"
    assert decode_event(fields[b"event"]) == event
    row = await pool.fetchrow(f"select published_at, stream_id from {schema}.outbox")  # noqa: S608
    assert row is not None
    assert row["published_at"] is not None
    assert row["stream_id"] == entry_id.decode()


async def test_a_rolled_back_change_publishes_nothing(
    pool: asyncpg.Pool, schema: str, redis: Redis, settings: EventSettings
) -> None:
    async def change_that_fails() -> None:
        async with pool.acquire() as conn, conn.transaction():
            await add_event(conn, _deleted(uuid.uuid4()), schema=schema)
            raise RuntimeError("the change failed")

    with pytest.raises(RuntimeError):
        await change_that_fails()

    assert (
        await OutboxRelay(pool, redis, schemas=[schema], settings=settings).publish_pending() == 0
    )
    assert await redis.exists(stream_key("files", settings.stream_prefix)) == 0


async def test_sql_triggers_write_events_with_add_event(
    pool: asyncpg.Pool, schema: str, redis: Redis, settings: EventSettings
) -> None:
    user_id = uuid.uuid4()
    await pool.execute(
        "select xtyl_events.add_event($1, 'users', 'user.created',"
        " jsonb_build_object('user_id', $2::uuid, 'email', 'a@example.com'), 'gateway')",
        schema,
        user_id,
    )

    published = await OutboxRelay(
        pool, redis, schemas=[schema], settings=settings
    ).publish_pending()

    entries = await redis.xrange(stream_key("users", settings.stream_prefix))
    # (this test failed once in ~12 parallel runs, cause unknown: say what was seen if again)
    assert published == 1, (published, entries)
    assert len(entries) == 1, entries
    [(_, fields)] = entries
    event = decode_event(fields[b"event"])
    assert isinstance(event, UserCreated)
    assert event.payload.user_id == user_id
    assert event.payload.email == "a@example.com"


async def test_notify_wakes_the_relay_without_waiting_for_the_poll(
    pool: asyncpg.Pool, schema: str, redis: Redis, settings: EventSettings
) -> None:
    relay = OutboxRelay(
        pool,
        redis,
        schemas=[schema],
        settings=msgspec.structs.replace(settings, relay_poll_interval_s=30.0),
    )
    relay.start()
    stream = stream_key("files", settings.stream_prefix)
    try:
        await eventually(lambda: relay_listening(relay))
        started = time.monotonic()
        await _commit_events(pool, schema, [_deleted(uuid.uuid4())])
        await eventually(lambda: _has_entries(redis, stream, 1), timeout_s=5.0)
        assert time.monotonic() - started < 2.0
    finally:
        await relay.stop()


async def relay_listening(relay: OutboxRelay) -> bool:
    return relay._listen_conn is not None


async def _has_entries(redis: Redis, stream: str, count: int) -> bool:
    length: int = await redis.xlen(stream)
    return length >= count


async def test_two_relays_publish_every_row_once_in_commit_order(
    pool: asyncpg.Pool, schema: str, redis: Redis, settings: EventSettings
) -> None:
    owner = uuid.uuid4()
    events = [_deleted(owner) for _ in range(600)]
    relays = [OutboxRelay(pool, redis, schemas=[schema], settings=settings) for _ in range(2)]
    for relay in relays:
        relay.start()
    try:
        for start in range(0, len(events), 20):
            await _commit_events(pool, schema, events[start : start + 20])
        await eventually(lambda: _unpublished_is(pool, schema, 0))
    finally:
        for relay in relays:
            await relay.stop()

    published = await _stream_event_ids(redis, stream_key("files", settings.stream_prefix))
    assert published == [e.id for e in events]


async def _unpublished_is(pool: asyncpg.Pool, schema: str, count: int) -> bool:
    return await _unpublished(pool, schema) == count


async def test_redis_down_for_10s_then_all_20_events_published_exactly_once_in_order(
    pool: asyncpg.Pool, schema: str, redis_control: RedisServer, settings: EventSettings
) -> None:
    redis = create_redis(redis_control.url, socket_timeout_s=1.0, connect_timeout_s=0.5)
    relays = [OutboxRelay(pool, redis, schemas=[schema], settings=settings) for _ in range(2)]
    for relay in relays:
        relay.start()
    events = [_deleted(uuid.uuid4()) for _ in range(20)]
    try:
        redis_control.stop()
        for event in events:  # producers keep committing for the 10 s Redis is away
            await _commit_events(pool, schema, [event])
            await asyncio.sleep(0.5)
        assert await _unpublished(pool, schema) == 20
        attempts = await pool.fetchval(f"select max(attempts) from {schema}.outbox")  # noqa: S608
        assert attempts >= 1
        await asyncio.to_thread(redis_control.start)
        await eventually(lambda: _unpublished_is(pool, schema, 0))
    finally:
        for relay in relays:
            await relay.stop()
    published = await _stream_event_ids(redis, stream_key("files", settings.stream_prefix))
    await redis.aclose()
    assert published == [e.id for e in events]


async def test_published_rows_are_pruned_after_the_retention(
    pool: asyncpg.Pool, schema: str, redis: Redis, settings: EventSettings
) -> None:
    await _commit_events(pool, schema, [_deleted(uuid.uuid4()) for _ in range(3)])
    relay = OutboxRelay(pool, redis, schemas=[schema], settings=settings)
    await relay.publish_pending()
    await pool.execute(
        f"update {schema}.outbox set published_at = now() - interval '8 days'"  # noqa: S608
        " where seq < 3"
    )
    await _commit_events(pool, schema, [_deleted(uuid.uuid4())])

    assert await relay.prune() == 2

    remaining = await pool.fetch(
        f"select seq, published_at from {schema}.outbox order by seq"  # noqa: S608
    )
    assert [(r["seq"], r["published_at"] is None) for r in remaining] == [(3, False), (4, True)]
