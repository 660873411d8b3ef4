"""A stream worker process serves its health on ``HOST``:``HEALTH_PORT``: ``/livez`` while it
runs, ``/readyz`` ready once started with every loop passing (the consumer's, and an outbox
relay its service started) and 503 problem details while Redis is down for longer than the
loops' staleness limit, ready again when Redis is back; ``/metrics`` in Prometheus' format
with the worker's health, heartbeats and handler runs. A port already taken stops the worker
with one log line and exit status 1, whether ``worker_entry``'s ``main`` or arq's CLI runs it.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import aiohttp
import msgspec
import pytest
from redis.asyncio import Redis

from xtyl_common.events import EventSettings, FileUploaded, FileUploadedPayload, encode_event
from xtyl_common.events.contracts import stream_key
from xtyl_common.redis_client import create_redis
from xtyl_devstack.ports import free_port
from xtyl_devstack.redis import RedisServer
from xtyl_devstack.testing import eventually

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: The ``sample`` fixture: one series' value from Prometheus' text format (conftest).
MetricSample = Callable[..., float | None]

GROUP = "embedder"
WORKER = "embed-worker"

#: A worker module as the services write theirs; its start-up opens a pool and starts an
#: outbox relay, as rag-worker's does.
WORKER_MODULE = """
from contextlib import AsyncExitStack
from typing import Any
from xtyl_common.db import DatabaseConfig, create_pool
from xtyl_common.events import (
    EventSettings, FileUploaded, OutboxRelay, stream_worker_settings, worker_entry,
)
from xtyl_common.redis_client import create_redis
from xtyl_common.settings import BaseSettings

class EmbedSettings(BaseSettings, frozen=True, kw_only=True):
    redis_url: str
    database_url: str
    outbox_schema: str

def worker_settings(settings: EmbedSettings, events: EventSettings) -> dict[str, Any]:
    async def startup(ctx):
        stack = ctx["stack"] = AsyncExitStack()
        pool = await create_pool(DatabaseConfig(url=settings.database_url, max_size=2))
        stack.push_async_callback(pool.close)
        redis = create_redis(settings.redis_url)
        stack.push_async_callback(redis.aclose)
        relay = OutboxRelay(pool, redis, schemas=[settings.outbox_schema], settings=events)
        relay.start()
        stack.push_async_callback(relay.stop)

    async def shutdown(ctx):
        if "stack" in ctx:
            await ctx["stack"].aclose()

    async def embed(event, ctx):
        pass

    return stream_worker_settings(
        redis_url=settings.redis_url, group="embedder", handlers={FileUploaded: embed},
        events=events, on_startup=startup, on_shutdown=shutdown, poll_delay=0.1,
    )

__getattr__, main = worker_entry(EmbedSettings, worker_settings, program="xtyl-embed-worker")

if __name__ == "__main__":
    main()
