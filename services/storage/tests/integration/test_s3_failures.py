"""S3 down or failing mid-upload: 503 problem JSON, no row, no multipart upload left behind."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from xtyl_devstack.stack import StackInfo
from xtyl_storage.app import create_app

from .asgi import AsgiClient
from .conftest import User, object_keys, open_multipart_uploads, rows_of, settings_from
from .test_uploads import FORM_TYPE, streamed_form

pytestmark = pytest.mark.integration

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "upgrade", "trailer"}


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@dataclass
class FaultyS3:
    """A pass-through proxy to the real S3 server that fails chosen requests with 503."""

    target: str
    url: str = ""
    #: Fail every ``PUT ...?partNumber=N`` for these N.
    fail_parts: set[int] = field(default_factory=set[int])
    #: Fail every GET of an object.
    fail_gets: bool = False
    failed: list[str] = field(default_factory=list[str])


@pytest.fixture
async def faulty_s3(devstack: StackInfo) -> AsyncIterator[FaultyS3]:
    state = FaultyS3(target=devstack.s3_endpoint)
    session = aiohttp.ClientSession(auto_decompress=False)

    async def forward(request: web.Request) -> web.StreamResponse:
        part = request.query.get("partNumber")
        failing = (
            request.method == "PUT" and part is not None and int(part) in state.fail_parts
        ) or (request.method == "GET" and state.fail_gets and request.path.count("/") > 2)
        if failing:
            await request.read()
            state.failed.append(f"{request.method} {request.path_qs}")
            return web.Response(status=503, text="<Error><Code>SlowDown</Code></Error>")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        body = await request.read()
        async with session.request(
            request.method,
            state.target + request.path_qs,
            headers=headers,
            data=body,
            allow_redirects=False,
        ) as upstream:
            payload = await upstream.read()
            out_headers = {
                k: v
                for k, v in upstream.headers.items()
                if k.lower() not in _HOP_BY_HOP | {"content-length", "content-encoding"}
            }
            return web.Response(status=upstream.status, headers=out_headers, body=payload)

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", forward)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield state
    await runner.cleanup()
    await session.close()


async def test_s3_failing_mid_upload_is_503_and_leaves_nothing(
    storage_env: dict[str, str],
    faulty_s3: FaultyS3,
    alice: User,
    s3_client: Any,
    s3_bucket: str,
    db: asyncpg.Connection,
) -> None:
    faulty_s3.fail_parts = {2}
    settings = settings_from(storage_env, R2_ENDPOINT=faulty_s3.url)
    async with AsgiClient(create_app(settings, run_relay=False)) as client:
        resp = await client.post(
            "/v1/files",
            headers={**alice.headers, "Content-Type": FORM_TYPE},
            content=streamed_form(9_500_000),
        )
    assert resp.status_code == 503, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.json()["code"] == "storage_unavailable"
    assert faulty_s3.failed  # the fault really was hit (and retried by botocore)
    assert open_multipart_uploads(s3_client, s3_bucket) == []
    assert object_keys(s3_client, s3_bucket) == []
    assert await rows_of(db, alice.id) == []


async def test_s3_down_is_503_for_uploads_and_readiness(
    storage_env: dict[str, str], alice: User, db: asyncpg.Connection
) -> None:
    settings = settings_from(storage_env, R2_ENDPOINT=f"http://127.0.0.1:{closed_port()}")
    async with AsgiClient(create_app(settings, run_relay=False)) as client:
        resp = await client.post(
            "/v1/files",
            params={"filename": "a.txt"},
            headers={**alice.headers, "Content-Type": "text/plain"},
            content=b"hello",
        )
        assert resp.status_code == 503, resp.text
        assert resp.json()["code"] == "storage_unavailable"
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["down"] == ["s3"]
    assert await rows_of(db, alice.id) == []


async def test_s3_refusing_our_credentials_is_503(
    storage_env: dict[str, str], alice: User, db: asyncpg.Connection
) -> None:
    settings = settings_from(storage_env, R2_SECRET_KEY="not-the-secret-key")
    async with AsgiClient(create_app(settings, run_relay=False)) as client:
        resp = await client.post(
            "/v1/files",
            headers={**alice.headers, "Content-Type": FORM_TYPE},
            content=streamed_form(6_000_000, content_type="text/plain"),
        )
    assert resp.status_code == 503, resp.text
    assert resp.json()["code"] == "storage_unavailable"
    assert await rows_of(db, alice.id) == []


async def test_s3_failing_on_download_is_503(
    storage_env: dict[str, str], faulty_s3: FaultyS3, alice: User
) -> None:
    settings = settings_from(storage_env, R2_ENDPOINT=faulty_s3.url)
    async with AsgiClient(create_app(settings, run_relay=False)) as client:
        up = await client.post(
            "/v1/files",
            params={"filename": "a.txt"},
            headers={**alice.headers, "Content-Type": "text/plain"},
            content=b"hello",
        )
        assert up.status_code == 201, up.text
        faulty_s3.fail_gets = True
        down = await client.get(f"/v1/files/{up.json()['id']}/content", headers=alice.headers)
    assert down.status_code == 503, down.text
    assert down.json()["code"] == "storage_unavailable"
