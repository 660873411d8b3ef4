"""Upload throughput: plain aioboto3 → S3, beside client → storage → S3 (and → gateway → storage
→ S3 with ``--gateway``), against the same SeaweedFS in the same run; plus the storage
process's peak RSS over idle.

    uv run python bench/bench_storage.py [--size-mb 200] [--runs 3] [--gateway]

Uses the stack named by ``XTYL_DEVSTACK_INFO`` if set, else starts an embedded one in a temp dir.
Prints one line per path: best MB/s of ``--runs`` uploads, and the ratio to the direct rate.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Generator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import aioboto3
import aiohttp
from botocore.config import Config

from xtyl_common.migrate import migrate
from xtyl_devstack.issuer import mint_legacy_access_token
from xtyl_devstack.process_tree import tree_rss
from xtyl_devstack.pytest_plugin import ENV_INFO
from xtyl_devstack.s3 import ensure_bucket, s3_client
from xtyl_devstack.service_process import RunningService, running_service
from xtyl_devstack.stack import Stack, StackInfo
from xtyl_devstack.testing import TEST_INTERNAL_SECRET, TEST_JWT_SECRET

MB = 1000 * 1000
MIB = 1024 * 1024
BLOCK = 1024 * 1024
SUPABASE_URL = "http://127.0.0.1:9/bench"  # only the tokens' iss; never fetched


async def body(total: int) -> AsyncIterator[bytes]:
    """``total`` bytes in 1 MiB blocks from one buffer (the client costs next to nothing)."""
    block = hashlib.sha256(b"bench").digest() * (BLOCK // 32)
    sent = 0
    while sent < total:
        size = min(BLOCK, total - sent)
        yield block if size == BLOCK else block[:size]
        sent += size


class AsyncBody:
    """An async file-like object over :func:`body`, for aioboto3's ``upload_fileobj``."""

    def __init__(self, total: int) -> None:
        self._chunks = body(total)
        self._buffer = b""
        self._done = False

    async def read(self, size: int = -1) -> bytes:
        while not self._done and (size < 0 or len(self._buffer) < size):
            try:
                self._buffer += await anext(self._chunks)
            except StopAsyncIteration:
                self._done = True
        if size < 0:
            size = len(self._buffer)
        out, self._buffer = self._buffer[:size], self._buffer[size:]
        return out


@contextmanager
def stack_info() -> Generator[StackInfo]:
    raw = os.environ.get(ENV_INFO)
    if raw:
        yield StackInfo.from_json(raw)
        return
    data_dir = Path(tempfile.mkdtemp(prefix="xtyl-bench-"))
    data_dir.chmod(0o755)
    stack = Stack(data_dir)
    try:
        yield stack.start()
    finally:
        stack.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


async def sample_peak(pid: int, stop: asyncio.Event, peak: list[int]) -> None:
    while not stop.is_set():
        peak[0] = max(peak[0], await asyncio.to_thread(tree_rss, pid))
        await asyncio.sleep(0.05)


