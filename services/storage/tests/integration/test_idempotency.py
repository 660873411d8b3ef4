"""``Idempotency-Key`` on ``POST /v1/files`` over the real Postgres and S3: a retry gets the
first upload's file, never a second copy; a reused key, an upload still running and a
malformed key are clear problems; a failed upload leaves its key free for the retry."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from xtyl_storage.app import create_app
from xtyl_storage.domain.idempotency import request_fingerprint

from .asgi import AsgiClient, Response
from .conftest import FaultyS3, User, events_of, object_keys, rows_of, settings_from, writes_object
from .test_uploads import multipart_body

pytestmark = pytest.mark.integration

KEY = "Idempotency-Key"


async def upload(
    client: AsgiClient,
    user: User,
    data: bytes | AsyncIterator[bytes] = b"hello",
    *,
    key: str | None,
    name: str = "a.txt",
    content_type: str = "text/plain",
) -> Response:
    headers = {**user.headers, "Content-Type": content_type}
    if key is not None:
        headers[KEY] = key
    return await client.post("/v1/files", params={"filename": name}, headers=headers, content=data)


def created(resp: Response, *, replayed: bool) -> str:
    assert resp.status_code == 201, resp.text
    assert resp.headers.get("idempotent-replayed") == ("true" if replayed else None)
    file_id: str = resp.json()["id"]
    return file_id


def problem(resp: Response, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = resp.json()
    assert body["code"] == code
    return body


async def key_rows(db: asyncpg.Connection, owner: uuid.UUID) -> list[dict[str, Any]]:
    rows = await db.fetch(
        "select key, file_id from xtyl_storage.idempotency_keys where owner_id = $1", owner
    )
    return [dict(row.items()) for row in rows]


async def test_a_retry_gets_the_first_file_and_stores_nothing_twice(
    client: AsgiClient,
    alice: User,
    db: asyncpg.Connection,
    s3_client: Any,
    s3_bucket: str,
) -> None:
    key = str(uuid.uuid4())
    first = created(await upload(client, alice, key=key), replayed=False)
    for _ in range(2):
        again = await upload(client, alice, key=key)
        assert created(again, replayed=True) == first
        assert (
            again.json()["sha256"]
            == (await client.get(f"/v1/files/{first}", headers=alice.headers)).json()["sha256"]
        )
    rows = await rows_of(db, alice.id)
    assert [str(row["id"]) for row in rows] == [first]
    assert len(object_keys(s3_client, s3_bucket)) == 1
    assert [e["type"] for e in await events_of(db, first)] == ["file.uploaded"]
    listed = await client.get("/v1/files", headers=alice.headers)
    assert [item["id"] for item in listed.json()["items"]] == [first]


async def test_the_same_file_by_form_or_raw_body_is_the_same_request(
    client: AsgiClient, alice: User, db: asyncpg.Connection
) -> None:
    key = "form-then-raw"
    body, form_type = multipart_body([("file", "report.pdf", "application/pdf", b"%PDF-1.7 x")])
    first = await client.post(
        "/v1/files", headers={**alice.headers, "Content-Type": form_type, KEY: key}, content=body
    )
    file_id = created(first, replayed=False)
    again = await upload(
        client, alice, b"%PDF-1.7 x", key=key, name="report.pdf", content_type="application/pdf"
    )
    assert created(again, replayed=True) == file_id
    assert len(await rows_of(db, alice.id)) == 1


@pytest.mark.parametrize(
    "other",
    [
        {"data": b"hello, again"},  # other bytes, same size or not
        {"data": b"HELLO"},
        {"name": "b.txt"},
        {"content_type": "text/csv"},
    ],
    ids=["longer-bytes", "same-size-bytes", "other-name", "other-type"],
)
async def test_a_key_reused_for_another_file_is_422_and_stores_nothing(
    other: dict[str, Any],
    client: AsgiClient,
    alice: User,
    db: asyncpg.Connection,
    s3_client: Any,
    s3_bucket: str,
) -> None:
    first = created(await upload(client, alice, key="k1"), replayed=False)
    reused = await upload(client, alice, key="k1", **other)
    body = problem(reused, 422, "idempotency_key_reused")
    assert body["field"] == KEY
    assert [str(row["id"]) for row in await rows_of(db, alice.id)] == [first]
    assert len(object_keys(s3_client, s3_bucket)) == 1


async def test_keys_belong_to_one_user(
    client: AsgiClient, alice: User, bob: User, db: asyncpg.Connection
) -> None:
    alices = created(await upload(client, alice, key="shared-key"), replayed=False)
    bobs = created(await upload(client, bob, key="shared-key"), replayed=False)
    assert bobs != alices
    assert [str(r["id"]) for r in await rows_of(db, bob.id)] == [bobs]
    assert [str(r["id"]) for r in await rows_of(db, alice.id)] == [alices]


async def test_a_retry_while_the_first_upload_runs_is_409_then_gets_its_file(
    client: AsgiClient, alice: User, db: asyncpg.Connection
) -> None:
    go_on = asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield b"hel"
        await go_on.wait()
        yield b"lo"

    first_task = asyncio.create_task(upload(client, alice, slow_body(), key="slow"))
    async with asyncio.timeout(10):  # the first upload holds the key
        while not await key_rows(db, alice.id):
            await asyncio.sleep(0.02)
    during = await upload(client, alice, key="slow")
    problem(during, 409, "idempotency_in_progress")
    assert int(during.headers["retry-after"]) >= 1
    go_on.set()
    file_id = created(await first_task, replayed=False)
    assert created(await upload(client, alice, key="slow"), replayed=True) == file_id
    assert len(await rows_of(db, alice.id)) == 1


async def test_a_failed_upload_gives_its_key_back_for_the_retry(
    storage_env: dict[str, str],
    faulty_s3: FaultyS3,
    client: AsgiClient,
    alice: User,
    db: asyncpg.Connection,
    s3_client: Any,
    s3_bucket: str,
) -> None:
    faulty_s3.hold = writes_object  # S3 never answers the write: the deadline ends it
    settings = settings_from(
        storage_env,
        R2_ENDPOINT=faulty_s3.url,
        REQUEST_DEADLINE_S="2",
        S3_CONNECT_TIMEOUT_S="0.5",
        S3_READ_TIMEOUT_S="1.5",
    )
    async with AsgiClient(create_app(settings, run_relay=False)) as stalled:
        problem(await upload(stalled, alice, key="retry-me"), 504, "storage_timeout")
        assert await key_rows(db, alice.id) == []
    assert await rows_of(db, alice.id) == []
    retried = created(await upload(client, alice, key="retry-me"), replayed=False)
    assert [str(r["id"]) for r in await rows_of(db, alice.id)] == [retried]
    assert await key_rows(db, alice.id) == [{"key": "retry-me", "file_id": uuid.UUID(retried)}]
    assert len(object_keys(s3_client, s3_bucket)) == 1


async def test_an_abandoned_claim_is_taken_over_and_an_expired_key_starts_over(
    client: AsgiClient, alice: User, db: asyncpg.Connection
) -> None:
    # a process died mid-upload: its claim was not renewed past locked_until
    await db.execute(
        "insert into xtyl_storage.idempotency_keys"
        " (owner_id, key, fingerprint, token, locked_until, expires_at)"
        " values ($1, 'orphaned', $2, $3, now() - interval '1 second', now() + interval '1 day')",
        alice.id,
        request_fingerprint("a.txt", "text/plain"),
        uuid.uuid4(),
    )
    first = created(await upload(client, alice, key="orphaned"), replayed=False)
    # past IDEMPOTENCY_KEY_TTL_S the key is forgotten: the same upload is a new file
    await db.execute(
        "update xtyl_storage.idempotency_keys set expires_at = now() - interval '1 second'"
        " where owner_id = $1",
        alice.id,
    )
    second = created(await upload(client, alice, key="orphaned"), replayed=False)
    assert second != first
    assert created(await upload(client, alice, key="orphaned"), replayed=True) == second
    assert len(await rows_of(db, alice.id)) == 2


async def test_expired_keys_are_purged(
    client: AsgiClient, alice: User, bob: User, db: asyncpg.Connection
) -> None:
    await db.execute(
        "insert into xtyl_storage.idempotency_keys"
        " (owner_id, key, fingerprint, token, locked_until, expires_at)"
        " values ($1, 'old', $2, $3, now(), now() - interval '1 second')",
        bob.id,
        "0" * 64,
        uuid.uuid4(),
    )
    created(await upload(client, alice, key="new"), replayed=False)
    assert await key_rows(db, bob.id) == []


async def test_a_replay_of_a_deleted_file_is_404(client: AsgiClient, alice: User) -> None:
    file_id = created(await upload(client, alice, key="gone"), replayed=False)
    assert (await client.delete(f"/v1/files/{file_id}", headers=alice.headers)).status_code == 204
    problem(await upload(client, alice, key="gone"), 404, "file_not_found")


@pytest.mark.parametrize("key", ["", "two words", "x" * 256, "caf\u00e9", 'a"b', "a\\b"], ids=repr)
async def test_a_malformed_key_is_422_and_stores_nothing(
    key: str, client: AsgiClient, alice: User, db: asyncpg.Connection
) -> None:
    body = problem(await upload(client, alice, key=key), 422, "invalid_idempotency_key")
    assert body["field"] == KEY
    assert await rows_of(db, alice.id) == []
    assert await key_rows(db, alice.id) == []


async def test_a_structured_field_key_is_the_same_key(client: AsgiClient, alice: User) -> None:
    first = created(await upload(client, alice, key='"sf-key"'), replayed=False)
    assert created(await upload(client, alice, key="sf-key"), replayed=True) == first
