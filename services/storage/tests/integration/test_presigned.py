"""Direct uploads to a presigned PUT, then completion checked against the object."""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import asyncpg
import pytest

from .asgi import AsgiClient
from .conftest import User, events_of, object_keys, rows_of

pytestmark = pytest.mark.integration


async def start(client: AsgiClient, user: User, **body: Any) -> dict[str, Any]:
    resp = await client.post("/v1/files/uploads", headers=user.headers, json_body=body)
    assert resp.status_code == 201, resp.text
    started: dict[str, Any] = resp.json()
    return started


async def test_presigned_upload_then_complete_records_the_file_once(
    client: AsgiClient, alice: User, http: aiohttp.ClientSession, db: asyncpg.Connection
) -> None:
    data = b"%PDF-1.7 " + b"z" * 50_000
    started = await start(
        client, alice, name="../big report.pdf", content_type="application/pdf", size=len(data)
    )
    assert started["method"] == "PUT"
    assert started["file"]["status"] == "pending"
    assert started["file"]["name"] == "big report.pdf"
    expires = int(parse_qs(urlsplit(started["url"]).query)["X-Amz-Expires"][0])
    assert 0 < expires <= 900

    async with http.put(started["url"], data=data, headers=started["headers"]) as put:
        assert put.status == 200, await put.text()

    done = await client.post(started["complete_url"], headers=alice.headers)
    assert done.status_code == 200, done.text
    file = done.json()
    assert file["status"] == "ready"
    assert file["sha256"] == hashlib.sha256(data).hexdigest()
    again = await client.post(started["complete_url"], headers=alice.headers)
    assert again.status_code == 200
    assert [e["type"] for e in await events_of(db, file["id"])] == ["file.uploaded"]

    download = await client.get(f"/v1/files/{file['id']}/content", headers=alice.headers)
    assert download.content == data


async def test_the_signature_binds_type_and_length(
    client: AsgiClient, alice: User, http: aiohttp.ClientSession
) -> None:
    started = await start(client, alice, name="a.txt", content_type="text/plain", size=10)
    wrong_type = {**started["headers"], "Content-Type": "text/html"}
    async with http.put(started["url"], data=b"0123456789", headers=wrong_type) as put:
        assert put.status == 403
    longer = {"Content-Type": "text/plain"}
    async with http.put(started["url"], data=b"0123456789ABCDEF", headers=longer) as put:
        assert put.status == 403


async def test_complete_before_the_put_is_409_and_a_mismatch_is_refused(
    client: AsgiClient,
    alice: User,
    s3_client: Any,
    s3_bucket: str,
    db: asyncpg.Connection,
) -> None:
    started = await start(client, alice, name="a.txt", content_type="text/plain", size=10)
    early = await client.post(started["complete_url"], headers=alice.headers)
    assert early.status_code == 409
    assert early.json()["code"] == "upload_incomplete"

    # Someone writes a different object at the key (not through the signed URL).
    key = f"{alice.id}/{started['file']['id']}/a.txt"
    s3_client.put_object(Bucket=s3_bucket, Key=key, Body=b"x" * 99, ContentType="text/plain")
    mismatch = await client.post(started["complete_url"], headers=alice.headers)
    assert mismatch.status_code == 422
    assert mismatch.json()["code"] == "upload_mismatch"
    assert object_keys(s3_client, s3_bucket) == []
    assert await rows_of(db, alice.id) == []


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (
            {"name": "a.txt", "content_type": "text/plain", "size": 5, "owner_id": "x"},
            422,
            "invalid_input",
        ),
        (
            {"name": "a.txt", "content_type": "text/plain", "size": 5, "key": "k"},
            422,
            "invalid_input",
        ),
        ({"name": "a.txt", "content_type": "text/plain", "size": 0}, 422, "invalid_input"),
        ({"name": "a.txt", "content_type": "text/plain"}, 422, "invalid_input"),
        (
            {"name": "a.exe", "content_type": "application/x-msdownload", "size": 5},
            415,
            "content_type_not_allowed",
        ),
        (
            {"name": "a.txt", "content_type": "text/plain", "size": 2 * 1024**3},
            413,
            "file_too_large",
        ),
    ],
)
async def test_bad_presign_requests(
    client: AsgiClient, alice: User, body: dict[str, Any], status: int, code: str
) -> None:
    resp = await client.post("/v1/files/uploads", headers=alice.headers, json_body=body)
    assert resp.status_code == status, resp.text
    assert resp.json()["code"] == code
