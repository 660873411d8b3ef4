"""Stream consumers against the real Redis (and Postgres for the end-to-end path): every entry
handled, poison and unknown entries dead-lettered, lag left in the stream (reads take only the
free slots), an entry handled before its worker died not run again, groups recreated after
Redis comes back empty, stuck work re-emitted by the reconciler."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import asyncpg
import msgspec
import pytest
from redis.asyncio import Redis

from xtyl_common.events import (
    DocumentFailed,
    DocumentFailedPayload,
    Event,
    EventSettings,
    FileUploaded,
    FileUploadedPayload,
    OutboxRelay,
    StreamConsumer,
    UserCreated,
    add_event,
    encode_event,
    reconciler_cron,
    stream_key,
)
from xtyl_common.events.contracts import dead_letter_key
from xtyl_common.events.ops import render, streams_report
from xtyl_common.events.streams import done_key
from xtyl_common.redis_client import create_redis
from xtyl_devstack.redis import RedisServer
from xtyl_devstack.testing import eventually

pytestmark = pytest.mark.integration

GROUP = "workers"


class Recorder:
    """A handler that records calls; tests await conditions on them, no sleeping."""

    def __init__(self, fail_on: str | None = None, gate: asyncio.Event | None = None) -> None:
        self.calls: Counter[uuid.UUID] = Counter()
        self.tries: dict[uuid.UUID, list[int]] = {}
        self.running = 0
        self.fail_on = fail_on
        self.gate = gate
        self._changed = asyncio.Event()

    async def __call__(self, event: FileUploaded, ctx: dict[str, Any]) -> None:
        self.running += 1
        self._changed.set()
        try:
            if self.gate is not None:
                await self.gate.wait()
            self.tries.setdefault(event.id, []).append(ctx["job_try"])
            if event.payload.name == self.fail_on:
                raise ValueError(f"cannot handle {event.payload.name}")
            self.calls[event.id] += 1
        finally:
            self.running -= 1
            self._changed.set()

    async def until(self, condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
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


@pytest.fixture
def settings(redis_prefix: str) -> EventSettings:
    return EventSettings(
        stream_prefix=redis_prefix + "events",
        read_block_ms=200,
        claim_idle_ms=600,
        max_tries=3,
        retry_backoff_s=0.02,
        max_jobs=20,
        relay_poll_interval_s=0.2,
        relay_backoff_initial_s=0.05,
        relay_backoff_max_s=0.5,
        retry_poll_s=0.02,
        redis_timeout_s=2.0,
        grace_period_s=5.0,
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


async def start_consumer(
    started: list[StreamConsumer], redis: Redis, settings: EventSettings, handler: Any, **kw: Any
) -> StreamConsumer:
    consumer = StreamConsumer(
        redis, group=GROUP, handlers={FileUploaded: handler}, settings=settings, **kw
    )
    await consumer.start({"service": "test"})
    started.append(consumer)
    return consumer


async def xadd(redis: Redis, settings: EventSettings, events: Sequence[Event]) -> None:
    async with redis.pipeline(transaction=False) as pipe:
        for event in events:
            stream = stream_key(event.domain, settings.stream_prefix)
            pipe.xadd(stream, {b"type": event.type.encode(), b"event": encode_event(event)})
        await pipe.execute()


async def pending(redis: Redis, settings: EventSettings) -> int:
    info = await redis.xpending(stream_key("files", settings.stream_prefix), GROUP)
    return int(info["pending"])


async def nothing_pending(redis: Redis, settings: EventSettings) -> bool:
    return await pending(redis, settings) == 0


async def group_info(redis: Redis, settings: EventSettings) -> dict[str, Any]:
    groups: list[dict[str, Any]] = await redis.xinfo_groups(
        stream_key("files", settings.stream_prefix)
    )
    return next(g for g in groups if g["name"] == GROUP.encode())


# --- the end-to-end path with Postgres -----------------------------------------------------


@pytest.fixture
async def schema(schema: str, pool: asyncpg.Pool) -> str:
    """The outbox schema, plus the tables the handlers' side effects go to."""
    async with pool.acquire() as conn:
        await conn.execute(
            f"create table {schema}.effects (event_id uuid primary key, handled int not null);"
            f" create table {schema}.files (id uuid primary key, status text not null)"
        )
    return schema


