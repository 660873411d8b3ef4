"""Stream retention against a real Redis: handled entries go once past their time, entries a
group has not handled stay however old, dead letters go after theirs."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from redis.asyncio import Redis
from redis.exceptions import NoPermissionError
from structlog.testing import capture_logs

from xtyl_common.events import (
    EventSettings,
    FileDeleted,
    FileDeletedPayload,
    OutboxRelay,
    add_event,
    stream_key,
)
from xtyl_common.events.contracts import DOMAINS, USERS, dead_letter_key
from xtyl_common.events.retention import trim_streams
from xtyl_common.redis_client import create_redis
from xtyl_devstack.testing import eventually

from .conftest import redis_user_without

pytestmark = pytest.mark.integration

DAY_MS = 24 * 3600 * 1000


@pytest.fixture
def prefix(redis_prefix: str) -> str:
    return f"{redis_prefix}retention-{uuid.uuid4().hex[:8]}"


async def now_ms(redis: Redis) -> int:
    seconds, micros = await redis.time()
    return (int(seconds) * 1_000_000 + int(micros)) // 1000


async def ids(redis: Redis, key: str) -> list[str]:
    return [entry_id.decode() for entry_id, _ in await redis.xrange(key)]


async def trim(redis: Redis, prefix: str) -> dict[str, int]:
    return await trim_streams(
        redis,
        prefix,
        DOMAINS,
        retention_s=7 * 24 * 3600,
        dead_letter_retention_s=30 * 24 * 3600,
        timeout_s=5.0,
    )


async def read_all(redis: Redis, key: str, group: str, *, count: int, ack: int) -> None:
    """Deliver ``count`` entries to ``group`` and acknowledge the first ``ack`` of them."""
    [[_, entries]] = await redis.xreadgroup(group, "c1", {key: ">"}, count=count)
    if ack:
        await redis.xack(key, group, *[entry_id for entry_id, _ in entries[:ack]])


async def test_handled_entries_go_after_the_retention_and_unhandled_ones_stay(
    redis: Redis, prefix: str
) -> None:
    key = stream_key(USERS, prefix)
    eight_days_ago = await now_ms(redis) - 8 * DAY_MS
    old = [f"{eight_days_ago}-{seq}" for seq in range(1, 6)]
    for entry_id in old:
        await redis.xadd(key, {"event": b"{}"}, id=entry_id)
    recent = [
        (await redis.xadd(key, {"event": b"{}"})).decode(),
        (await redis.xadd(key, {"event": b"{}"})).decode(),
    ]
    await redis.xgroup_create(key, "notify", id="0")
    await redis.xgroup_create(key, "storage", id="0")
    await read_all(redis, key, "storage", count=100, ack=7)  # storage handled everything
    await read_all(redis, key, "notify", count=3, ack=2)  # old[2] pending, old[3:] unread

    assert await trim(redis, prefix) == {key: 2}
    assert await ids(redis, key) == old[2:] + recent  # notify's pending and unread entries stay
    assert await trim(redis, prefix) == {}  # nothing more until notify moves on

    await redis.xack(key, "notify", old[2])
    await read_all(redis, key, "notify", count=100, ack=4)  # notify handled everything too
    assert await trim(redis, prefix) == {key: 3}
    assert await ids(redis, key) == recent  # handled, but younger than the retention


async def test_a_stream_without_groups_keeps_its_entries(redis: Redis, prefix: str) -> None:
    key = stream_key(USERS, prefix)
    old_id = f"{await now_ms(redis) - 60 * DAY_MS}-1"
    await redis.xadd(key, {"event": b"{}"}, id=old_id)

    assert await trim(redis, prefix) == {}
    assert await ids(redis, key) == [old_id]


async def test_dead_letters_go_after_their_own_retention(redis: Redis, prefix: str) -> None:
    dead = dead_letter_key(stream_key(USERS, prefix))
    now = await now_ms(redis)
    kept_ids = [f"{now - 29 * DAY_MS}-1", f"{now}-1"]
    await redis.xadd(dead, {"event": b"{}"}, id=f"{now - 31 * DAY_MS}-1")
    for entry_id in kept_ids:
        await redis.xadd(dead, {"event": b"{}"}, id=entry_id)

    assert await trim(redis, prefix) == {dead: 1}
    assert await ids(redis, dead) == kept_ids


async def test_the_relay_trims_at_its_prune(
    pool: asyncpg.Pool, schema: str, redis: Redis, prefix: str
) -> None:
    key = stream_key(USERS, prefix)
    old_id = f"{await now_ms(redis) - 2 * DAY_MS}-1"
    await redis.xadd(key, {"event": b"{}"}, id=old_id)
    await redis.xgroup_create(key, "notify", id="0")
    await read_all(redis, key, "notify", count=1, ack=1)
    settings = EventSettings(stream_prefix=prefix, stream_retention_s=24 * 3600)
    relay = OutboxRelay(pool, redis, schemas=[schema], settings=settings)

    assert await relay.trim_streams() == 1
    assert await ids(redis, key) == []


@pytest.fixture
async def redis_without_xtrim(redis: Redis, redis_url: str) -> AsyncIterator[Redis]:
    """A client of a Redis user who may do anything but XTRIM."""
    async with redis_user_without(redis, redis_url, "xtrim") as url:
        client = create_redis(url)
        try:
            yield client
        finally:
            await client.aclose()


async def test_a_trim_that_fails_neither_stops_publishing_nor_fails_the_relay(
    pool: asyncpg.Pool, schema: str, redis_without_xtrim: Redis, prefix: str
) -> None:
    settings = EventSettings(stream_prefix=prefix, relay_poll_interval_s=0.05, prune_interval_s=0.1)
    relay = OutboxRelay(pool, redis_without_xtrim, schemas=[schema], settings=settings)
    with capture_logs() as logs:
        relay.start()
        try:
            await publish_three_during_prunes(relay, pool, schema, redis_without_xtrim, prefix)
        finally:
            await relay.stop()
    refused = [e for e in logs if e["event"] == "streams_not_trimmed"]
    assert len(refused) >= 2  # tried again at each prune
    assert "xtrim" in refused[0]["error"]


async def publish_three_during_prunes(
    relay: OutboxRelay, pool: asyncpg.Pool, schema: str, redis: Redis, prefix: str
) -> None:
    """Three events committed while prunes pass (each trim refused): all three published, the
    refusal is the trim's own, and the relay is healthy."""
    for _ in range(3):  # several prunes pass, each trim refused
        async with pool.acquire() as conn, conn.transaction():
            event = FileDeleted(
                producer="test",
                payload=FileDeletedPayload(file_id=uuid.uuid4(), owner_id=uuid.uuid4()),
            )
            await add_event(conn, event, schema=schema)
        await asyncio.sleep(0.15)
    key = stream_key("files", prefix)

    async def all_published() -> bool:
        return await redis.xlen(key) == 3

    await eventually(all_published)
    with pytest.raises(NoPermissionError):
        await relay.trim_streams()
    assert relay.healthy()
