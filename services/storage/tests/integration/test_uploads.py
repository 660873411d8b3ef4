"""Uploads through the service: streamed, hashed, limited, and nothing left behind on failure."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from .asgi import AsgiClient
from .conftest import User, events_of, object_keys, open_multipart_uploads, rows_of

pytestmark = pytest.mark.integration

LIMIT = 10 * 1000 * 1000


async def blocks(total: int, block: int = 256 * 1024, seed: bytes = b"x") -> AsyncIterator[bytes]:
    """``total`` deterministic bytes, in blocks, never all in memory."""
    sent = 0
    counter = 0
    while sent < total:
        size = min(block, total - sent)
        piece = (hashlib.sha256(seed + counter.to_bytes(8, "big")).digest() * (size // 32 + 1))[
            :size
        ]
        counter += 1
        sent += size
        yield piece


async def sha256_of(chunks: AsyncIterator[bytes]) -> str:
    digest = hashlib.sha256()
    async for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def multipart_body(
    parts: list[tuple[str, str | None, str | None, bytes]], boundary: str = "xtylboundary"
) -> tuple[bytes, str]:
    """``(field, filename, content type, bytes)`` parts as a multipart/form-data body."""
    out = bytearray()
    for field, filename, content_type, data in parts:
        out += f"--{boundary}\r\n".encode()
        disposition = f'form-data; name="{field}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        out += f"Content-Disposition: {disposition}\r\n".encode()
        if content_type is not None:
            out += f"Content-Type: {content_type}\r\n".encode()
        out += b"\r\n" + data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


async def streamed_form(
    total: int, *, filename: str = "big.bin", content_type: str = "application/octet-stream"
) -> AsyncIterator[bytes]:
    yield (
        '--xtylboundary\r\nContent-Disposition: form-data; name="file";'
        f' filename="{filename}"\r\nContent-Type: {content_type}\r\n\r\n'
    ).encode()
    async for chunk in blocks(total):
        yield chunk
    yield b"\r\n--xtylboundary--\r\n"


FORM_TYPE = "multipart/form-data; boundary=xtylboundary"


async def assert_nothing_left(
    s3_client: Any, bucket: str, db: asyncpg.Connection, owner: uuid.UUID
) -> None:
    assert object_keys(s3_client, bucket) == []
    assert open_multipart_uploads(s3_client, bucket) == []
    assert await rows_of(db, owner) == []


# -- what gets stored -------------------------------------------------------------------------


async def test_multipart_form_upload_is_stored_under_the_owner_with_one_event(
    client: AsgiClient,
    alice: User,
    s3_client: Any,
    s3_bucket: str,
    db: asyncpg.Connection,
) -> None:
    data = b"quarterly numbers\n" * 500
    body, form_type = multipart_body([("file", "report.txt", "text/plain", data)])
    resp = await client.post(
        "/v1/files", headers={**alice.headers, "Content-Type": form_type}, content=body
    )
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["name"] == "report.txt"
    assert body["size"] == len(data)
    assert body["content_type"] == "text/plain"
    assert body["sha256"] == hashlib.sha256(data).hexdigest()
    assert body["status"] == "ready"
    assert "X-Amz-Signature=" in body["url"]  # private bucket: a presigned GET

    keys = object_keys(s3_client, s3_bucket)
    assert keys == [f"{alice.id}/{body['id']}/report.txt"]
    head = s3_client.head_object(Bucket=s3_bucket, Key=keys[0])
    assert head["ContentLength"] == len(data)
    assert head["ContentType"] == "text/plain"

    (row,) = await rows_of(db, alice.id)
    assert str(row["id"]) == body["id"]
    assert row["status"] == "ready"
    events = await events_of(db, body["id"])
    assert [e["type"] for e in events] == ["file.uploaded"]
    payload = events[0]["payload"]
    assert payload["owner_id"] == str(alice.id)
    assert payload["sha256"] == body["sha256"]
    assert payload["size"] == len(data)
    assert events[0]["producer"] == "storage"


async def test_raw_body_upload_with_filename_query(
    client: AsgiClient, alice: User, s3_client: Any, s3_bucket: str
) -> None:
    data = b"%PDF-1.7 fake pdf bytes"
    resp = await client.post(
        "/v1/files",
        params={"filename": "Annual Report.pdf"},
        headers={**alice.headers, "Content-Type": "application/pdf"},
        content=data,
    )
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["name"] == "Annual Report.pdf"
    assert body["content_type"] == "application/pdf"
    assert object_keys(s3_client, s3_bucket) == [f"{alice.id}/{body['id']}/Annual-Report.pdf"]


async def test_large_upload_goes_multipart_and_downloads_identical(
    client: AsgiClient,
    alice: User,
    s3_client: Any,
    s3_bucket: str,
) -> None:
    size = 9_500_000  # > one 5 MiB part: a multipart upload of two parts
    resp = await client.post(
        "/v1/files",
        headers={**alice.headers, "Content-Type": FORM_TYPE},
        content=streamed_form(size),
    )
    assert resp.status_code == 201, resp.text
    body = resp.json()
    expected = await sha256_of(blocks(size))
    assert body["sha256"] == expected
    assert body["size"] == size
    key = object_keys(s3_client, s3_bucket)[0]
    head = s3_client.head_object(Bucket=s3_bucket, Key=key)
    assert head["ETag"].endswith('-2"')  # two parts
    download = await client.get(f"/v1/files/{body['id']}/content", headers=alice.headers)
    assert download.status_code == 200
    assert hashlib.sha256(download.content).hexdigest() == expected
    assert download.headers["content-length"] == str(size)
    assert open_multipart_uploads(s3_client, s3_bucket) == []


# -- the size limit ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "declared",
    [
        pytest.param(None, id="chunked-no-length"),
        pytest.param("1000", id="lying-content-length"),
        pytest.param(str(11_000_000 + 200), id="honest-content-length"),
    ],
)
async def test_11_mb_form_against_10_mb_limit_is_413_and_leaves_nothing(
    client: AsgiClient,
    alice: User,
    s3_client: Any,
    s3_bucket: str,
    db: asyncpg.Connection,
    declared: str | None,
) -> None:
    headers = {**alice.headers, "Content-Type": FORM_TYPE}
    if declared is not None:
        headers["Content-Length"] = declared
    resp = await client.post("/v1/files", headers=headers, content=streamed_form(11_000_000))
    assert resp.status_code == 413, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.json()["code"] == "file_too_large"
    assert resp.json()["max_bytes"] == LIMIT
    await assert_nothing_left(s3_client, s3_bucket, db, alice.id)


@pytest.mark.parametrize("declared", [None, "1000"], ids=["chunked", "lying-content-length"])
async def test_11_mb_raw_body_against_10_mb_limit_is_413_and_leaves_nothing(
    client: AsgiClient,
    alice: User,
    s3_client: Any,
    s3_bucket: str,
    db: asyncpg.Connection,
    declared: str | None,
) -> None:
    headers = {**alice.headers, "Content-Type": "application/octet-stream"}
    if declared is not None:
        headers["Content-Length"] = declared
    resp = await client.post(
        "/v1/files", params={"filename": "big.bin"}, headers=headers, content=blocks(11_000_000)
    )
    assert resp.status_code == 413, resp.text
    assert resp.json()["code"] == "file_too_large"
    await assert_nothing_left(s3_client, s3_bucket, db, alice.id)


async def test_exactly_the_limit_is_accepted(client: AsgiClient, alice: User) -> None:
    resp = await client.post(
        "/v1/files",
        params={"filename": "edge.bin"},
        headers={**alice.headers, "Content-Type": "application/octet-stream"},
        content=blocks(LIMIT),
    )
    assert resp.status_code == 201, resp.text
    assert resp.json()["size"] == LIMIT


# -- refused before anything is written -------------------------------------------------------


async def test_content_type_not_allowed_is_415(
    client: AsgiClient,
    alice: User,
    s3_client: Any,
    s3_bucket: str,
    db: asyncpg.Connection,
) -> None:
    body, form_type = multipart_body([("file", "run.exe", "application/x-msdownload", b"MZ")])
    form = await client.post(
        "/v1/files", headers={**alice.headers, "Content-Type": form_type}, content=body
    )
    raw = await client.post(
        "/v1/files",
        params={"filename": "page.html"},
        headers={**alice.headers, "Content-Type": "application/x-sh"},
        content=b"#!/bin/sh",
    )
    for resp in (form, raw):
        assert resp.status_code == 415, resp.text
        assert resp.json()["code"] == "content_type_not_allowed"
    await assert_nothing_left(s3_client, s3_bucket, db, alice.id)


@pytest.mark.parametrize(
    ("body", "content_type", "params", "status", "code"),
    [
        pytest.param(
            b"no boundary here",
            "multipart/form-data",
            {},
            400,
            "malformed_multipart",
            id="no-boundary",
        ),
        pytest.param(
            b'--xtylboundary\r\nContent-Disposition: form-data; name="file"; filename="a.txt"'
            b"\r\n\r\ntruncated",
            FORM_TYPE,
            {},
            400,
            "malformed_multipart",
            id="truncated-form",
        ),
        pytest.param(
            b"garbage without any boundary at all",
            FORM_TYPE,
            {},
            400,
            "malformed_multipart",
            id="garbage",
        ),
        pytest.param(b"", FORM_TYPE, {}, 400, "malformed_multipart", id="empty-form"),
        pytest.param(b"--xtylboundary--\r\n", FORM_TYPE, {}, 422, "missing_file", id="no-parts"),
        pytest.param(
            multipart_body([("note", None, None, b"hello")])[0],
            FORM_TYPE,
            {},
            422,
            "unexpected_field",
            id="no-file-part",
        ),
        pytest.param(
            multipart_body(
                [
                    ("owner_id", None, None, str(uuid.uuid4()).encode()),
                    ("file", "a.txt", "text/plain", b"x"),
                ]
            )[0],
            FORM_TYPE,
            {},
            422,
            "unexpected_field",
            id="owner-id-field",
        ),
        pytest.param(
            multipart_body(
                [("file", "a.txt", "text/plain", b"x"), ("key", None, None, b"other/path")]
            )[0],
            FORM_TYPE,
            {},
            422,
            "unexpected_field",
            id="key-field-after-file",
        ),
        pytest.param(
            multipart_body([("file", "a.txt", "text/plain", b"")])[0],
            FORM_TYPE,
            {},
            422,
            "empty_file",
            id="empty-file-part",
        ),
        pytest.param(b"", "text/plain", {"filename": "a.txt"}, 422, "empty_file", id="empty-raw"),
        pytest.param(b"hello", "text/plain", {}, 422, "missing_filename", id="raw-no-filename"),
        pytest.param(
            b"hello",
            "text/plain",
            {"filename": "a.txt", "owner_id": str(uuid.uuid4())},
            422,
            "unexpected_field",
            id="owner-id-query",
        ),
        pytest.param(
            b"hello",
            "text/plain",
            {"filename": "a.txt", "key": "x/y"},
            422,
            "unexpected_field",
            id="key-query",
        ),
        pytest.param(
            b"hello",
            "not a type",
            {"filename": "a.txt"},
            422,
            "invalid_content_type",
            id="bad-type",
        ),
    ],
)
async def test_bad_upload_bodies_are_clear_4xx_and_store_nothing(
    client: AsgiClient,
    alice: User,
    s3_client: Any,
    s3_bucket: str,
    db: asyncpg.Connection,
    body: bytes,
    content_type: str,
    params: dict[str, str],
    status: int,
    code: str,
) -> None:
    resp = await client.post(
        "/v1/files",
        params=params,
        headers={**alice.headers, "Content-Type": content_type},
        content=body,
    )
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.json()["code"] == code
    await assert_nothing_left(s3_client, s3_bucket, db, alice.id)


@pytest.mark.parametrize(
    ("raw", "name", "slug"),
    [
        ("../../etc/passwd", "passwd", "passwd"),
        ("%2e%2e%2f%2e%2e%2fsecret.txt", "secret.txt", "secret.txt"),
        ("..\\..\\windows\\win.ini", "win.ini", "win.ini"),
        ("line\r\nbreak.txt", "line break.txt", "line-break.txt"),
        ("invoice\u202egnp.exe", "invoicegnp.exe", "invoicegnp.exe"),
        ("résumé 2024.txt", "résumé 2024.txt", "resume-2024.txt"),
        ("...", "file", "file"),
        ("/", "file", "file"),
    ],
)
async def test_hostile_names_are_cleaned_and_stay_under_the_owner_prefix(
    client: AsgiClient,
    alice: User,
    s3_client: Any,
    s3_bucket: str,
    raw: str,
    name: str,
    slug: str,
) -> None:
    resp = await client.post(
        "/v1/files",
        params={"filename": raw},
        headers={**alice.headers, "Content-Type": "text/plain"},
        content=b"content",
    )
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["name"] == name
    assert object_keys(s3_client, s3_bucket) == [f"{alice.id}/{body['id']}/{slug}"]


async def test_a_1_kb_name_is_cut_keeping_its_extension(
    client: AsgiClient, alice: User, s3_client: Any, s3_bucket: str
) -> None:
    raw = "a" * 1000 + ".pdf"
    resp = await client.post(
        "/v1/files",
        params={"filename": raw},
        headers={**alice.headers, "Content-Type": "application/pdf"},
        content=b"%PDF",
    )
    assert resp.status_code == 201, resp.text
    name = resp.json()["name"]
    assert name.endswith(".pdf")
    assert len(name.encode()) <= 255
    (key,) = object_keys(s3_client, s3_bucket)
    assert key.startswith(f"{alice.id}/")
    assert len(key.rsplit("/", 1)[1]) <= 100


async def test_no_token_is_401(client: AsgiClient) -> None:
    resp = await client.post("/v1/files", params={"filename": "a.txt"}, content=b"x")
    assert resp.status_code == 401
    assert resp.json()["code"] == "missing_token"


async def test_many_uploads_then_random_bytes_are_intact(client: AsgiClient, alice: User) -> None:
    payloads = [os.urandom(n) for n in (1, 1000, 70_000)]
    for data in payloads:
        resp = await client.post(
            "/v1/files",
            params={"filename": "r.bin"},
            headers={**alice.headers, "Content-Type": "application/octet-stream"},
            content=data,
        )
        assert resp.status_code == 201
        got = await client.get(f"/v1/files/{resp.json()['id']}/content", headers=alice.headers)
        assert got.content == data
