"""A real storage process through a Postgres restart under load: the outbox relay survives it.

Postgres is stopped the way ``pg_ctl stop -m fast`` does (SIGINT: sessions are ended) while
users keep uploading, and started again 6 s later. Every upload the service accepted, before
the outage and after it, must reach the ``files`` stream within 10 s of Postgres' return, from
the same process (no restart), and ``/readyz`` must be 200 again.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from redis.asyncio import Redis

from xtyl_common.events import FileUploaded, decode_event, stream_key
from xtyl_common.migrate import migrate
from xtyl_devstack.postgres import PostgresServer
from xtyl_devstack.service_process import RunningService, running_service_async

from .conftest import User

pytestmark = pytest.mark.integration

OUTAGE_S = 6.0
#: The claim: everything accepted is on the stream this long after Postgres is back.
PUBLISHED_WITHIN_S = 10.0


@pytest.fixture
async def stream_prefix() -> str:
    return f"test:{uuid.uuid4().hex[:8]}:events"


@pytest.fixture
async def storage_on_control(
    storage_env: dict[str, str],
    postgres_control: PostgresServer,
    stream_prefix: str,
    service_log_dir: Path,
) -> AsyncIterator[RunningService]:
    """A storage process on the private Postgres, with the production relay timings."""
    await migrate(postgres_control.dsn())
    env = {
        **storage_env,
        "DATABASE_URL": postgres_control.dsn(),
        "EVENTS_STREAM_PREFIX": stream_prefix,
    }
    async with running_service_async(
        "xtyl_storage",
        env,
        log_dir=service_log_dir,
        name="storage-pg-restart",
        ready_path="/readyz",
    ) as service:
        yield service


async def _status(http: aiohttp.ClientSession, url: str) -> int:
    try:
        async with http.get(url, timeout=aiohttp.ClientTimeout(total=5)) as resp:
            return resp.status
    except (aiohttp.ClientError, TimeoutError):
        return 0


async def _upload_until(
    http: aiohttp.ClientSession, url: str, user: User, stop: asyncio.Event
) -> tuple[list[str], dict[int, int]]:
    """Upload small files one after another until ``stop``; the ids accepted (201) and the
    count of each status seen."""
    accepted: list[str] = []
    statuses: dict[int, int] = {}
    n = 0
    while not stop.is_set():
        n += 1
        try:
            async with http.post(
                f"{url}/v1/files",
                params={"filename": f"f{n}.txt"},
                headers={**user.headers, "Content-Type": "text/plain"},
                data=f"file {n}".encode(),
                timeout=aiohttp.ClientTimeout(total=15),
            ) as resp:
                statuses[resp.status] = statuses.get(resp.status, 0) + 1
                if resp.status == 201:
                    accepted.append((await resp.json())["id"])
        except (aiohttp.ClientError, TimeoutError):
            statuses[0] = statuses.get(0, 0) + 1
        await asyncio.sleep(0.05)
    return accepted, statuses


async def _published_file_ids(redis: Redis, stream: str) -> set[str]:
    ids: set[str] = set()
    for _, fields in await redis.xrange(stream):
        event = decode_event(fields[b"event"])
        assert isinstance(event, FileUploaded), event
        ids.add(str(event.payload.file_id))
    return ids


async def test_postgres_restart_under_load_every_accepted_upload_is_published_without_restart(
    storage_on_control: RunningService,
    postgres_control: PostgresServer,
    http: aiohttp.ClientSession,
    alice: User,
    redis_url: str,
    stream_prefix: str,
) -> None:
    service = storage_on_control
    pid = service.pid
    stream = stream_key("files", stream_prefix)
    redis = Redis.from_url(redis_url, socket_timeout=5)
    try:
        stop_load = asyncio.Event()
        load = asyncio.create_task(_upload_until(http, service.url, alice, stop_load))
        await asyncio.sleep(2.0)

        await asyncio.to_thread(postgres_control.stop)
        async with asyncio.timeout(20):
            while await _status(http, service.url + "/readyz") != 503:
                await asyncio.sleep(0.1)
        await asyncio.sleep(OUTAGE_S)
        await asyncio.to_thread(postgres_control.start)
        returned = time.monotonic()

        await asyncio.sleep(2.0)  # users keep uploading after the return
        stop_load.set()
        accepted, statuses = await load
        assert accepted, f"no upload was accepted: {statuses}"

        deadline = returned + PUBLISHED_WITHIN_S
        missing = set(accepted)
        while missing and time.monotonic() < deadline:
            missing -= await _published_file_ids(redis, stream)
            await asyncio.sleep(0.2)
        published_after_s = time.monotonic() - returned
        assert not missing, (
            f"{len(missing)} of {len(accepted)} accepted uploads were not on the stream"
            f" {PUBLISHED_WITHIN_S:g} s after Postgres returned (statuses seen: {statuses})"
        )
        print(
            f"\n{len(accepted)} uploads accepted ({statuses}); all published"
            f" {published_after_s:.1f} s after Postgres returned"
        )

        conn = await asyncpg.connect(postgres_control.dsn())
        try:
            unpublished = await conn.fetchval(
                "select count(*) from xtyl_storage.outbox where published_at is null"
            )
        finally:
            await conn.close()
        assert unpublished == 0

        async with asyncio.timeout(max(1.0, deadline - time.monotonic())):
            while await _status(http, service.url + "/readyz") != 200:
                await asyncio.sleep(0.1)
        assert service.process.running
        assert service.pid == pid, "the storage process was restarted"
    finally:
        await redis.aclose()