async def direct_upload(info: StackInfo, bucket: str, size: int) -> float:
    session: Any = aioboto3.Session()
    config = Config(
        region_name="auto",
        s3={"addressing_style": "path"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    async with session.client(
        "s3",
        endpoint_url=info.s3_endpoint,
        aws_access_key_id=info.s3_access_key,
        aws_secret_access_key=info.s3_secret_key,
        config=config,
    ) as client:
        started = time.perf_counter()
        await client.upload_fileobj(AsyncBody(size), bucket, f"direct/{uuid.uuid4()}")
        return size / (time.perf_counter() - started) / MB


async def http_upload(
    http: aiohttp.ClientSession, url: str, token: str, size: int, pid: int | None
) -> tuple[float, int]:
    stop, peak = asyncio.Event(), [0]
    sampler = asyncio.create_task(sample_peak(pid, stop, peak)) if pid else None
    started = time.perf_counter()
    async with http.post(
        f"{url}/v1/files",
        params={"filename": "bench.bin"},
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/octet-stream"},
        data=body(size),
    ) as resp:
        text = await resp.text()
        if resp.status != 201:
            raise SystemExit(f"upload through {url} failed: {resp.status} {text[:300]}")
    rate = size / (time.perf_counter() - started) / MB
    stop.set()
    if sampler:
        await sampler
    return rate, peak[0]


def service_env(info: StackInfo, bucket: str) -> dict[str, str]:
    return {
        "SUPABASE_JWT_SECRET": TEST_JWT_SECRET,
        "INTERNAL_JWT_SECRET": TEST_INTERNAL_SECRET,
        "DATABASE_URL": info.database_url,
        "REDIS_URL": info.redis_url,
        "R2_ENDPOINT": info.s3_endpoint,
        "R2_ACCESS_KEY": info.s3_access_key,
        "R2_SECRET_KEY": info.s3_secret_key,
        "R2_BUCKET": bucket,
        "MAX_UPLOAD_BYTES": str(2 * 1024 * MIB),
        "ALLOWED_CONTENT_TYPES": "*/*",
        "LOG_LEVEL": "warning",
    }


async def run(
    args: argparse.Namespace, info: StackInfo, services: dict[str, RunningService]
) -> None:
    size = args.size_mb * MB
    bucket = "bench"
    storage = services["storage"]
    token = mint_legacy_access_token(
        TEST_JWT_SECRET, supabase_url=SUPABASE_URL, user_id=uuid.uuid4(), email="bench@example.com"
    )
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as http:
        await http_upload(http, storage.url, token, 1 * MB, None)  # warm up
        await asyncio.sleep(0.5)
        idle = tree_rss(storage.pid)
        results: dict[str, list[float]] = {"direct aioboto3 → S3": []}
        results["client → storage → S3"] = []
        if "gateway" in services:
            results["client → gateway → storage → S3"] = []
        peak = idle
        for _ in range(args.runs):
            results["direct aioboto3 → S3"].append(await direct_upload(info, bucket, size))
            rate, run_peak = await http_upload(http, storage.url, token, size, storage.pid)
            results["client → storage → S3"].append(rate)
            peak = max(peak, run_peak)
            if "gateway" in services:
                rate, run_peak = await http_upload(
                    http, services["gateway"].url, token, size, storage.pid
                )
                results["client → gateway → storage → S3"].append(rate)
                peak = max(peak, run_peak)
    direct = max(results["direct aioboto3 → S3"])
    print(f"upload of {args.size_mb} MB, best of {args.runs} (median in brackets):")
    for name, rates in results.items():
        print(
            f"  {name:<34} {max(rates):7.1f} MB/s  ({statistics.median(rates):6.1f})"
            f"  {max(rates) / direct:5.2f}x direct"
        )
    print(
        f"  storage RSS: idle {idle / MB:.0f} MB, peak {peak / MB:.0f} MB"
        f" (+{(peak - idle) / MB:.0f} MB)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="Upload throughput through storage vs direct.")
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--gateway", action="store_true", help="also upload through a gateway")
    args = parser.parse_args()
    log_dir = Path(tempfile.mkdtemp(prefix="xtyl-bench-logs-"))
    with stack_info() as info, ExitStack() as processes:
        asyncio.run(migrate(info.database_url))
        client = s3_client(info.s3_endpoint, info.s3_access_key, info.s3_secret_key)
        ensure_bucket(client, "bench")
        env = service_env(info, "bench")
        services = {
            "storage": processes.enter_context(
                running_service("xtyl_storage", env, log_dir=log_dir, ready_path="/readyz")
            )
        }
        if args.gateway:
            services["gateway"] = processes.enter_context(
                running_service(
                    "xtyl_gateway",
                    {
                        **env,
                        "STORAGE_URL": services["storage"].url,
                        "RATE_LIMIT_REQUESTS": "100000",
                        "RATE_LIMIT_ROUTES": "",
                    },
                    log_dir=log_dir,
                )
            )
        asyncio.run(run(args, info, services))
    shutil.rmtree(log_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
