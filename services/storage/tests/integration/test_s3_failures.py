"""S3 down or failing mid-upload: 503 problem JSON, no row, no multipart upload left behind."""

from __future__ import annotations

import socket
from typing import Any

import asyncpg
import pytest

from xtyl_storage.app import create_app

from .asgi import AsgiClient
from .conftest import FaultyS3, User, object_keys, open_multipart_uploads, rows_of, settings_from
from .test_uploads import FORM_TYPE, streamed_form

pytestmark = pytest.mark.integration


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
