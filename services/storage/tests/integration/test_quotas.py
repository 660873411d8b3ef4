"""Per-user quotas over the real Postgres and S3: each refused with its own code at the limit,
refused before a byte is read when the declared size cannot fit, race-free (twenty uploads
racing for the last megabyte store exactly what fits), room given back on failure and on
delete, and room a dead process held freed when its lease runs out."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import asyncpg
import pytest
from litestar import Litestar

from xtyl_devstack.testing import eventually
from xtyl_storage.app import create_app

from .asgi import AsgiClient, Response
from .conftest import User, object_keys, open_multipart_uploads, settings_from
from .test_uploads import blocks

pytestmark = pytest.mark.integration

MB = 1000 * 1000


@asynccontextmanager
async def client_with(env: dict[str, str], **overrides: str) -> AsyncGenerator[AsgiClient]:
    settings = settings_from(env, **overrides)
    async with AsgiClient(create_app(settings, run_relay=False)) as client:
        yield client


async def upload(
    client: AsgiClient,
    user: User,
    data: bytes | AsyncIterator[bytes],
    *,
    name: str = "a.bin",
    declared: int | None = None,
) -> Response:
    headers = {**user.headers, "Content-Type": "application/octet-stream"}
    if declared is not None:
        headers["Content-Length"] = str(declared)
    return await client.post("/v1/files", params={"filename": name}, headers=headers, content=data)


async def chunked(data: bytes, pieces: int = 4) -> AsyncIterator[bytes]:
    """``data`` with no Content-Length (the ASGI client sends none for a stream)."""
    step = max(1, len(data) // pieces)
    for start in range(0, len(data), step):
        await asyncio.sleep(0)
        yield data[start : start + step]


def refused(resp: Response, code: str) -> dict[str, Any]:
    assert resp.status_code == 403, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = resp.json()
    assert body["code"] == code
    return body


async def stored(db: asyncpg.Connection, owner: uuid.UUID) -> tuple[int, int]:
    """(bytes, files) of the owner's ready files, from the files themselves."""
    row = await db.fetchrow(
        "select coalesce(sum(size), 0)::bigint as bytes, count(*) as files"
        " from xtyl_storage.files where owner_id = $1 and status = 'ready'",
        owner,
    )
    assert row is not None
    return row["bytes"], row["files"]


async def usage_row(db: asyncpg.Connection, owner: uuid.UUID) -> tuple[int, int]:
    row = await db.fetchrow(
        "select bytes, files from xtyl_storage.usage where owner_id = $1", owner
    )
    return (0, 0) if row is None else (row["bytes"], row["files"])


async def reservations(db: asyncpg.Connection, owner: uuid.UUID) -> int:
    found = await db.fetchval(
        "select count(*) from xtyl_storage.reservations where owner_id = $1", owner
    )
    assert found is not None
    return int(found)


async def answer_without_reading(
    app: Litestar, user: User, *, declared: int
) -> tuple[int, dict[str, Any], int]:
    """POST a raw upload declaring ``declared`` bytes and never send one: the status and
    problem the app answers, and how many times it asked for body bytes before answering."""
    answered = asyncio.Event()
    status = 0
    body = bytearray()
    asked_before_answer = 0

    async def receive() -> Any:
        nonlocal asked_before_answer
        if not answered.is_set():
            asked_before_answer += 1
        await asyncio.Event().wait()  # the client never sends a byte

    async def send(message: Any) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            body.extend(message.get("body", b""))
            if not message.get("more_body", False):
                answered.set()

    headers = {
        **{k.lower(): v for k, v in user.headers.items()},
        "content-type": "application/octet-stream",
        "content-length": str(declared),
    }
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/files",
        "raw_path": b"/v1/files",
        "root_path": "",
        "query_string": b"filename=big.bin",
        "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
        "state": {},
    }
    task = asyncio.create_task(app(scope, receive, send))  # type: ignore[arg-type]
    try:
        async with asyncio.timeout(10):
            await answered.wait()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return status, json.loads(bytes(body)), asked_before_answer


