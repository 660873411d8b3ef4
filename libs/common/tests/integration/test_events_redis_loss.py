"""Redis lost its data (restarted empty on the same port, as a failover without persistence
does): workers live on (their service started once), shut down cleanly even with Redis down,
and what the lost stream entries carried is published again from the outbox, or re-created
from the producer's tables where the outbox no longer has it."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Sequence
from datetime import UTC, datetime
from typing import cast

import asyncpg
import msgspec
import pytest
from redis.asyncio import Redis

from xtyl_common.events import (
    Event,
    EventSettings,
    FileUploaded,
    FileUploadedPayload,
    OutboxRelay,
    add_event,
    decode_event,
    encode_event,
    stream_key,
)
from xtyl_common.events.recovery import EventSource
from xtyl_common.events.replay import main as replay_main
from xtyl_common.events.replay import parse_since
from xtyl_common.redis_client import create_redis
from xtyl_devstack.ports import free_port
from xtyl_devstack.redis import RedisServer
from xtyl_devstack.testing import eventually

pytestmark = [pytest.mark.integration, pytest.mark.slow]

GROUP = "embedder"

#: A worker process as the services run theirs (worker_entry's main: run_stream_worker); each
#: handled event is marked in a set on the session's Redis, which these tests do not restart,
#: and so are its startups and its shutdown.
WORKER = """
from typing import Any
from xtyl_common.events import EventSettings, FileUploaded, stream_worker_settings, worker_entry
from xtyl_common.redis_client import create_redis
from xtyl_common.settings import BaseSettings

class EmbedSettings(BaseSettings, frozen=True, kw_only=True):
    redis_url: str
    marks_url: str
    marks_key: str

def worker_settings(settings: EmbedSettings, events: EventSettings) -> dict[str, Any]:
    async def startup(ctx):
        ctx["marks"] = create_redis(settings.marks_url)
        await ctx["marks"].incr(settings.marks_key + ":startups")

    async def shutdown(ctx):
        await ctx["marks"].set(settings.marks_key + ":shutdown", "1")
        await ctx["marks"].aclose()

    async def embed(event, ctx):
        await ctx["marks"].sadd(settings.marks_key, str(event.id))

    return stream_worker_settings(
        redis_url=settings.redis_url, group="embedder", handlers={FileUploaded: embed},
        events=events, on_startup=startup, on_shutdown=shutdown, poll_delay=0.1,
    )

