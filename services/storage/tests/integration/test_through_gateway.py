"""The public path a browser takes: client → gateway → storage → S3, all real processes."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from xtyl_devstack.service_process import RunningService, running_service_async

from .conftest import MIB, User, object_keys, open_multipart_uploads, rows_of
from .test_process import BIG, RssSampler, tree_rss
from .test_uploads import blocks, sha256_of

pytestmark = pytest.mark.integration

FRONTEND = "https://app.example.com"


@asynccontextmanager
async def storage_behind_gateway(
    storage_env: dict[str, str], auth_env: dict[str, str], log_dir: Path, *, max_upload: int
) -> AsyncGenerator[tuple[RunningService, RunningService]]:
    """A storage process with ``max_upload`` bytes allowed, and a gateway in front of it."""
    env = {**storage_env, "MAX_UPLOAD_BYTES": str(max_upload)}
    async with running_service_async(
        "xtyl_storage", env, log_dir=log_dir, name="storage-gw", ready_path="/readyz"
    ) as storage:
        gateway_env = {
            **auth_env,
            "DATABASE_URL": env["DATABASE_URL"],
            "REDIS_URL": env["REDIS_URL"],
            "STORAGE_URL": storage.url,
            "RATE_LIMIT_REQUESTS": "100000",
            "CORS_ORIGINS": FRONTEND,
        }
        async with running_service_async(
            "xtyl_gateway", gateway_env, log_dir=log_dir, name="gateway-st"
        ) as gateway:
            yield gateway, storage


@pytest.fixture
async def stack(
    storage_env: dict[str, str], auth_env: dict[str, str], service_log_dir: Path
) -> AsyncIterator[tuple[RunningService, RunningService]]:
    async with storage_behind_gateway(
        storage_env, auth_env, service_log_dir, max_upload=10 * 1000 * 1000
    ) as services:
        yield services


@pytest.fixture
async def big_stack(
    storage_env: dict[str, str], auth_env: dict[str, str], service_log_dir: Path
) -> AsyncIterator[tuple[RunningService, RunningService]]:
    async with storage_behind_gateway(
        storage_env, auth_env, service_log_dir, max_upload=256 * MIB
    ) as services:
        yield services


async def test_200_mb_through_the_gateway_with_flat_memory_on_both(
    big_stack: tuple[RunningService, RunningService],
    http: aiohttp.ClientSession,
    alice: User,
) -> None:
    gateway, storage = big_stack
    async with http.post(
        f"{gateway.url}/v1/files",
        params={"filename": "warm.txt"},
        headers={**alice.headers, "Content-Type": "text/plain"},
        data=b"warm",
    ) as warm:
        assert warm.status == 201
    await asyncio.sleep(0.5)
    idle_gateway, idle_storage = tree_rss(gateway.pid), tree_rss(storage.pid)
    async with RssSampler(gateway.pid) as gw_rss, RssSampler(storage.pid) as st_rss:
        async with http.post(
            f"{gateway.url}/v1/files",
            params={"filename": "big.bin"},
            headers={**alice.headers, "Content-Type": "application/octet-stream"},
            data=blocks(BIG, block=MIB),
            timeout=aiohttp.ClientTimeout(total=300),
        ) as resp:
            assert resp.status == 201, await resp.text()
            file = await resp.json()
        digest = hashlib.sha256()
        async with http.get(
            f"{gateway.url}/v1/files/{file['id']}/content",
            headers=alice.headers,
            timeout=aiohttp.ClientTimeout(total=300),
        ) as download:
            assert download.status == 200
            async for chunk in download.content.iter_chunked(MIB):
                digest.update(chunk)
    expected = await sha256_of(blocks(BIG, block=MIB))
    assert file["sha256"] == expected
    assert digest.hexdigest() == expected
    gateway_growth = (gw_rss.peak - idle_gateway) / 1e6
    storage_growth = (st_rss.peak - idle_storage) / 1e6
    print(
        f"\nRSS growth over idle: gateway +{gateway_growth:.0f} MB,"
        f" storage +{storage_growth:.0f} MB"
    )
    assert gateway_growth < 100
    assert storage_growth < 100


@pytest.mark.parametrize("declared", [None, "11000000", "1000"])
async def test_11_mb_against_10_mb_is_413_and_leaves_nothing(
    declared: str | None,
    stack: tuple[RunningService, RunningService],
    http: aiohttp.ClientSession,
    alice: User,
    db: asyncpg.Connection,
    s3_client: Any,
    s3_bucket: str,
) -> None:
    gateway, _ = stack
    headers = {**alice.headers, "Content-Type": "application/octet-stream"}
    if declared is not None:
        headers["Content-Length"] = declared  # "1000" lies: the body is 11 MB
    async with http.post(
        f"{gateway.url}/v1/files",
        params={"filename": "big.bin"},
        headers=headers,
        data=blocks(11_000_000),
    ) as resp:
        status = resp.status
        body = await resp.json(content_type=None) if status != 201 else None
    if declared == "1000":
        # Over real HTTP the declared length IS the message: the server reads 1000 bytes and
        # stops; the rest never reaches the app (the app-level test in test_uploads covers a
        # body longer than its header). What must hold: nothing beyond the 1000 bytes is kept.
        assert status == 201
        assert body is None
    else:
        assert status == 413
        assert body is not None
        assert body["code"] == "file_too_large"
    await asyncio.sleep(0.2)
    stored = [row for row in await rows_of(db, alice.id) if row["size"] > 1000]
    assert stored == []
    assert open_multipart_uploads(s3_client, s3_bucket) == []


async def test_another_users_file_is_404_on_every_route_through_the_gateway(
    stack: tuple[RunningService, RunningService],
    http: aiohttp.ClientSession,
    alice: User,
    bob: User,
    s3_client: Any,
    s3_bucket: str,
) -> None:
    gateway, _ = stack
    async with http.post(
        f"{gateway.url}/v1/files",
        params={"filename": "secret.txt"},
        headers={**alice.headers, "Content-Type": "text/plain"},
        data=b"alice's secret",
    ) as resp:
        assert resp.status == 201
        file_id = (await resp.json())["id"]
    routes = [
        ("GET", f"/v1/files/{file_id}"),
        ("GET", f"/v1/files/{file_id}/content"),
        ("GET", f"/v1/files/{file_id}/content?redirect=true"),
        ("DELETE", f"/v1/files/{file_id}"),
        ("POST", f"/v1/files/{file_id}/complete"),
    ]
    for method, path in routes:
        async with http.request(
            method, gateway.url + path, headers=bob.headers, allow_redirects=False
        ) as resp:
            assert resp.status == 404, (method, path, resp.status)
            assert (await resp.json(content_type=None))["code"] == "file_not_found"
    keys = [k for k in object_keys(s3_client, s3_bucket) if file_id in k]
    assert len(keys) == 1
    head = s3_client.head_object(Bucket=s3_bucket, Key=keys[0])
    assert head["ResponseMetadata"]["HTTPStatusCode"] == 200
    async with http.get(f"{gateway.url}/v1/files/{file_id}/content", headers=alice.headers) as r:
        assert r.status == 200
        assert await r.read() == b"alice's secret"


async def test_unknown_user_id_in_body_is_refused(
    stack: tuple[RunningService, RunningService], http: aiohttp.ClientSession, alice: User
) -> None:
    gateway, _ = stack
    async with http.post(
        f"{gateway.url}/v1/files/uploads",
        headers=alice.headers,
        json={
            "name": "x.pdf",
            "content_type": "application/pdf",
            "size": 10,
            "owner_id": str(uuid.uuid4()),
        },
    ) as resp:
        assert resp.status == 422


async def test_the_gateway_publishes_one_document_for_the_public_api(
    stack: tuple[RunningService, RunningService], http: aiohttp.ClientSession
) -> None:
    gateway, _ = stack
    async with http.get(gateway.url + "/v1/openapi.json") as resp:
        assert resp.status == 200
        doc = await resp.json()
    assert "/v1/me" in doc["paths"]
    assert "/v1/files" in doc["paths"]
    assert not [path for path in doc["paths"] if path.startswith("/internal")]
    # rag and notify are not running in this test: named, not silently absent
    assert {"rag", "notify"} <= set(doc["x-xtyl-missing"])
    async with http.get(gateway.url + "/docs") as resp:
        assert resp.status == 200
        assert "/v1/openapi.json" in await resp.text()


async def test_the_frontend_may_send_an_idempotency_key_and_read_the_replay(
    stack: tuple[RunningService, RunningService], http: aiohttp.ClientSession, alice: User
) -> None:
    gateway, _ = stack
    async with http.options(
        f"{gateway.url}/v1/files",
        headers={
            "Origin": FRONTEND,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, idempotency-key",
        },
    ) as preflight:
        assert preflight.status in (200, 204), await preflight.text()
        assert preflight.headers["Access-Control-Allow-Origin"] == FRONTEND
    headers = {
        **alice.headers,
        "Origin": FRONTEND,
        "Content-Type": "text/plain",
        "Idempotency-Key": "browser-retry",
    }
    answers: list[tuple[str, str | None]] = []
    for _ in range(2):
        async with http.post(
            f"{gateway.url}/v1/files", params={"filename": "a.txt"}, headers=headers, data=b"hi"
        ) as resp:
            assert resp.status == 201
            exposed = resp.headers["Access-Control-Expose-Headers"].lower()
            assert "idempotent-replayed" in exposed  # a browser script may read it
            answers.append(((await resp.json())["id"], resp.headers.get("Idempotent-Replayed")))
    assert answers[1] == (answers[0][0], "true")
    assert answers[0][1] is None