async def test_1000_events_are_each_handled_once_and_nothing_stays_pending(
    pool: asyncpg.Pool,
    schema: str,
    redis: Redis,
    settings: EventSettings,
    consumers: list[StreamConsumer],
) -> None:
    handled = asyncio.Event()
    count = 0

    async def record_effect(event: FileUploaded, ctx: dict[str, Any]) -> None:
        nonlocal count
        await pool.execute(
            f"insert into {schema}.effects values ($1, 1) on conflict (event_id)"  # noqa: S608
            " do update set handled = effects.handled + 1",
            event.id,
        )
        count += 1
        if count >= 1000:
            handled.set()

    events = [uploaded(f"f{i}") for i in range(1000)]
    for start in range(0, 1000, 100):
        async with pool.acquire() as conn, conn.transaction():
            for event in events[start : start + 100]:
                await add_event(conn, event, schema=schema)
    relay = OutboxRelay(pool, redis, schemas=[schema], settings=settings)
    relay.start()
    try:
        await start_consumer(consumers, redis, settings, record_effect)
        async with asyncio.timeout(30):
            await handled.wait()
        await eventually(lambda: nothing_pending(redis, settings))
    finally:
        await relay.stop()

    rows = await pool.fetch(f"select event_id, handled from {schema}.effects")  # noqa: S608
    assert {r["event_id"] for r in rows} == {e.id for e in events}
    assert {r["handled"] for r in rows} == {1}
    assert (await group_info(redis, settings))["lag"] == 0


async def test_after_redis_restarts_empty_groups_return_and_the_reconciler_reemits_stuck_work(
    pool: asyncpg.Pool,
    schema: str,
    redis_control: RedisServer,
    settings: EventSettings,
    consumers: list[StreamConsumer],
) -> None:
    redis = create_redis(redis_control.url, socket_timeout_s=1.5, connect_timeout_s=0.5)
    done_sql = f"update {schema}.files set status = 'done' where id = $1"  # noqa: S608

    async def mark_done(event: FileUploaded, ctx: dict[str, Any]) -> None:
        await pool.execute(done_sql, event.payload.file_id)
        recorder.calls[event.payload.file_id] += 1
        recorder._changed.set()

    recorder = Recorder()
    relay = OutboxRelay(pool, redis, schemas=[schema], settings=settings)
    relay.start()
    consumer = await start_consumer(consumers, redis, settings, mark_done)

    async def upload(status: str = "pending", *, published: bool = False) -> FileUploaded:
        event = uploaded()
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(
                f"insert into {schema}.files values ($1, $2)",  # noqa: S608
                event.payload.file_id,
                status,
            )
            await add_event(conn, event, schema=schema)
            if published:  # its entry went with the data Redis lost
                await conn.execute(f"update {schema}.outbox set published_at = now()")  # noqa: S608
        return event

    try:
        before = await upload()
        await recorder.until(lambda: recorder.calls[before.payload.file_id] == 1)
        stuck = await upload(published=True)

        await asyncio.to_thread(redis_control.stop)
        await asyncio.to_thread(redis_control.start)  # back, and empty

        after = await upload()
        await recorder.until(lambda: recorder.calls[after.payload.file_id] == 1, timeout_s=15)
        assert consumer.group in [
            g["name"].decode() for g in await redis.xinfo_groups(consumer.streams[0])
        ]

        async def find_stuck(conn: asyncpg.Connection) -> list[FileUploaded]:
            rows = await conn.fetch(f"select id from {schema}.files where status = 'pending'")  # noqa: S608
            return [stuck for row in rows if row["id"] == stuck.payload.file_id]

        cron_job = reconciler_cron(find_stuck, schema=schema, pool_key="db")
        assert await cron_job.coroutine({"db": pool}) == 1
        assert await cron_job.coroutine({"db": pool}) in {0, 1}  # not doubled while waiting
        await recorder.until(lambda: recorder.calls[stuck.payload.file_id] >= 1)
    finally:
        await relay.stop()
        await consumer.stop(grace_period_s=0.5)  # before its client closes, as the relay
        await redis.aclose()
    statuses = await pool.fetch(f"select status from {schema}.files")  # noqa: S608
    assert [r["status"] for r in statuses] == ["done"] * 3


# --- Redis only ----------------------------------------------------------------------------