async def test_the_byte_quota_is_refused_with_its_code_at_the_limit(
    storage_env: dict[str, str],
    alice: User,
    db: asyncpg.Connection,
    s3_client: Any,
    s3_bucket: str,
) -> None:
    async with client_with(storage_env, QUOTA_STORAGE_BYTES="1000") as client:
        assert (await upload(client, alice, b"a" * 600)).status_code == 201
        exactly = await upload(client, alice, b"b" * 400)
        assert exactly.status_code == 201, exactly.text  # exactly the limit fits
        assert await stored(db, alice.id) == (1000, 2)

        one_more = refused(await upload(client, alice, b"c"), "quota_storage_bytes")
        assert one_more["used"] == 1000
        assert one_more["limit"] == 1000
        assert one_more["quota"] == "storage_bytes"
        refused(await upload(client, alice, chunked(b"c" * 10)), "quota_storage_bytes")
        presign = await client.post(
            "/v1/files/uploads",
            headers=alice.headers,
            json_body={"name": "p.bin", "content_type": "application/octet-stream", "size": 1},
        )
        refused(presign, "quota_storage_bytes")

        # a declared size that cannot fit is refused before a byte of it is read
        status, problem, asked = await answer_without_reading(client.app, alice, declared=5000)
        assert (status, problem["code"], asked) == (403, "quota_storage_bytes", 0)

    assert len(object_keys(s3_client, s3_bucket)) == 2
    assert await usage_row(db, alice.id) == (1000, 2)
    assert await reservations(db, alice.id) == 0


