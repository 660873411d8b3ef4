"""Real worker processes run by arq's CLI (``arq <module>.WorkerSettings``, the module made with
``worker_entry``): one SIGKILLed mid-handler loses nothing (another worker takes its entries
over), one SIGKILLed after its handlers succeeded but before their XACK does not get them run
again, one SIGKILLed while an entry waits for a retry leaves the retry's time to the next, one
SIGTERMed finishes what it runs."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
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
from xtyl_common.events.contracts import dead_letter_key
from xtyl_common.events.streams import retries_key
from xtyl_devstack.ports import free_port
from xtyl_devstack.testing import eventually

from .conftest import redis_user_without

pytestmark = [pytest.mark.integration, pytest.mark.slow]

GROUP = "embedder"

#: A worker module as the services write theirs. Each handler call records that it started
#: (a Redis set), then works for WORK_S, or fails with a dependency's Retry-After when
#: RETRY_AFTER_S is set (each failure's time in a list), then records that it is done.
WORKER_MODULE = """
import asyncio, time
from typing import Any
from xtyl_common.errors import Unavailable
from xtyl_common.events import EventSettings, FileUploaded, stream_worker_settings, worker_entry
from xtyl_common.redis_client import create_redis
from xtyl_common.settings import BaseSettings

class EmbedSettings(BaseSettings, frozen=True, kw_only=True):
    redis_url: str
    work_s: float = 0.0
    retry_after_s: float | None = None
    started_key: str
    done_key: str
    failed_key: str

def worker_settings(settings: EmbedSettings, events: EventSettings) -> dict[str, Any]:
    async def startup(ctx):
        ctx["marks"] = create_redis(settings.redis_url)

    async def shutdown(ctx):
        await ctx["marks"].aclose()

    async def embed(event, ctx):
        await ctx["marks"].sadd(settings.started_key, str(event.id))
        if settings.retry_after_s is not None:
            await ctx["marks"].rpush(settings.failed_key, str(time.time()))
            raise Unavailable("embeddings down", retry_after_s=settings.retry_after_s)
        await asyncio.sleep(settings.work_s)
        await ctx["marks"].sadd(settings.done_key, str(event.id))

    return stream_worker_settings(
        redis_url=settings.redis_url,
        group="embedder",
        handlers={FileUploaded: embed},
        events=events,
        on_startup=startup,
        on_shutdown=shutdown,
        consumer_name="doomed",
    )