async def test_a_poison_entry_is_dead_lettered_after_n_tries_while_others_flow(
    redis: Redis, settings: EventSettings, consumers: list[StreamConsumer]
) -> None:
    recorder = Recorder(fail_on="poison.txt")
    await start_consumer(consumers, redis, settings, recorder)
    good = [uploaded(f"good{i}.txt") for i in range(30)]
    poison = uploaded("poison.txt")

    await xadd(redis, settings, [*good[:15], poison, *good[15:]])

    await recorder.until(lambda: all(recorder.calls[e.id] == 1 for e in good))
    dead_stream = dead_letter_key(stream_key("files", settings.stream_prefix))
    await eventually(lambda: _has_entries(redis, dead_stream))
    [(_, dead)] = await redis.xrange(dead_stream)
    assert dead[b"event"] == encode_event(poison)
    assert dead[b"deliveries"] == b"3"
    assert dead[b"group"] == GROUP.encode()
    assert b"ValueError: cannot handle poison.txt" in dead[b"error"]
    assert recorder.tries[poison.id] == [1, 2, 3]
    await eventually(lambda: nothing_pending(redis, settings))


async def _has_entries(redis: Redis, stream: str) -> bool:
    return bool(await redis.xlen(stream))


async def test_an_entry_delivered_too_often_is_dead_lettered_without_running(
    redis: Redis, settings: EventSettings, consumers: list[StreamConsumer]
) -> None:
    settings = msgspec.structs.replace(settings, max_deliveries=2)
    stream = stream_key("files", settings.stream_prefix)
    await redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
    crasher = uploaded("kills-workers.txt")
    await xadd(redis, settings, [crasher])
    # Two workers took it and died (each delivery counts), idle ever since.
    [[_, [(entry_id, _)]]] = await redis.xreadgroup(GROUP, "ghost-1", {stream: ">"})
    await redis.xclaim(stream, GROUP, "ghost-2", 0, [entry_id], idle=10_000)
    recorder = Recorder()

    await start_consumer(consumers, redis, settings, recorder)

    await eventually(lambda: _has_entries(redis, dead_letter_key(stream)))
    [(_, dead)] = await redis.xrange(dead_letter_key(stream))
    assert dead[b"deliveries"] == b"3"
    assert dead[b"entry_id"] == entry_id
    assert recorder.calls[crasher.id] == 0
    assert await pending(redis, settings) == 0


async def test_unknown_types_are_dead_lettered_and_types_without_a_handler_skipped(
    redis: Redis, settings: EventSettings, consumers: list[StreamConsumer]
) -> None:
    recorder = Recorder()
    await start_consumer(consumers, redis, settings, recorder)
    stream = stream_key("files", settings.stream_prefix)
    handled = uploaded()
    await redis.xadd(stream, {b"type": b"file.teleported", b"event": b'{"type":"file.teleported"}'})
    await redis.xadd(stream, {b"type": b"file.deleted", b"event": b"{}"})  # not this group's
    await redis.xadd(stream, {b"type": b"file.uploaded", b"event": b'{"type":"file.uploaded"}'})
    await xadd(redis, settings, [handled])

    await recorder.until(lambda: recorder.calls[handled.id] == 1)
    await eventually(lambda: nothing_pending(redis, settings))
    dead = await redis.xrange(dead_letter_key(stream))
    assert [(d[b"type"], d[b"error"].split(b":")[0]) for _, d in dead] == [
        (b"file.teleported", b"unknown event type 'file.teleported'"),
        (b"file.uploaded", b"undecodable event"),
    ]


async def test_a_saturated_worker_leaves_the_backlog_as_group_lag(
    redis: Redis, settings: EventSettings, consumers: list[StreamConsumer]
) -> None:
    gate = asyncio.Event()
    recorder = Recorder(gate=gate)
    settings = msgspec.structs.replace(settings, max_jobs=3)
    await start_consumer(consumers, redis, settings, recorder)
    events = [uploaded(f"{i}.txt") for i in range(12)]

    await xadd(redis, settings, events)
    await recorder.until(lambda: recorder.running == 3)

    group = await group_info(redis, settings)
    assert (group["pending"], group["lag"]) == (3, 9)
    report = render(await streams_report(redis, settings.stream_prefix))
    assert f"{GROUP}: 1 consumers, 3 pending, lag 9" in report
    gate.set()
    await recorder.until(lambda: sum(recorder.calls.values()) == 12)
    await eventually(lambda: nothing_pending(redis, settings))
    assert (await group_info(redis, settings))["lag"] == 0


