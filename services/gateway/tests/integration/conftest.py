"""A real gateway process over the real Postgres and Redis, in front of a fake upstream."""

from __future__ import annotations

import asyncio
import hashlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from xtyl_devstack.service_process import RunningService, running_service_async


@dataclass
class Seen:
    method: str
    path_qs: str
    headers: dict[str, str]
    body_size: int
    body_sha256: str


@dataclass
class FakeUpstream:
    """Plays storage/rag behind the gateway and records what reaches it."""

    url: str = ""
    seen: list[Seen] = field(default_factory=lambda: [])


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture(scope="session")
async def fake_upstream() -> AsyncIterator[FakeUpstream]:
    state = FakeUpstream()

    async def record(request: web.Request) -> Seen:
        digest = hashlib.sha256()
        size = 0
        async for chunk in request.content.iter_any():
            digest.update(chunk)
            size += len(chunk)
        seen = Seen(
            request.method, request.path_qs, dict(request.headers), size, digest.hexdigest()
        )
        state.seen.append(seen)
        return seen

    async def echo(request: web.Request) -> web.StreamResponse:
        seen = await record(request)
        if request.path.endswith("/slow"):
            await asyncio.sleep(3)
        if request.path.endswith("/download"):
            size = int(request.query.get("size", "0"))
            resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
            await resp.prepare(request)
            block = b"x" * 65536
            sent = 0
            while sent < size:
                part = block[: min(len(block), size - sent)]
                await resp.write(part)
                sent += len(part)
            await resp.write_eof()
            return resp
        return web.json_response(
            {
                "method": seen.method,
                "path_qs": seen.path_qs,
                "headers": seen.headers,
                "body_size": seen.body_size,
                "body_sha256": seen.body_sha256,
            },
            status=201 if request.method == "POST" else 200,
            headers={"X-Upstream": "fake", "Connection": "keep-alive"},
        )

    app = web.Application(client_max_size=0)
    app.router.add_route("*", "/{tail:.*}", echo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield state
    await runner.cleanup()


@pytest.fixture(scope="session")
def gateway_env(
    migrated_database_url: str,
    redis_url: str,
    auth_env: dict[str, str],
    fake_upstream: FakeUpstream,
) -> dict[str, str]:
    return {
        **auth_env,
        "DATABASE_URL": migrated_database_url,
        "REDIS_URL": redis_url,
        "STORAGE_URL": fake_upstream.url,
        "RAG_URL": fake_upstream.url,
        "NOTIFY_URL": f"http://127.0.0.1:{closed_port()}",
        "UPSTREAM_READ_TIMEOUT_S": "1",
        "RATE_LIMIT_REQUESTS": "100000",
        "RATE_LIMIT_ROUTES": "",
        "CORS_ORIGINS": "https://app.example.com",
    }


@pytest.fixture(scope="session")
async def gateway(
    gateway_env: dict[str, str], service_log_dir: Path
) -> AsyncIterator[RunningService]:
    async with running_service_async(
        "xtyl_gateway", gateway_env, log_dir=service_log_dir, name="gateway"
    ) as service:
        yield service
