"""Drill: Redis killed and restarted empty on the same port during a burst of 20 uploads.

Real processes: storage (its outbox relay publishes ``file.uploaded``) and rag-worker (consumer
group ``rag``), both on a private Redis that the test stops and starts again with nothing in
it, as a managed Redis failover without persistence does. Entries already in the stream are
lost with it; files uploaded while it is down wait in storage's outbox. No process may exit,
and every one of the 20 files must end as a ready document.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from xtyl_common.events import stream_key
from xtyl_common.redis_client import create_redis
from xtyl_devstack.ports import free_port
from xtyl_devstack.processes import ManagedProcess
from xtyl_devstack.redis import RedisServer
from xtyl_devstack.service_process import (
    RunningService,
    running_service_async,
    start_worker_process,
)
from xtyl_devstack.stack import StackInfo
from xtyl_devstack.testing import eventually

from .conftest import User

pytestmark = [pytest.mark.integration, pytest.mark.slow]

UPLOADS = 20
#: What the drill changes from production: shorter waits, so the test takes seconds.
FAST_EVENTS = {
    "EVENTS_READ_BLOCK_MS": "200",
    "EVENTS_RELAY_POLL_INTERVAL_S": "0.2",
    "EVENTS_RELAY_BACKOFF_MAX_S": "1",
    "EVENTS_RECOVERY_CHECK_INTERVAL_S": "0.5",
    "EVENTS_REDIS_TIMEOUT_S": "2",
}


@pytest.fixture
def drill_env(rag_env: dict[str, str], redis_control: RedisServer) -> dict[str, str]:
    return {
        **rag_env,
        **FAST_EVENTS,
        "REDIS_URL": redis_control.url,
        "EVENTS_STREAM_PREFIX": f"drill:{secrets.token_hex(4)}:events",
        "STORAGE_URL": f"http://127.0.0.1:{free_port()}",
    }


@pytest.fixture
async def storage(
    drill_env: dict[str, str], devstack: StackInfo, s3_client: Any, service_log_dir: Path
) -> AsyncIterator[RunningService]:
    bucket = f"rag-drill-{secrets.token_hex(4)}"
    await asyncio.to_thread(s3_client.create_bucket, Bucket=bucket)
    shared = ("DATABASE_URL", "REDIS_URL", "SUPABASE_URL", "SUPABASE_JWT_SECRET")
    env = {
        **{k: v for k, v in drill_env.items() if k.startswith("EVENTS_") or k in shared},
        "INTERNAL_JWT_SECRET": drill_env["INTERNAL_JWT_SECRET"],
        "R2_ENDPOINT": devstack.s3_endpoint,
        "R2_ACCESS_KEY": devstack.s3_access_key,
        "R2_SECRET_KEY": devstack.s3_secret_key,
        "R2_BUCKET": bucket,
    }
    port = int(drill_env["STORAGE_URL"].rsplit(":", 1)[1])
    async with running_service_async(
        "xtyl_storage",
        env,
        log_dir=service_log_dir,
        name="storage-drill",
        port=port,
        ready_path="/readyz",
    ) as service:
        yield service


@pytest.fixture
async def worker(drill_env: dict[str, str], service_log_dir: Path) -> AsyncIterator[ManagedProcess]:
    process = await asyncio.to_thread(
        start_worker_process,
        "xtyl_rag.worker",
        drill_env,
        log_dir=service_log_dir,
        name="rag-worker-drill",
        ready_log=b"rag_worker_started",
    )
    yield process
    await asyncio.to_thread(process.stop)


async def upload(http: aiohttp.ClientSession, storage: RunningService, user: User, n: int) -> str:
    text = f"# Note {n}\n\nDrill note number {n} about lighthouse keeper {secrets.token_hex(4)}.\n"
    async with http.post(
        f"{storage.url}/v1/files?filename=note-{n}.md",
        data=text.encode(),
        headers={**user.headers, "Content-Type": "text/markdown"},
    ) as resp:
        assert resp.status == 201, await resp.text()
        file_id: str = (await resp.json())["id"]
    return file_id


async def statuses(http: aiohttp.ClientSession, rag: RunningService, user: User) -> dict[str, str]:
    async with http.get(f"{rag.url}/v1/documents?limit=100", headers=user.headers) as resp:
        assert resp.status == 200, await resp.text()
        return {item["file_id"]: item["status"] for item in (await resp.json())["items"]}


@pytest.mark.timeout(300)
async def test_redis_restarted_empty_during_20_uploads_every_file_becomes_a_ready_document(
    http: aiohttp.ClientSession,
    redis_control: RedisServer,
    drill_env: dict[str, str],
    storage: RunningService,
    worker: ManagedProcess,
    rag_service: RunningService,
    make_user: Callable[[], User],
) -> None:
    user = make_user()
    bus: Redis = create_redis(redis_control.url, socket_timeout_s=2.0, connect_timeout_s=0.5)
    files_stream = stream_key("files", drill_env["EVENTS_STREAM_PREFIX"])
    first = UPLOADS // 2
    try:
        ids = list(await asyncio.gather(*(upload(http, storage, user, n) for n in range(first))))

        async def all_in_the_stream() -> bool:
            return await bus.xlen(files_stream) >= first

        await eventually(all_in_the_stream, timeout_s=30)
        # the worker works through them two at a time: most are still only in the stream
        await asyncio.to_thread(redis_control.stop)
        ids += await asyncio.gather(
            *(upload(http, storage, user, n) for n in range(first, UPLOADS))
        )
        await asyncio.sleep(2.0)  # the workers' Redis calls fail meanwhile
        assert worker.running, "rag-worker exited while Redis was down"
        await asyncio.to_thread(redis_control.start)  # same port, nothing in it
        assert not list(redis_control.data_dir.glob("*.rdb"))

        async def all_ready() -> bool:
            assert worker.running, "rag-worker exited"
            assert storage.process.running, "storage exited"
            found = await statuses(http, rag_service, user)
            return all(found.get(file_id) == "ready" for file_id in ids)

        await eventually(all_ready, timeout_s=240, interval_s=0.5)
    finally:
        await bus.aclose()
    found = await statuses(http, rag_service, user)
    assert sorted(found) == sorted(ids)
    assert set(found.values()) == {"ready"}
    assert worker.running
    assert storage.process.running