__getattr__, main = worker_entry(EmbedSettings, worker_settings, program="embed-worker")
"""


def events_env(settings: EventSettings) -> dict[str, str]:
    """The ``EVENTS_*`` variables a worker reads ``settings`` from."""
    return {f"EVENTS_{k.upper()}": str(v) for k, v in msgspec.structs.asdict(settings).items()}


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
def worker_module(tmp_path: Path) -> Path:
    module = tmp_path / "embed_worker.py"
    module.write_text(WORKER_MODULE)
    return module


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
    module: Path,
    redis_url: str,
    redis_prefix: str,
    settings: EventSettings,
    *,
    work_s: float = 0.0,
    retry_after_s: float | None = None,
) -> asyncio.subprocess.Process:
    """``arq <module>.WorkerSettings``, as arq's CLI runs a service's worker."""
    env = {
        **os.environ,
        **events_env(settings),
        "REDIS_URL": redis_url,
        "WORK_S": str(work_s),
        "RETRY_AFTER_S": "" if retry_after_s is None else str(retry_after_s),
        "STARTED_KEY": redis_prefix + "started",
        "DONE_KEY": redis_prefix + "done",
        "FAILED_KEY": redis_prefix + "failed",
        "LOG_LEVEL": "warning",
        "HOST": "127.0.0.1",
        "HEALTH_PORT": str(free_port()),  # its health listener; never the shared default
    }
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "arq",
        f"{module.stem}.WorkerSettings",
        cwd=module.parent,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def kill(worker: asyncio.subprocess.Process) -> None:
    if worker.returncode is None:
        worker.send_signal(signal.SIGKILL)
        await worker.wait()


async def count_marks(redis: Redis, key: str) -> int:
    """How many entries the worker marked in the set ``key``."""
    return await cast("Awaitable[int]", redis.scard(key))


async def group_state(redis: Redis, settings: EventSettings) -> dict[str, Any]:
    groups: list[dict[str, Any]] = await redis.xinfo_groups(
        stream_key("files", settings.stream_prefix)
    )
    return next((g for g in groups if g["name"] == GROUP.encode()), {"pending": 0, "lag": None})


class Survivor:
    """An in-process consumer of the same group that records every handler call."""

    def __init__(self, redis: Redis, settings: EventSettings) -> None:
        self.calls: dict[uuid.UUID, list[tuple[float, int]]] = {}  # (time, job_try)
        self.consumer = StreamConsumer(
            redis, group=GROUP, handlers={FileUploaded: self.handle}, settings=settings
        )

    async def handle(self, event: FileUploaded, ctx: dict[str, Any]) -> None:
        self.calls.setdefault(event.id, []).append((time.time(), ctx["job_try"]))

    async def __aenter__(self) -> Survivor:
        await self.consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop(grace_period_s=1.0)


async def test_a_sigkilled_worker_loses_nothing_another_worker_completes_its_entries(
    redis: Redis,
    redis_url: str,
    redis_prefix: str,
    settings: EventSettings,
    worker_module: Path,
) -> None:
    events = [uploaded() for _ in range(10)]
    await publish(redis, settings, events)
    worker = await start_worker(worker_module, redis_url, redis_prefix, settings, work_s=3600)

    async def took_all_ten() -> bool:
        return await count_marks(redis, redis_prefix + "started") == 10

    try:
        await eventually(took_all_ten)
        assert (await group_state(redis, settings))["pending"] == 10
    finally:
        await kill(worker)

    async def nothing_pending() -> bool:
        return (await group_state(redis, settings))["pending"] == 0

    async with Survivor(redis, settings) as survivor:
        await eventually(lambda: _all_called(survivor, 10))
        await eventually(nothing_pending)
    assert set(survivor.calls) == {e.id for e in events}
    # the dead worker's run was the first try of each entry; the survivor ran the second
    assert all([job_try for _, job_try in calls] == [2] for calls in survivor.calls.values())


async def _all_called(survivor: Survivor, count: int) -> bool:
    return len(survivor.calls) == count


@pytest.fixture
async def redis_without_xack(redis: Redis, redis_url: str) -> AsyncIterator[str]:
    """The session Redis' URL for a user who may do anything but XACK: its worker's handlers
    succeed and their done markers are written, but no entry is ever acknowledged."""
    async with redis_user_without(redis, redis_url, "xack") as url:
        yield url


async def test_a_worker_killed_after_its_handlers_but_before_xack_does_not_get_them_run_again(
    redis: Redis,
    redis_without_xack: str,
    redis_prefix: str,
    settings: EventSettings,
    worker_module: Path,
) -> None:
    events = [uploaded() for _ in range(5)]
    await publish(redis, settings, events)
    stream = stream_key("files", settings.stream_prefix)
    worker = await start_worker(worker_module, redis_without_xack, redis_prefix, settings)

    async def all_handled_and_marked_done() -> bool:
        markers = [k async for k in redis.scan_iter(match=f"{stream}:done:{GROUP}:*")]
        return await count_marks(redis, redis_prefix + "done") == 5 and len(markers) == 5

    try:
        await eventually(all_handled_and_marked_done)
        assert (await group_state(redis, settings))["pending"] == 5  # no XACK went through
    finally:
        await kill(worker)

    async def nothing_pending() -> bool:
        return (await group_state(redis, settings))["pending"] == 0

    async with Survivor(redis, settings) as survivor:
        await eventually(nothing_pending)  # taken over (claim_idle_ms) and acknowledged
    assert survivor.calls == {}  # not one handler ran again
    assert await redis.xlen(dead_letter_key(stream)) == 0


async def test_a_retry_waiting_in_a_killed_worker_keeps_its_time_in_the_next_one(
    redis: Redis,
    redis_url: str,
    redis_prefix: str,
    settings: EventSettings,
    worker_module: Path,
) -> None:
    # one delivery allowed: a takeover of a waiting entry must not count as a crash on it
    settings = msgspec.structs.replace(settings, max_deliveries=1)
    event = uploaded()
    await publish(redis, settings, [event])
    stream = stream_key("files", settings.stream_prefix)
    worker = await start_worker(worker_module, redis_url, redis_prefix, settings, retry_after_s=3.0)

    async def waiting_for_its_retry() -> bool:
        return await cast("Awaitable[int]", redis.hlen(retries_key(stream, GROUP))) == 1

    try:
        await eventually(waiting_for_its_retry)
    finally:
        await kill(worker)
    failures = await cast("Awaitable[list[bytes]]", redis.lrange(redis_prefix + "failed", 0, -1))
    [failed_at] = [float(t) for t in failures]

    async def settled() -> bool:
        pending = (await group_state(redis, settings))["pending"]
        states = await cast("Awaitable[int]", redis.hlen(retries_key(stream, GROUP)))
        return pending == 0 and states == 0

    async with Survivor(redis, settings) as survivor:
        await eventually(lambda: _all_called(survivor, 1))
        await eventually(settled)
    [(retried_at, job_try)] = survivor.calls[event.id]
    assert retried_at - failed_at >= 3.0  # the wait the dependency asked for, kept
    assert job_try == 2
    assert await redis.xlen(dead_letter_key(stream)) == 0


async def test_a_sigtermed_worker_finishes_running_jobs_and_leaves_the_backlog(
    redis: Redis,
    redis_url: str,
    redis_prefix: str,
    settings: EventSettings,
    worker_module: Path,
) -> None:
    settings = msgspec.structs.replace(settings, max_jobs=3)
    events = [uploaded() for _ in range(8)]
    await publish(redis, settings, events)
    worker = await start_worker(worker_module, redis_url, redis_prefix, settings, work_s=1.0)

    async def three_running() -> bool:
        return await count_marks(redis, redis_prefix + "started") == 3

    try:
        await eventually(three_running)
        worker.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            assert await worker.wait() == 0
    finally:
        await kill(worker)

    assert await count_marks(redis, redis_prefix + "done") == 3
    state = await group_state(redis, settings)
    assert (state["pending"], state["lag"]) == (0, 5)
