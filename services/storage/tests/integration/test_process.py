"""A real ``python -m xtyl_storage`` process (granian) over real sockets: big uploads stream
through with flat memory, the limit holds over HTTP, and events leave through the relay."""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from xtyl_devstack.process_tree import tree_rss
from xtyl_devstack.service_process import RunningService, running_service_async

from .conftest import MIB, User, object_keys, open_multipart_uploads
from .test_uploads import blocks, sha256_of

pytestmark = pytest.mark.integration

BIG = 200 * 1000 * 1000


class RssSampler:
    def __init__(self, pid: int, interval_s: float = 0.05) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self.peak = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            self.peak = max(self.peak, await asyncio.to_thread(tree_rss, self.pid))
            await asyncio.sleep(self.interval_s)

    async def __aenter__(self) -> RssSampler:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


@pytest.fixture
async def storage_process(
    storage_env: dict[str, str], service_log_dir: Path
) -> AsyncIterator[RunningService]:
    env = {
        **storage_env,
        "MAX_UPLOAD_BYTES": str(256 * MIB),
        "UPLOAD_PART_BYTES": str(5 * MIB),
        "EVENTS_RELAY_POLL_INTERVAL_S": "0.2",
        "EVENTS_STREAM_PREFIX": f"test:{uuid.uuid4().hex[:8]}:events",
    }
    async with running_service_async(
        "xtyl_storage", env, log_dir=service_log_dir, name="storage", ready_path="/readyz"
    ) as service:
        yield service


async def test_200_mb_upload_streams_with_flat_memory_and_downloads_identical(
    storage_process: RunningService,
    http: aiohttp.ClientSession,
    alice: User,
    s3_client: Any,
    s3_bucket: str,
) -> None:
    url = storage_process.url
    # Warm up (imports, the S3 client's first connection), then measure idle.
    async with http.post(
        f"{url}/v1/files",
        params={"filename": "warm.txt"},
        headers={**alice.headers, "Content-Type": "text/plain"},
        data=b"warm",
    ) as warm:
        assert warm.status == 201
    await asyncio.sleep(0.5)
    idle = tree_rss(storage_process.pid)

    started = time.perf_counter()
    async with RssSampler(storage_process.pid) as sampler:
        async with http.post(
            f"{url}/v1/files",
            params={"filename": "big.bin"},
            headers={**alice.headers, "Content-Type": "application/octet-stream"},
            data=blocks(BIG, block=1024 * 1024),
            timeout=aiohttp.ClientTimeout(total=300),
        ) as resp:
            assert resp.status == 201, await resp.text()
            file = await resp.json()
        upload_s = time.perf_counter() - started
        upload_peak = sampler.peak

        digest = hashlib.sha256()
        async with http.get(
            f"{url}/v1/files/{file['id']}/content",
            headers=alice.headers,
            timeout=aiohttp.ClientTimeout(total=300),
        ) as download:
            assert download.status == 200
            async for chunk in download.content.iter_chunked(1024 * 1024):
                digest.update(chunk)

    expected = await sha256_of(blocks(BIG, block=1024 * 1024))
    assert file["size"] == BIG
    assert file["sha256"] == expected
    assert digest.hexdigest() == expected
    growth_mb = (sampler.peak - idle) / 1e6
    print(
        f"\n200 MB upload: {BIG / 1e6 / upload_s:.0f} MB/s; idle RSS {idle / 1e6:.0f} MB,"
        f" peak while uploading {upload_peak / 1e6:.0f} MB, with the download"
        f" {sampler.peak / 1e6:.0f} MB (+{growth_mb:.0f} MB)"
    )
    assert growth_mb < 100, f"RSS grew {growth_mb:.0f} MB over idle"
    assert open_multipart_uploads(s3_client, s3_bucket) == []


async def test_limit_holds_over_real_http(
    storage_env: dict[str, str],
    service_log_dir: Path,
    http: aiohttp.ClientSession,
    alice: User,
    s3_client: Any,
    s3_bucket: str,
) -> None:
    async with running_service_async(
        "xtyl_storage", storage_env, log_dir=service_log_dir, name="storage-limit"
    ) as service:
        for declared in (None, "11000000"):
            headers = {**alice.headers, "Content-Type": "application/octet-stream"}
            if declared:
                headers["Content-Length"] = declared
            async with http.post(
                f"{service.url}/v1/files",
                params={"filename": "big.bin"},
                headers=headers,
                data=blocks(11_000_000),
            ) as resp:
                assert resp.status == 413
                assert (await resp.json())["code"] == "file_too_large"
    assert object_keys(s3_client, s3_bucket) == []
    assert open_multipart_uploads(s3_client, s3_bucket) == []


async def test_upload_event_reaches_the_files_stream_through_the_relay(
    storage_process: RunningService,
    http: aiohttp.ClientSession,
    alice: User,
    redis_url: str,
) -> None:
    async with http.post(
        f"{storage_process.url}/v1/files",
        params={"filename": "a.txt"},
        headers={**alice.headers, "Content-Type": "text/plain"},
        data=b"hello",
    ) as resp:
        assert resp.status == 201
        file_id = (await resp.json())["id"]
    redis = Redis.from_url(redis_url)
    try:
        found: list[Any] = []
        deadline = time.monotonic() + 10
        while not found and time.monotonic() < deadline:
            for key in await redis.keys("test:*:events:files"):
                entries = await redis.xrange(key)
                found += [e for e in entries if file_id.encode() in b"".join(e[1].values())]
            await asyncio.sleep(0.2)
    finally:
        await redis.aclose()
    assert len(found) == 1