"""


@pytest.fixture
def settings(redis_prefix: str) -> EventSettings:
    return EventSettings(
        stream_prefix=redis_prefix + "events",
        relay_poll_interval_s=0.1,
        relay_backoff_initial_s=0.05,
        relay_backoff_max_s=0.5,
        recovery_check_interval_s=0.5,
        read_block_ms=200,
        claim_idle_ms=2_000,
        redis_timeout_s=1.0,
    )


@pytest.fixture
def worker_module(tmp_path: Path) -> Path:
    module = tmp_path / "health_worker.py"
    module.write_text(WORKER_MODULE)
    return module


@pytest.fixture
async def bus(redis_control: RedisServer) -> AsyncIterator[Redis]:
    client = create_redis(redis_control.url, socket_timeout_s=1.0, connect_timeout_s=0.5)
    yield client
    await client.aclose()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        yield session


def worker_env(
    settings: EventSettings, redis_url: str, database_url: str, schema: str, port: int
) -> dict[str, str]:
    return {
        **os.environ,
        **{f"EVENTS_{k.upper()}": str(v) for k, v in msgspec.structs.asdict(settings).items()},
        "REDIS_URL": redis_url,
        "DATABASE_URL": database_url,
        "OUTBOX_SCHEMA": schema,
        "HOST": "127.0.0.1",
        "HEALTH_PORT": str(port),
        "LOG_LEVEL": "warning",
        "LOG_JSON": "true",
    }


async def get(http: aiohttp.ClientSession, url: str) -> tuple[int, str, str]:
    """Status, content type and body of ``GET url`` (0 when nothing answers)."""
    try:
        async with http.get(url) as resp:
            return resp.status, resp.content_type, await resp.text()
    except aiohttp.ClientError:
        return 0, "", ""


async def test_the_worker_answers_livez_readyz_and_metrics_and_goes_unready_while_redis_is_down(
    http: aiohttp.ClientSession,
    bus: Redis,
    redis_control: RedisServer,
    migrated_database_url: str,
    schema: str,
    settings: EventSettings,
    worker_module: Path,
    sample: MetricSample,
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = worker_env(settings, redis_control.url, migrated_database_url, schema, port)
    worker = await asyncio.create_subprocess_exec(
        sys.executable,
        str(worker_module),
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:

        async def ready() -> bool:
            return (await get(http, f"{base}/readyz"))[0] == 200

        await eventually(ready, timeout_s=30)
        status, content_type, body = await get(http, f"{base}/readyz")
        state = json.loads(body)
        assert (state["status"], state["worker"]) == ("ready", WORKER)
        assert state["checks"] == {"startup": "up", "outbox_relay": "up", "stream_consumer": "up"}
        loops = {loop["name"] for loop in state["loops"]}
        assert {"stream-read", "stream-claim", "stream-gauges", "outbox relay"} <= loops
        assert (await get(http, f"{base}/livez"))[0] == 200

        # a handled entry shows in the worker's metrics
        stream = stream_key("files", settings.stream_prefix)
        await bus.xadd(stream, {b"type": b"file.uploaded", b"event": encode_event(uploaded())})

        async def handled() -> bool:
            text = (await get(http, f"{base}/metrics"))[2]
            labels = {"group": GROUP, "event_type": "file.uploaded", "outcome": "ok"}
            return sample("xtyl_stream_job_attempts_total", text, **labels) == 1

        await eventually(handled)

        async def every_loop_passed() -> bool:  # the relay's first pass may still run
            text = (await get(http, f"{base}/metrics"))[2]
            return all(
                sample(
                    "xtyl_worker_loop_last_pass_timestamp_seconds", text, worker=WORKER, loop=name
                )
                for name in ("stream-read", "stream-acks", "stream-gauges", "outbox-relay")
            )

        await eventually(every_loop_passed)
        status, content_type, text = await get(http, f"{base}/metrics")
        assert (status, content_type) == (200, "text/plain")
        assert sample("xtyl_worker_healthy", text, worker=WORKER) == 1
        beat = sample(
            "xtyl_worker_loop_last_pass_timestamp_seconds", text, worker=WORKER, loop="stream-read"
        )
        assert beat is not None
        assert time.time() - beat < 10
        assert sample("xtyl_relay_published_total", text, schema=schema) == 0
        assert sample("xtyl_stream_redeliveries_total", text, stream=stream, group=GROUP) == 0

        # Redis down: alive, and not ready once the loops' limit passed (about 32 s here)
        await asyncio.to_thread(redis_control.stop)
        down_since = time.monotonic()

        async def unready() -> bool:
            return (await get(http, f"{base}/readyz"))[0] == 503

        await eventually(unready, timeout_s=60, interval_s=0.5)
        assert time.monotonic() - down_since > 25  # not before the loops' staleness limit
        status, content_type, body = await get(http, f"{base}/readyz")
        problem = json.loads(body)
        assert content_type == "application/problem+json"
        assert (problem["status"], problem["code"]) == (503, "not_ready")
        assert problem["down"] == ["stream_consumer"]
        assert problem["checks"]["outbox_relay"] == "up"  # waiting for Redis, not stuck
        assert "no pass succeeded" in problem["checks"]["stream_consumer"]
        assert (await get(http, f"{base}/livez"))[0] == 200
        text = (await get(http, f"{base}/metrics"))[2]
        assert sample("xtyl_worker_healthy", text, worker=WORKER) == 0
        assert worker.returncode is None

        # Redis back (empty): ready again
        await asyncio.to_thread(redis_control.start)
        await eventually(ready, timeout_s=30, interval_s=0.2)
        text = (await get(http, f"{base}/metrics"))[2]
        assert sample("xtyl_worker_healthy", text, worker=WORKER) == 1
    finally:
        if worker.returncode is None:
            worker.terminate()
            async with asyncio.timeout(30):
                await worker.wait()
    assert worker.returncode == 0


def uploaded() -> FileUploaded:
    return FileUploaded(
        producer="test",
        payload=FileUploadedPayload(
            file_id=uuid.uuid4(),
            owner_id=uuid.uuid4(),
            key="k",
            name="n.txt",
            content_type="text/plain",
            size=1,
            sha256="0" * 64,
        ),
    )


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port something else already listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


@pytest.mark.parametrize("runner", ["main", "arq"])
async def test_a_taken_port_stops_the_worker_with_one_line(
    runner: str,
    redis_url: str,
    migrated_database_url: str,
    schema: str,
    settings: EventSettings,
    worker_module: Path,
    taken_port: int,
) -> None:
    env = worker_env(settings, redis_url, migrated_database_url, schema, taken_port)
    command = (
        [str(worker_module)]
        if runner == "main"
        else ["-m", "arq", f"{worker_module.stem}.WorkerSettings"]
    )
    worker = await asyncio.create_subprocess_exec(
        sys.executable,
        *command,
        cwd=worker_module.parent,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(30):
        out, err = await worker.communicate()
    lines = [line for line in (out + err).decode().splitlines() if line.strip()]
    assert worker.returncode == 1, lines
    assert "Traceback" not in "\n".join(lines)
    [line] = [line for line in lines if "health_listener_failed" in line]
    if runner == "main":
        assert lines == [line]  # (arq's CLI prints its own start banner first)
    logged = json.loads(line)
    assert logged["event"] == "health_listener_failed"
    assert f"127.0.0.1:{taken_port} (HEALTH_PORT)" in logged["error"]
