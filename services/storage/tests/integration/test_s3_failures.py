"""S3 down or failing mid-upload: 503 problem JSON, no row, no multipart upload left behind."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from xtyl_storage.app import create_app

from .asgi import AsgiClient
from .conftest import (
    MIB,
    FaultyS3,
    User,
    object_keys,
    open_multipart_uploads,
    rows_of,
    settings_from,
    writes_object,
)
from .test_uploads import FORM_TYPE, streamed_form

pytestmark = pytest.mark.integration

KEY = "Idempotency-Key"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


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


# -- S3 stalling past the request's deadline ------------------------------------------------------

#: A short deadline with one S3 attempt (0.5 + 1.5 s) inside it.
STALL_ENV = {"REQUEST_DEADLINE_S": "2", "S3_CONNECT_TIMEOUT_S": "0.5", "S3_READ_TIMEOUT_S": "1.5"}


@pytest.mark.parametrize("size", [1000, 6 * MIB], ids=["put", "multipart"])
async def test_a_write_s3_applies_after_the_deadline_is_swept_and_the_retry_stores_one_file(
    size: int,
    storage_env: dict[str, str],
    faulty_s3: FaultyS3,
    alice: User,
    s3_client: Any,
    s3_bucket: str,
    db: asyncpg.Connection,
) -> None:
    faulty_s3.hold = writes_object  # the PUT, or CompleteMultipartUpload, waits for `resume`
    settings = settings_from(storage_env, R2_ENDPOINT=faulty_s3.url, **STALL_ENV)
    headers = {**alice.headers, "Content-Type": "application/octet-stream", KEY: "stalled"}
    data = os.urandom(size)
    async with AsgiClient(create_app(settings, run_relay=False)) as client:
        started = time.monotonic()
        resp = await client.post(
            "/v1/files", params={"filename": "a.bin"}, headers=headers, content=data
        )
        assert resp.status_code == 504, resp.text
        assert resp.json()["code"] == "storage_timeout"
        assert time.monotonic() - started < 10  # the deadline (2 s), not S3's 3 attempts
        assert faulty_s3.held
        # S3 comes back and applies the write(s) it had received; nothing may stay of them
        faulty_s3.resume.set()
        async with asyncio.timeout(30):
            while len(faulty_s3.applied_late) < len(faulty_s3.held):
                await asyncio.sleep(0.05)
        if size < MIB:
            assert 200 in faulty_s3.applied_late  # the PUT really landed after our 504
        async with asyncio.timeout(30):
            while object_keys(s3_client, s3_bucket) or open_multipart_uploads(s3_client, s3_bucket):
                await asyncio.sleep(0.2)
        await asyncio.sleep(1.5)  # and stays away (the sweep looks again)
        assert object_keys(s3_client, s3_bucket) == []
        assert await rows_of(db, alice.id) == []

        faulty_s3.hold = None
        retried = await client.post(
            "/v1/files", params={"filename": "a.bin"}, headers=headers, content=data
        )
        assert retried.status_code == 201, retried.text
        assert retried.headers.get("idempotent-replayed") is None
        rows = await rows_of(db, alice.id)
        assert [str(row["id"]) for row in rows] == [retried.json()["id"]]
        assert object_keys(s3_client, s3_bucket) == [rows[0]["key"]]


async def test_a_slow_client_is_not_cut_by_the_deadline(
    storage_env: dict[str, str], alice: User, db: asyncpg.Connection
) -> None:
    settings = settings_from(storage_env, **STALL_ENV)

    async def trickle() -> AsyncIterator[bytes]:
        for _ in range(7):  # 7 MB over ~3 s: longer than the 2 s deadline, in two S3 parts
            await asyncio.sleep(0.4)
            yield os.urandom(1_000_000)

    async with AsgiClient(create_app(settings, run_relay=False)) as client:
        resp = await client.post(
            "/v1/files",
            params={"filename": "slow.bin"},
            headers={**alice.headers, "Content-Type": "application/octet-stream"},
            content=trickle(),
        )
    assert resp.status_code == 201, resp.text
    assert resp.json()["size"] == 7_000_000
    assert len(await rows_of(db, alice.id)) == 1


async def test_a_download_s3_does_not_start_in_time_is_504(
    storage_env: dict[str, str], faulty_s3: FaultyS3, alice: User
) -> None:
    settings = settings_from(storage_env, R2_ENDPOINT=faulty_s3.url, **STALL_ENV)
    async with AsgiClient(create_app(settings, run_relay=False)) as client:
        up = await client.post(
            "/v1/files",
            params={"filename": "a.txt"},
            headers={**alice.headers, "Content-Type": "text/plain"},
            content=b"hello",
        )
        assert up.status_code == 201, up.text
        faulty_s3.hold = lambda request: request.method == "GET"
        started = time.monotonic()
        down = await client.get(f"/v1/files/{up.json()['id']}/content", headers=alice.headers)
        assert time.monotonic() - started < 10
        faulty_s3.resume.set()
    assert down.status_code == 504, down.text
    assert down.json()["code"] == "storage_timeout"