__getattr__, main = worker_entry(EmbedSettings, worker_settings, program="embed-worker")
main()
"""


@pytest.fixture
def settings(redis_prefix: str) -> EventSettings:
    return EventSettings(
        stream_prefix=redis_prefix + "events",
        relay_poll_interval_s=0.1,
        relay_backoff_initial_s=0.05,
        relay_backoff_max_s=0.5,
        recovery_check_interval_s=0.2,
        read_block_ms=200,
        redis_timeout_s=1.0,
    )


@pytest.fixture
async def marks(redis_url: str) -> AsyncIterator[Redis]:
    client = create_redis(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def bus(redis_control: RedisServer) -> AsyncIterator[Redis]:
    """A client of the private Redis that the tests wipe."""
    client = create_redis(redis_control.url, socket_timeout_s=1.0, connect_timeout_s=0.5)
    yield client
    await client.aclose()


def uploaded(file_id: uuid.UUID | None = None) -> FileUploaded:
    return FileUploaded(
        producer="test",
        payload=FileUploadedPayload(
            file_id=file_id or uuid.uuid4(),
            owner_id=uuid.uuid4(),
            key="k",
            name="n.txt",
            content_type="text/plain",
            size=1,
            sha256="0" * 64,
        ),
    )


async def restart_empty(server: RedisServer, bus: Redis) -> None:
    """Stop Redis and start it again on the same port, with nothing in it."""
    await asyncio.to_thread(server.stop)
    await asyncio.to_thread(server.start)
    assert not list((server.data_dir).glob("*.rdb")), "the test Redis must keep nothing"
    assert not list((server.data_dir).glob("appendonly*")), "the test Redis must keep nothing"
    # Nothing a test put there before is left (what the relays write from now on is new).
    assert await bus.exists(stream_key("files", "never-used")) == 0


async def commit(pool: asyncpg.Pool, schema: str, events: Sequence[Event]) -> None:
    async with pool.acquire() as conn, conn.transaction():
        for event in events:
            await add_event(conn, event, schema=schema)


async def stream_ids(redis: Redis, settings: EventSettings) -> list[uuid.UUID]:
    entries = await redis.xrange(stream_key("files", settings.stream_prefix))
    return [decode_event(fields[b"event"]).id for _, fields in entries]


async def all_published(pool: asyncpg.Pool, schema: str) -> bool:
    left: int = await pool.fetchval(
        f"select count(*) from {schema}.outbox where published_at is null"  # noqa: S608
    )
    return left == 0


async def start_worker(
    redis_control: RedisServer, redis_url: str, key: str, settings: EventSettings
) -> asyncio.subprocess.Process:
    env = {
        **os.environ,
        **{f"EVENTS_{k.upper()}": str(v) for k, v in msgspec.structs.asdict(settings).items()},
        "REDIS_URL": redis_control.url,
        "MARKS_URL": redis_url,
        "MARKS_KEY": key,
        "LOG_LEVEL": "warning",
        "HOST": "127.0.0.1",
        "HEALTH_PORT": str(free_port()),  # its health listener; never the shared default
    }
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        WORKER,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def test_a_stream_worker_outlives_redis_down_then_restarted_empty(
    redis_control: RedisServer,
    bus: Redis,
    marks: Redis,
    redis_url: str,
    redis_prefix: str,
    settings: EventSettings,
) -> None:
    key = redis_prefix + "handled"
    worker = await start_worker(redis_control, redis_url, key, settings)
    stream = stream_key("files", settings.stream_prefix)

    async def handled(event: Event) -> bool:
        return bool(await cast("Awaitable[int]", marks.sismember(key, str(event.id))))

    try:
        first = uploaded()
        await bus.xadd(stream, {b"type": b"file.uploaded", b"event": encode_event(first)})
        await eventually(lambda: handled(first), timeout_s=30)

        await asyncio.to_thread(redis_control.stop)
        await asyncio.sleep(3.0)  # arq's own poll loop fails ~10 times meanwhile
        assert worker.returncode is None, "the worker exited while Redis was down"
        await asyncio.to_thread(redis_control.start)  # back, and empty

        second = uploaded()
        await bus.xadd(stream, {b"type": b"file.uploaded", b"event": encode_event(second)})
        await eventually(lambda: handled(second), timeout_s=30)  # its group came back
        assert worker.returncode is None

        worker.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            assert await worker.wait() == 0
        assert await marks.get(key + ":shutdown") == b"1"  # on_shutdown ran
        assert await marks.get(key + ":startups") == b"1"  # on_startup ran once
    finally:
        if worker.returncode is None:
            worker.kill()
            await worker.wait()


async def test_a_stream_worker_stopped_while_redis_is_down_still_shuts_its_service_down(
    redis_control: RedisServer,
    bus: Redis,
    marks: Redis,
    redis_url: str,
    redis_prefix: str,
    settings: EventSettings,
) -> None:
    key = redis_prefix + "handled"
    worker = await start_worker(redis_control, redis_url, key, settings)
    stream = stream_key("files", settings.stream_prefix)
    try:
        first = uploaded()
        await bus.xadd(stream, {b"type": b"file.uploaded", b"event": encode_event(first)})

        async def handled() -> bool:
            return bool(await cast("Awaitable[int]", marks.sismember(key, str(first.id))))

        await eventually(handled, timeout_s=30)
        await asyncio.to_thread(redis_control.stop)

        worker.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            assert await worker.wait() == 0
        assert await marks.get(key + ":shutdown") == b"1"  # the service's on_shutdown ran
    finally:
        if worker.returncode is None:
            worker.kill()
            await worker.wait()


async def test_entries_redis_lost_are_published_again_from_the_first_one_not_handled(
    pool: asyncpg.Pool,
    schema: str,
    redis_control: RedisServer,
    bus: Redis,
    settings: EventSettings,
) -> None:
    stream = stream_key("files", settings.stream_prefix)
    await bus.xgroup_create(stream, GROUP, id="0", mkstream=True)
    relay = OutboxRelay(pool, bus, schemas=[schema], settings=settings)
    relay.start()
    events = [uploaded() for _ in range(10)]
    try:
        await commit(pool, schema, events)
        await eventually(lambda: all_published(pool, schema))
        # a consumer handled (acknowledged) the first four and is working on the next two
        read = await bus.xreadgroup(GROUP, "c1", {stream: ">"}, count=6)
        ids = [entry_id for entry_id, _ in read[0][1]]
        await bus.xack(stream, GROUP, *ids[:4])
        first_unhandled = ids[4].decode()

        async def point_recorded() -> bool:
            recorded = await pool.fetchval(
                "select replay_from ->> 'files' from xtyl_events.stream_checkpoints"
                " where outbox_schema = $1 and stream_prefix = $2",
                schema,
                settings.stream_prefix,
            )
            return recorded == first_unhandled

        await eventually(point_recorded)

        await restart_empty(redis_control, bus)

        async def lost_ones_back() -> bool:
            return len(await stream_ids(bus, settings)) >= 6 and await all_published(pool, schema)

        await eventually(lost_ones_back, timeout_s=20)
        await asyncio.sleep(1.0)  # several more checks: nothing is published a third time
    finally:
        await relay.stop()
    assert await stream_ids(bus, settings) == [e.id for e in events[4:]]
    reasons = await pool.fetch(
        f"select last_error from {schema}.outbox order by seq"  # noqa: S608
    )
    assert [r["last_error"] is None for r in reasons] == [True] * 10  # published cleanly again


async def test_what_the_outbox_no_longer_holds_is_recreated_from_the_producers_tables(
    pool: asyncpg.Pool,
    schema: str,
    redis_control: RedisServer,
    bus: Redis,
    settings: EventSettings,
) -> None:
    await pool.execute(
        f"create table {schema}.files (id uuid primary key, created_at timestamptz not null"
        " default now())"
    )

    async def files_since(conn: asyncpg.Connection, since: datetime) -> list[Event]:
        rows = await conn.fetch(
            f"select id from {schema}.files where created_at >= $1 order by created_at",  # noqa: S608
            since,
        )
        return [uploaded(row["id"]) for row in rows]

    source = EventSource(name="test.files", schema=schema, domain="files", scan=files_since)
    # the outbox keeps published rows one second: the lost entries' rows are gone by the loss
    short = msgspec.structs.replace(settings, outbox_retention_s=1.0, prune_interval_s=0.2)
    stream = stream_key("files", settings.stream_prefix)
    await bus.xgroup_create(stream, GROUP, id="0", mkstream=True)  # never reads: all is lag
    relay = OutboxRelay(pool, bus, schemas=[schema], settings=short, sources=[source])
    relay.start()
    file_ids = [uuid.uuid4() for _ in range(3)]
    try:
        async with pool.acquire() as conn, conn.transaction():
            for file_id in file_ids:
                await conn.execute(f"insert into {schema}.files (id) values ($1)", file_id)  # noqa: S608
                await add_event(conn, uploaded(file_id), schema=schema)

        async def pruned() -> bool:
            left: int = await pool.fetchval(f"select count(*) from {schema}.outbox")  # noqa: S608
            return left == 0 and len(await stream_ids(bus, settings)) == 3

        await eventually(pruned)

        await restart_empty(redis_control, bus)

        async def recreated() -> bool:
            entries = await bus.xrange(stream)
            return len(entries) >= 3

        await eventually(recreated, timeout_s=20)
        await asyncio.sleep(1.0)
        entries = await bus.xrange(stream)
    finally:
        await relay.stop()
    announced = [decode_event(fields[b"event"]) for _, fields in entries]
    assert sorted(str(cast(FileUploaded, e).payload.file_id) for e in announced) == sorted(
        str(f) for f in file_ids
    )


async def test_replay_command_publishes_again_what_was_published_since_the_given_moment(
    pool: asyncpg.Pool,
    schema: str,
    migrated_database_url: str,
    redis_url: str,
    settings: EventSettings,
    capsys: pytest.CaptureFixture[str],
) -> None:
    redis = create_redis(redis_url)
    relay = OutboxRelay(pool, redis, schemas=[schema], settings=settings)
    relay.start()
    before, after = [uploaded() for _ in range(3)], [uploaded() for _ in range(2)]
    try:
        await commit(pool, schema, before)
        await eventually(lambda: all_published(pool, schema))
        await asyncio.sleep(0.05)
        moment = await pool.fetchval("select now()")
        await commit(pool, schema, after)
        await eventually(lambda: all_published(pool, schema))

        code = await asyncio.to_thread(
            replay_main,
            [
                "--since",
                moment.astimezone(UTC).isoformat(),
                "--schema",
                schema,
                "--database-url",
                migrated_database_url,
            ],
        )
        assert code == 0
        assert f"{schema}: 2 outbox rows published since then queued again" in (
            capsys.readouterr().out
        )

        async def replayed() -> bool:
            return len(await stream_ids(redis, settings)) == 7

        await eventually(replayed)
    finally:
        await relay.stop()
        published = await stream_ids(redis, settings)
        await redis.aclose()
    assert published == [e.id for e in [*before, *after, *after]]


def test_replay_since_takes_a_duration_or_an_iso_time() -> None:
    now = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
    assert parse_since("2h", now=now) == datetime(2025, 6, 1, 10, 0, tzinfo=UTC)
    assert parse_since("2025-06-01T11:30", now=now) == datetime(2025, 6, 1, 11, 30, tzinfo=UTC)
    assert replay_main(["--since", "yesterday", "--database-url", "postgresql://x/y"]) == 2