async def test_the_file_quota_is_refused_with_its_code_and_a_delete_gives_room_back(
    storage_env: dict[str, str], alice: User, bob: User, db: asyncpg.Connection
) -> None:
    async with client_with(storage_env, QUOTA_FILES="2") as client:
        first = await upload(client, alice, b"one")
        assert first.status_code == 201
        assert (await upload(client, alice, b"two")).status_code == 201
        problem = refused(await upload(client, alice, b"three"), "quota_files")
        assert (problem["used"], problem["limit"]) == (2, 2)
        presign = await client.post(
            "/v1/files/uploads",
            headers=alice.headers,
            json_body={"name": "p.txt", "content_type": "text/plain", "size": 3},
        )
        refused(presign, "quota_files")
        assert (await upload(client, bob, b"bob's")).status_code == 201  # quotas are per user

        deleted = await client.delete(f"/v1/files/{first.json()['id']}", headers=alice.headers)
        assert deleted.status_code == 204
        assert await usage_row(db, alice.id) == (3, 1)
        assert (await upload(client, alice, b"three")).status_code == 201
    assert await usage_row(db, alice.id) == await stored(db, alice.id) == (8, 2)


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
async def test_twenty_uploads_racing_for_the_last_megabyte_store_what_fits(
    storage_env: dict[str, str],
    alice: User,
    db: asyncpg.Connection,
    s3_client: Any,
    s3_bucket: str,
    declared: bool,
) -> None:
    async with client_with(storage_env, QUOTA_STORAGE_BYTES=str(3 * MB)) as client:
        assert (await upload(client, alice, blocks(2 * MB), declared=2 * MB)).status_code == 201

        async def one(n: int) -> Response:
            data = bytes([n]) * (MB // 10)
            if declared:
                return await upload(
                    client, alice, chunked(data), name=f"{n}.bin", declared=len(data)
                )
            return await upload(client, alice, chunked(data), name=f"{n}.bin")

        answers = await asyncio.gather(*(one(n) for n in range(20)))

    won = [a for a in answers if a.status_code == 201]
    for answer in answers:
        if answer.status_code != 201:
            refused(answer, "quota_storage_bytes")
    total, files = await stored(db, alice.id)
    assert total <= 3 * MB
    if declared:
        # each declared its size: exactly the ten that fit in the last megabyte
        assert len(won) == 10
        assert total == 3 * MB
    else:
        # a body of unknown size holds one byte until it ended: at most one fewer fits
        assert 9 <= len(won) <= 10
    assert files == len(won) + 1
    assert len(object_keys(s3_client, s3_bucket)) == files
    assert await usage_row(db, alice.id) == (total, files)
    assert await reservations(db, alice.id) == 0


async def test_a_chunked_body_going_past_the_quota_is_cut_off_and_leaves_nothing(
    storage_env: dict[str, str],
    alice: User,
    db: asyncpg.Connection,
    s3_client: Any,
    s3_bucket: str,
) -> None:
    async with client_with(storage_env, QUOTA_STORAGE_BYTES=str(6 * MB)) as client:
        # 8 MB with no declared size: past the first 5 MiB part, a multipart upload runs
        resp = await upload(client, alice, blocks(8 * MB))
        problem = refused(resp, "quota_storage_bytes")
        assert problem["limit"] == 6 * MB
        # the room is free again: a file that fits is stored
        assert (await upload(client, alice, blocks(5 * MB))).status_code == 201
    assert len(object_keys(s3_client, s3_bucket)) == 1
    assert open_multipart_uploads(s3_client, s3_bucket) == []
    assert await usage_row(db, alice.id) == (5 * MB, 1)
    assert await reservations(db, alice.id) == 0


async def test_a_lying_content_length_grows_its_hold_and_stops_at_the_quota(
    storage_env: dict[str, str], alice: User, db: asyncpg.Connection
) -> None:
    async with client_with(storage_env, QUOTA_STORAGE_BYTES=str(3 * MB)) as client:
        small_claim = await upload(client, alice, blocks(2 * MB), declared=1000)
        assert small_claim.status_code == 201, small_claim.text
        assert small_claim.json()["size"] == 2 * MB
        refused(await upload(client, alice, blocks(2 * MB), declared=1000), "quota_storage_bytes")
    assert await usage_row(db, alice.id) == (2 * MB, 1)


async def test_room_held_by_a_process_that_died_is_free_once_its_lease_ran_out(
    client: AsgiClient, alice: User, db: asyncpg.Connection
) -> None:
    # a dead process's upload held all of alice's room (5 GiB by default), its lease running
    await db.execute(
        "insert into xtyl_storage.reservations (id, owner_id, bytes, expires_at)"
        " values ($1, $2, $3, now() + interval '1.5 seconds')",
        uuid.uuid4(),
        alice.id,
        5 * 1024**3,
    )
    refused(await upload(client, alice, b"held"), "quota_storage_bytes")

    async def fits() -> bool:
        resp = await upload(client, alice, b"free again")
        if resp.status_code == 403:
            return False
        assert resp.status_code == 201, resp.text
        return True

    await eventually(fits, timeout_s=10, interval_s=0.2)
    assert await reservations(db, alice.id) == 0  # the lapsed one was purged


async def test_a_presigned_upload_holds_its_size_until_it_completes(
    storage_env: dict[str, str],
    alice: User,
    db: asyncpg.Connection,
    http: aiohttp.ClientSession,
) -> None:
    async with client_with(storage_env, QUOTA_STORAGE_BYTES="100") as client:
        started = await client.post(
            "/v1/files/uploads",
            headers=alice.headers,
            json_body={"name": "p.txt", "content_type": "text/plain", "size": 60},
        )
        assert started.status_code == 201, started.text
        # the 60 bytes are held: 50 more do not fit, 40 do
        refused(await upload(client, alice, b"x" * 50), "quota_storage_bytes")
        assert (await upload(client, alice, b"y" * 40)).status_code == 201
        body = started.json()
        async with http.put(body["url"], data=b"z" * 60, headers=body["headers"]) as put:
            assert put.status == 200
        done = await client.post(body["complete_url"], headers=alice.headers)
        assert done.status_code == 200, done.text
    assert await usage_row(db, alice.id) == await stored(db, alice.id) == (100, 2)
    assert await reservations(db, alice.id) == 0


async def test_a_retry_of_an_upload_that_succeeded_answers_its_file_at_the_quota(
    storage_env: dict[str, str], alice: User
) -> None:
    async with client_with(storage_env, QUOTA_STORAGE_BYTES="10") as client:
        headers = {**alice.headers, "Content-Type": "text/plain", "Idempotency-Key": "k-1"}
        first = await client.post(
            "/v1/files", params={"filename": "a.txt"}, headers=headers, content=b"0123456789"
        )
        assert first.status_code == 201, first.text
        retry = await client.post(
            "/v1/files", params={"filename": "a.txt"}, headers=headers, content=b"0123456789"
        )
        assert retry.status_code == 201, retry.text
        assert retry.headers["idempotent-replayed"] == "true"
        assert retry.json()["id"] == first.json()["id"]
        other = await client.post(
            "/v1/files",
            params={"filename": "b.txt"},
            headers={**headers, "Idempotency-Key": "k-2"},
            content=b"x",
        )
        refused(other, "quota_storage_bytes")
