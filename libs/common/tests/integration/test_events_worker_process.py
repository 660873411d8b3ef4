"""Real arq worker processes built with ``stream_worker_settings``: one SIGKILLed mid-job loses
nothing (another worker takes its entries over), one SIGTERMed finishes what it runs."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable
from typing import Any, cast

import msgspec
import pytest
from redis.asyncio import Redis

from xtyl_common.events import (
    EventSettings,
    FileUploaded,
    FileUploadedPayload,
    StreamConsumer,
    encode_event,
    stream_key,
)
from xtyl_common.redis_client import create_redis
from xtyl_devstack.testing import eventually

pytestmark = [pytest.mark.integration, pytest.mark.slow]

GROUP = "embedder"

#: A worker process: each job records that it started (a Redis set), then works for WORK_S.
WORKER = """
import asyncio, os, sys
import msgspec
from arq.worker import run_worker
from xtyl_common.events import EventSettings, FileUploaded, stream_worker_settings
from xtyl_common.redis_client import create_redis

settings = msgspec.json.decode(os.environ["EVENTS_JSON"], type=EventSettings)
work_s = float(os.environ["WORK_S"])

async def startup(ctx):
    ctx["marks"] = create_redis(os.environ["REDIS_URL"])

async def shutdown(ctx):
    await ctx["marks"].aclose()

async def embed(event, ctx):
    await ctx["marks"].sadd(os.environ["STARTED_KEY"], str(event.id))
    await asyncio.sleep(work_s)
    await ctx["marks"].sadd(os.environ["DONE_KEY"], str(event.id))

run_worker(stream_worker_settings(
    redis_url=os.environ["REDIS_URL"], group="embedder", handlers={FileUploaded: embed},
    events=settings, on_startup=startup, on_shutdown=shutdown, consumer_name="doomed",
))
"""


@pytest.fixture
def settings(redis_prefix: str) -> EventSettings:
    return EventSettings(
        stream_prefix=redis_prefix + "events",
        read_block_ms=200,
        claim_idle_ms=800,
        retry_poll_s=0.02,
        max_jobs=10,
        redis_timeout_s=2.0,
        grace_period_s=10.0,
    )


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = create_redis(redis_url)
    yield client
    await client.aclose()


def uploaded() -> FileUploaded:
    return FileUploaded(
        producer="test",
        payload=FileUploadedPayload(
            file_id=uuid.uuid4(),
            owner_id=uuid.uuid4(),
            key="k",
            name="n",
            content_type="text/plain",
            size=1,
            sha256="0" * 64,
        ),
    )


async def publish(redis: Redis, settings: EventSettings, events: list[FileUploaded]) -> None:
    stream = stream_key("files", settings.stream_prefix)
    for event in events:
        await redis.xadd(stream, {b"type": b"file.uploaded", b"event": encode_event(event)})


async def start_worker(
    redis_url: str, redis_prefix: str, settings: EventSettings, work_s: float
) -> asyncio.subprocess.Process:
    env = {
        **os.environ,
        "EVENTS_JSON": msgspec.json.encode(settings).decode(),
        "REDIS_URL": redis_url,
        "WORK_S": str(work_s),
        "STARTED_KEY": redis_prefix + "started",
        "DONE_KEY": redis_prefix + "done",
        "LOG_LEVEL": "warning",
    }
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        WORKER,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def count_marks(redis: Redis, key: str) -> int:
    """How many jobs the worker marked in the set ``key``."""
    return await cast("Awaitable[int]", redis.scard(key))


async def group_state(redis: Redis, settings: EventSettings) -> dict[str, Any]:
    groups: list[dict[str, Any]] = await redis.xinfo_groups(
        stream_key("files", settings.stream_prefix)
    )
    return next((g for g in groups if g["name"] == GROUP.encode()), {"pending": 0, "lag": None})


async def test_a_sigkilled_worker_loses_nothing_another_worker_completes_its_entries(
    redis: Redis, redis_url: str, redis_prefix: str, settings: EventSettings
) -> None:
    events = [uploaded() for _ in range(10)]
    await publish(redis, settings, events)
    worker = await start_worker(redis_url, redis_prefix, settings, work_s=3600)

    async def took_all_ten() -> bool:
        return await count_marks(redis, redis_prefix + "started") == 10

    try:
        await eventually(took_all_ten)
        assert (await group_state(redis, settings))["pending"] == 10
    finally:
        worker.send_signal(signal.SIGKILL)
        await worker.wait()

    handled: dict[uuid.UUID, list[int]] = {}
    all_done = asyncio.Event()

    async def embed_idempotently(event: FileUploaded, ctx: dict[str, Any]) -> None:
        handled.setdefault(event.id, []).append(ctx["job_try"])
        if len(handled) == 10:
            all_done.set()

    survivor = StreamConsumer(
        redis, group=GROUP, handlers={FileUploaded: embed_idempotently}, settings=settings
    )
    await survivor.start()
    try:
        async with asyncio.timeout(15):
            await all_done.wait()

        async def nothing_pending() -> bool:
            return (await group_state(redis, settings))["pending"] == 0

        await eventually(nothing_pending)
    finally:
        await survivor.stop(grace_period_s=1.0)
    assert set(handled) == {e.id for e in events}
    # the dead worker's run was the first try of each job; the survivor ran the second
    assert all(tries == [2] for tries in handled.values())


async def test_a_sigtermed_worker_finishes_running_jobs_and_leaves_the_backlog(
    redis: Redis, redis_url: str, redis_prefix: str, settings: EventSettings
) -> None:
    settings = msgspec.structs.replace(settings, max_jobs=3)
    events = [uploaded() for _ in range(8)]
    await publish(redis, settings, events)
    worker = await start_worker(redis_url, redis_prefix, settings, work_s=1.0)

    async def three_running() -> bool:
        return await count_marks(redis, redis_prefix + "started") == 3

    try:
        await eventually(three_running)
        worker.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            assert await worker.wait() == 0
    finally:
        if worker.returncode is None:
            worker.kill()
            await worker.wait()

    assert await count_marks(redis, redis_prefix + "done") == 3
    state = await group_state(redis, settings)
    assert (state["pending"], state["lag"]) == (0, 5)
