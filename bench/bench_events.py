"""Event backbone: publish -> handler start latency and no-op handlers/s of one worker process,
beside plain arq (``enqueue_job`` -> job start) on the same machine, in the same run.

    uv run python bench/bench_events.py [--samples 300] [--jobs 4000]

Uses ``REDIS_URL`` when set, else starts an embedded Valkey (xtyl_devstack). Measured:

* events: ``XADD`` of one event (what the relay does) -> the handler starts, through
  ``StreamConsumer`` (XREADGROUP BLOCK, the handler run as a task of the consumer);
  handlers/s: a backlog of no-op events drained by one consumer (one process, one event loop),
  each entry's done marker written and its XACK batched;
* plain arq: ``enqueue_job`` -> the job starts, with the default ``poll_delay`` (0.5 s) and with
  0.01 s; jobs/s: a backlog of no-op jobs drained by one ``Worker``.

Each events line also shows the figure of the design before (one arq job per entry, started
through arq's ``start_jobs``/``run_job``), measured by this script on the same 2-core machine
just before that design was replaced (:data:`PREVIOUS`).

Aim: events p50 under 20 ms and at least 800 no-op handlers/s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Generator
from pathlib import Path
from typing import Any

from arq.connections import ArqRedis, RedisSettings, create_pool
from arq.worker import Worker

from xtyl_common.events import (
    EventSettings,
    FileUploaded,
    FileUploadedPayload,
    StreamConsumer,
    encode_event,
    stream_key,
)
from xtyl_common.events.serialization import deserialize_job, serialize_job
from xtyl_common.logging import configure_logging
from xtyl_common.redis_client import create_redis

#: The figures of the previous design (an arq job per entry), same machine, same defaults.
PREVIOUS = {"latency_p50_ms": 1.32, "max_jobs=10": 927.0, "max_jobs=50": 1334.0}


@contextlib.contextmanager
def redis_server() -> Generator[str]:
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    from xtyl_devstack.redis import RedisServer

    with tempfile.TemporaryDirectory(prefix="bench-events-") as tmp:
        server = RedisServer(Path(tmp) / "redis", log_path=Path(tmp) / "redis.log")
        server.start()
        try:
            yield server.url
        finally:
            server.stop()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def event() -> FileUploaded:
    return FileUploaded(
        producer="bench",
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


# --- events ----------------------------------------------------------------------------------


async def events_latency(url: str, samples: int) -> list[float]:
    redis = create_redis(url, socket_timeout_s=10.0)
    settings = EventSettings(stream_prefix=f"bench:{uuid.uuid4().hex[:8]}:events")
    started: dict[uuid.UUID, float] = {}
    arrived = asyncio.Event()

    async def handler(ev: FileUploaded, ctx: dict[str, Any]) -> None:
        started[ev.id] = time.perf_counter()
        arrived.set()

    consumer = StreamConsumer(
        redis, group="bench", handlers={FileUploaded: handler}, settings=settings
    )
    await consumer.start()
    stream = stream_key("files", settings.stream_prefix)
    latencies: list[float] = []
    try:
        for _ in range(samples):
            ev = event()
            body = {b"type": b"file.uploaded", b"event": encode_event(ev)}
            arrived.clear()
            sent = time.perf_counter()
            await redis.xadd(stream, body)  # pyright: ignore[reportArgumentType]
            while ev.id not in started:
                await arrived.wait()
                arrived.clear()
            latencies.append(started[ev.id] - sent)
            await asyncio.sleep(random.uniform(0.001, 0.01))
    finally:
        await consumer.stop(grace_period_s=1.0)
        await cleanup(redis, settings.stream_prefix)
        await redis.aclose()
    return latencies


async def events_throughput(url: str, jobs: int, max_jobs: int) -> float:
    redis = create_redis(url, socket_timeout_s=10.0)
    settings = EventSettings(
        stream_prefix=f"bench:{uuid.uuid4().hex[:8]}:events", max_jobs=max_jobs
    )
    stream = stream_key("files", settings.stream_prefix)
    body = {b"type": b"file.uploaded", b"event": encode_event(event())}
    async with redis.pipeline(transaction=False) as pipe:
        for _ in range(jobs):
            pipe.xadd(stream, body)  # pyright: ignore[reportArgumentType]
        await pipe.execute()
    done = asyncio.Event()
    count = 0

    async def noop(ev: FileUploaded, ctx: dict[str, Any]) -> None:
        nonlocal count
        count += 1
        if count == jobs:
            done.set()

    consumer = StreamConsumer(
        redis, group="bench", handlers={FileUploaded: noop}, settings=settings
    )
    began = time.perf_counter()
    await consumer.start()
    try:
        await done.wait()
        elapsed = time.perf_counter() - began
    finally:
        await consumer.stop(grace_period_s=1.0)
        await cleanup(redis, settings.stream_prefix)
        await redis.aclose()
    return jobs / elapsed


async def cleanup(redis: Any, prefix: str) -> None:
    async for key in redis.scan_iter(match=f"{prefix}*"):
        await redis.delete(key)


# --- plain arq -------------------------------------------------------------------------------

_arq_started: dict[str, float] = {}
_arq_signal = asyncio.Event()


async def arq_noop(ctx: dict[str, Any]) -> None:
    _arq_started[ctx["job_id"]] = time.perf_counter()
    _arq_signal.set()


async def arq_pool(url: str) -> ArqRedis:
    return await create_pool(
        RedisSettings.from_dsn(url), job_serializer=serialize_job, job_deserializer=deserialize_job
    )


def arq_worker(pool: ArqRedis, queue: str, poll_delay: float, **kw: Any) -> Worker:
    return Worker(
        functions=[arq_noop],
        redis_pool=pool,
        queue_name=queue,
        poll_delay=poll_delay,
        handle_signals=False,
        job_serializer=serialize_job,
        job_deserializer=deserialize_job,
        keep_result=0,
        **kw,
    )


async def arq_latency(url: str, samples: int, poll_delay: float) -> list[float]:
    pool = await arq_pool(url)
    queue = f"bench:{uuid.uuid4().hex[:8]}:arq"
    worker = arq_worker(pool, queue, poll_delay)
    runner = asyncio.create_task(worker.async_run())
    latencies: list[float] = []
    try:
        for _ in range(samples):
            job_id = uuid.uuid4().hex
            _arq_signal.clear()
            sent = time.perf_counter()
            await pool.enqueue_job("arq_noop", _job_id=job_id, _queue_name=queue)
            while job_id not in _arq_started:
                await _arq_signal.wait()
                _arq_signal.clear()
            latencies.append(_arq_started[job_id] - sent)
            await asyncio.sleep(random.uniform(0.001, poll_delay))  # random phase vs the poll
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
        await pool.aclose()
    return latencies


async def arq_throughput(url: str, jobs: int, poll_delay: float) -> float:
    pool = await arq_pool(url)
    queue = f"bench:{uuid.uuid4().hex[:8]}:arq"
    for start in range(0, jobs, 500):
        await asyncio.gather(
            *(
                pool.enqueue_job("arq_noop", _queue_name=queue)
                for _ in range(min(500, jobs - start))
            )
        )
    worker = arq_worker(pool, queue, poll_delay, burst=True)
    began = time.perf_counter()
    await worker.async_run()
    elapsed = time.perf_counter() - began
    await pool.aclose()
    return worker.jobs_complete / elapsed


# --- report ----------------------------------------------------------------------------------


def line(label: str, latencies: list[float]) -> str:
    p50, p99 = percentile(latencies, 0.5) * 1000, percentile(latencies, 0.99) * 1000
    mean = statistics.fmean(latencies) * 1000
    return (
        f"{label:<44} p50 {p50:7.2f} ms   p99 {p99:7.2f} ms   mean {mean:7.2f} ms"
        f"  (n={len(latencies)})"
    )


async def main(samples: int, jobs: int) -> None:
    configure_logging("warning", json_logs=False)
    with redis_server() as url:
        print(f"redis: {url}   cpus: {os.cpu_count()}   load: {os.getloadavg()[0]:.2f}")
        lat = await events_latency(url, samples)
        was = f"   (an arq job per entry: p50 {PREVIOUS['latency_p50_ms']:.2f} ms)"
        print(line("events  XADD -> handler start", lat) + was)
        arq_slow = await arq_latency(url, max(10, samples // 15), poll_delay=0.5)
        print(line("arq     enqueue_job -> start (poll 0.5 s)", arq_slow))
        arq_fast = await arq_latency(url, samples, poll_delay=0.01)
        print(line("arq     enqueue_job -> start (poll 0.01 s)", arq_fast))
        rates: list[float] = []
        for max_jobs in (10, 50):
            rate = await events_throughput(url, jobs, max_jobs)
            rates.append(rate)
            label = f"events  no-op handlers/s (max_jobs={max_jobs})"
            was = PREVIOUS[f"max_jobs={max_jobs}"]
            print(f"{label:<44} {rate:7.0f} /s   (an arq job per entry: {was:.0f} /s)")
        for poll in (0.5, 0.01):
            rate = await arq_throughput(url, min(jobs, 2000) if poll > 0.1 else jobs, poll)
            label = f"arq     no-op jobs/s (max_jobs=10, poll {poll} s)"
            print(f"{label:<44} {rate:7.0f} /s")
        p50 = percentile(lat, 0.5) * 1000
        verdict = "meets" if p50 < 20 and min(rates) >= 800 else "MISSES"
        print(
            f"target: events p50 < 20 ms and >= 800 handlers/s on one process:"
            f" p50 {p50:.2f} ms, {min(rates):.0f} /s {verdict} it"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="publish -> handler start latency, handlers/s")
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--jobs", type=int, default=4000)
    args = parser.parse_args()
    asyncio.run(main(args.samples, args.jobs))