async def test_a_read_takes_only_the_free_slots_the_rest_stays_lag(
    redis: Redis, settings: EventSettings, consumers: list[StreamConsumer]
) -> None:
    gate = asyncio.Event()
    recorder = Recorder(gate=gate)
    settings = msgspec.structs.replace(settings, max_jobs=5)
    consumer = await start_consumer(consumers, redis, settings, recorder)
    await xadd(redis, settings, [uploaded(f"busy{i}.txt") for i in range(3)])
    await recorder.until(lambda: recorder.running == 3)

    await xadd(redis, settings, [uploaded(f"more{i}.txt") for i in range(10)])
    await recorder.until(lambda: recorder.running == 5)
    await asyncio.sleep(3 * settings.read_block_ms / 1000)  # reads go on: none takes more

    group = await group_info(redis, settings)
    assert (group["pending"], group["lag"]) == (5, 8)  # 2 free slots: 2 read, not max_jobs
    assert (recorder.running, consumer.running, consumer.free_slots) == (5, 5, 0)
    gate.set()
    await recorder.until(lambda: sum(recorder.calls.values()) == 13)
    await eventually(lambda: nothing_pending(redis, settings))
    assert (await group_info(redis, settings))["lag"] == 0


async def test_an_entry_handled_before_its_worker_died_is_acknowledged_not_run_again(
    redis: Redis, settings: EventSettings, consumers: list[StreamConsumer]
) -> None:
    stream = stream_key("files", settings.stream_prefix)
    await redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
    handled, unhandled = uploaded("handled.txt"), uploaded("unhandled.txt")
    await xadd(redis, settings, [handled, unhandled])
    # A worker read both, handled the first (its done marker, written right after the
    # handler returned) and died before the batched XACK.
    [[_, read]] = await redis.xreadgroup(GROUP, "ghost", {stream: ">"})
    handled_id = read[0][0].decode()
    await redis.set(done_key(stream, GROUP, handled_id), b"1", px=60_000)
    recorder = Recorder()

    await start_consumer(consumers, redis, settings, recorder)

    await recorder.until(lambda: recorder.calls[unhandled.id] == 1)
    await eventually(lambda: nothing_pending(redis, settings))
    assert recorder.calls[handled.id] == 0
    assert recorder.tries[unhandled.id] == [2]  # its second delivery
    assert await redis.xlen(dead_letter_key(stream)) == 0


async def test_a_stopping_consumer_finishes_running_jobs_and_leaves_the_rest_to_others(
    redis: Redis, settings: EventSettings, consumers: list[StreamConsumer]
) -> None:
    gate = asyncio.Event()
    slow = Recorder(gate=gate)
    settings = msgspec.structs.replace(settings, max_jobs=2)
    first = await start_consumer(consumers, redis, settings, slow)
    events = [uploaded(f"{i}.txt") for i in range(6)]
    await xadd(redis, settings, events)
    await slow.until(lambda: slow.running == 2)

    stopping = asyncio.create_task(first.stop(grace_period_s=5.0))
    await asyncio.sleep(0)  # the consumer stops reading first
    gate.set()
    await stopping
    consumers.remove(first)

    assert sum(slow.calls.values()) == 2
    assert (await group_info(redis, settings))["lag"] == 4
    second = Recorder()
    await start_consumer(consumers, redis, settings, second)
    await second.until(lambda: sum(second.calls.values()) == 4)
    assert set(slow.calls) | set(second.calls) == {e.id for e in events}
    await eventually(lambda: nothing_pending(redis, settings))


async def test_events_of_several_domains_reach_one_group(
    redis: Redis, settings: EventSettings, consumers: list[StreamConsumer]
) -> None:
    seen: list[str] = []
    arrived = asyncio.Event()

    async def note(event: Event, ctx: dict[str, Any]) -> None:
        seen.append(event.type)
        if len(seen) == 2:
            arrived.set()

    consumer = StreamConsumer(
        redis,
        group=GROUP,
        handlers={"file.uploaded": note, DocumentFailed: note, UserCreated: note},
        settings=settings,
    )
    await consumer.start()
    consumers.append(consumer)
    failed = DocumentFailed(
        producer="rag",
        payload=DocumentFailedPayload(document_id=uuid.uuid4(), owner_id=uuid.uuid4(), reason="x"),
    )

    await xadd(redis, settings, [uploaded(), failed])

    async with asyncio.timeout(10):
        await arrived.wait()
    assert sorted(seen) == ["document.failed", "file.uploaded"]
    assert len(consumer.streams) == 3
