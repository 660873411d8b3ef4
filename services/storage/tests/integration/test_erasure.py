"""Erasing a deleted user over the real Postgres and S3: every row and object goes (an
unfinished multipart upload and an object no row points at too), the other users' stay; a
re-run does nothing; a run cut off half-way is finished by the next; uploads after the erasure
began are refused 403 ``account_deleted`` and leave no object, also one racing it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import asyncpg
import pytest

from xtyl_common.errors import Unavailable
from xtyl_devstack.testing import eventually
from xtyl_storage.app import create_app
from xtyl_storage.routes.files import SERVICE_STATE_KEY
from xtyl_storage.service import StorageService, open_service

from .asgi import AsgiClient, Response
from .conftest import FaultyS3, User, settings_from

pytestmark = pytest.mark.integration


def service_of(client: AsgiClient) -> StorageService:
    service: StorageService = client.app.state[SERVICE_STATE_KEY]
    return service


async def upload(
    client: AsgiClient,
    user: User,
    data: bytes | AsyncIterator[bytes] = b"some text\n",
    *,
    name: str = "a.txt",
    key: str | None = None,
    declared: int | None = None,
) -> Response:
    headers = {**user.headers, "Content-Type": "text/plain"}
    if key is not None:
        headers["Idempotency-Key"] = key
    if declared is not None:
        headers["Content-Length"] = str(declared)
    return await client.post("/v1/files", params={"filename": name}, headers=headers, content=data)


def keys_under(s3_client: Any, bucket: str, prefix: str) -> list[str]:
    response = s3_client.list_objects_v2(Bucket=bucket, Prefix=prefix)
    return sorted(item["Key"] for item in response.get("Contents", []))


def uploads_under(s3_client: Any, bucket: str, prefix: str) -> list[str]:
    response = s3_client.list_multipart_uploads(Bucket=bucket, Prefix=prefix)
    return [u["Key"] for u in response.get("Uploads", [])]


async def count(db: asyncpg.Connection, sql: str, *args: object) -> int:
    found = await db.fetchval(sql, *args)
    assert found is not None
    return int(found)


async def rows_left(db: asyncpg.Connection, owner: uuid.UUID) -> dict[str, int]:
    """The owner's rows in every storage table that keeps any."""
    counts: dict[str, int] = {}
    for table, column in (
        ("files", "owner_id"),
        ("idempotency_keys", "owner_id"),
        ("usage", "owner_id"),
        ("reservations", "owner_id"),
    ):
        counts[table] = await count(
            db,
            f"select count(*) from xtyl_storage.{table} where {column} = $1",  # noqa: S608
            owner,
        )
    counts["outbox_published"] = await count(
        db,
        "select count(*) from xtyl_storage.outbox"
        " where payload->>'owner_id' = $1 and published_at is not null",
        str(owner),
    )
    counts["outbox_unpublished"] = await count(
        db,
        "select count(*) from xtyl_storage.outbox"
        " where payload->>'owner_id' = $1 and published_at is null",
        str(owner),
    )
    return counts


async def ledger(db: asyncpg.Connection, user: uuid.UUID) -> dict[str, Any] | None:
    row = await db.fetchrow(
        "select attempts, completed_at, erased::text as erased from xtyl_storage.erasures"
        " where user_id = $1",
        user,
    )
    return None if row is None else dict(row.items())


async def seed(client: AsgiClient, user: User, s3_client: Any, bucket: str) -> None:
    """Everything a user can leave: ready files (one with an Idempotency-Key), a deleted
    file, events published and not, an unfinished multipart upload and a stray object."""
    for n in range(2):
        assert (await upload(client, user, name=f"{n}.txt")).status_code == 201
    assert (await upload(client, user, name="keyed.txt", key="k-1")).status_code == 201
    gone = await upload(client, user, name="gone.txt")
    assert (
        await client.delete(f"/v1/files/{gone.json()['id']}", headers=user.headers)
    ).status_code == 204
    db_url = service_of(client).settings.database_url
    conn: asyncpg.Connection = await asyncpg.connect(db_url)
    try:  # the relay published the uploads' events; the deletion's is still waiting
        await conn.execute(
            "update xtyl_storage.outbox set published_at = now()"
            " where payload->>'owner_id' = $1 and type = 'file.uploaded'",
            str(user.id),
        )
    finally:
        await conn.close()
    partial_key = f"{user.id}/{uuid.uuid4()}/partial.bin"
    partial = s3_client.create_multipart_upload(Bucket=bucket, Key=partial_key)
    s3_client.upload_part(
        Bucket=bucket,
        Key=partial_key,
        UploadId=partial["UploadId"],
        PartNumber=1,
        Body=b"p" * 1024,
    )
    s3_client.put_object(Bucket=bucket, Key=f"{user.id}/{uuid.uuid4()}/stray.bin", Body=b"stray")


async def test_erasure_removes_every_row_and_object_and_a_rerun_does_nothing(
    client: AsgiClient,
    alice: User,
    bob: User,
    db: asyncpg.Connection,
    s3_client: Any,
    s3_bucket: str,
) -> None:
    await seed(client, alice, s3_client, s3_bucket)
    await seed(client, bob, s3_client, s3_bucket)
    bob_keys = keys_under(s3_client, s3_bucket, f"{bob.id}/")
    bob_rows = await rows_left(db, bob.id)
    assert len(uploads_under(s3_client, s3_bucket, f"{alice.id}/")) == 1
    service = service_of(client)

    counts = await service.erase_user(alice.id, requested_at=datetime.now(UTC))

    # 3 ready files + the deleted one's tombstone; their 3 objects + the stray one
    assert counts == {"files": 4, "objects": 4, "multipart_uploads": 1}
    assert keys_under(s3_client, s3_bucket, f"{alice.id}/") == []
    assert uploads_under(s3_client, s3_bucket, f"{alice.id}/") == []
    left = await rows_left(db, alice.id)
    # the deletion's event was not published yet: it goes out normally
    assert left == {
        "files": 0,
        "idempotency_keys": 0,
        "usage": 0,
        "reservations": 0,
        "outbox_published": 0,
        "outbox_unpublished": 1,
    }
    recorded = await ledger(db, alice.id)
    assert recorded is not None
    assert recorded["completed_at"] is not None
    assert recorded["attempts"] == 1
    state = await service.erasure_state(alice.id)
    assert state.status == "erased"
    assert state.erased == counts
    # bob keeps everything
    assert keys_under(s3_client, s3_bucket, f"{bob.id}/") == bob_keys
    assert await rows_left(db, bob.id) == bob_rows
    assert len(uploads_under(s3_client, s3_bucket, f"{bob.id}/")) == 1

    # a redelivery does nothing and changes nothing
    assert await service.erase_user(alice.id, requested_at=datetime.now(UTC)) is None
    assert await ledger(db, alice.id) == recorded


async def test_an_erasure_cut_off_half_way_is_finished_by_the_next_run(
    client: AsgiClient,
    storage_env: dict[str, str],
    faulty_s3: FaultyS3,
    alice: User,
    db: asyncpg.Connection,
    s3_client: Any,
    s3_bucket: str,
) -> None:
    for n in range(3):
        assert (await upload(client, alice, name=f"{n}.txt")).status_code == 201
    for n in range(6):
        s3_client.put_object(Bucket=s3_bucket, Key=f"{alice.id}/stray-{n}/x.bin", Body=b"x")
    deletes: list[str] = []

    def second_delete_objects(request: Any) -> bool:
        if request.method == "POST" and "delete" in request.query:
            deletes.append(request.path_qs)
            return len(deletes) > 1
        return False

    faulty_s3.hold = second_delete_objects
    settings = settings_from(storage_env, R2_ENDPOINT=faulty_s3.url, ERASURE_BATCH_SIZE="2")
    async with open_service(settings, run_relay=False) as cut:
        run = asyncio.create_task(cut.erase_user(alice.id, requested_at=datetime.now(UTC)))
        async with asyncio.timeout(15):
            while not faulty_s3.held:
                await asyncio.sleep(0.02)
        run.cancel()  # the worker dies with a DeleteObjects call in flight
        await asyncio.gather(run, return_exceptions=True)
    assert (await ledger(db, alice.id) or {}).get("completed_at") is None
    assert len(keys_under(s3_client, s3_bucket, f"{alice.id}/")) > 0
    faulty_s3.resume.set()  # S3 comes back and applies the batch it had been sent

    counts = await service_of(client).erase_user(alice.id, requested_at=datetime.now(UTC))

    assert counts is not None
    assert counts["files"] == 3
    # the batch in flight when the run died was deleted but never counted
    assert 9 - 2 <= counts["objects"] <= 9
    assert keys_under(s3_client, s3_bucket, f"{alice.id}/") == []
    assert (await rows_left(db, alice.id))["files"] == 0
    recorded = await ledger(db, alice.id)
    assert recorded is not None
    assert recorded["attempts"] == 2
    assert recorded["completed_at"] is not None


async def test_uploads_after_the_erasure_began_are_refused_and_leave_nothing(
    client: AsgiClient,
    alice: User,
    bob: User,
    db: asyncpg.Connection,
    s3_client: Any,
    s3_bucket: str,
) -> None:
    await service_of(client).erase_user(alice.id, requested_at=datetime.now(UTC))

    for resp in (
        await upload(client, alice, name="late.txt"),
        await upload(client, alice, name="keyed.txt", key="late-key"),
        await client.post(
            "/v1/files/uploads",
            headers=alice.headers,
            json_body={"name": "late.txt", "content_type": "text/plain", "size": 10},
        ),
    ):
        assert resp.status_code == 403, resp.text
        assert resp.json()["code"] == "account_deleted"
    assert (await upload(client, bob, name="bobs.txt")).status_code == 201
    assert keys_under(s3_client, s3_bucket, f"{alice.id}/") == []
    assert (await rows_left(db, alice.id))["files"] == 0


async def test_an_upload_racing_the_erasure_is_refused_and_its_object_deleted(
    client: AsgiClient,
    alice: User,
    db: asyncpg.Connection,
    s3_client: Any,
    s3_bucket: str,
) -> None:
    half_sent = asyncio.Event()
    go_on = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield b"a" * 100_000
        half_sent.set()
        await go_on.wait()
        yield b"b" * 100_000

    racing = asyncio.create_task(upload(client, alice, body(), name="race.txt", declared=200_000))
    await half_sent.wait()  # the upload holds its room and is streaming
    counts = await service_of(client).erase_user(alice.id, requested_at=datetime.now(UTC))
    assert counts == {"files": 0, "objects": 0, "multipart_uploads": 0}
    go_on.set()
    resp = await racing

    assert resp.status_code == 403, resp.text
    assert resp.json()["code"] == "account_deleted"
    assert keys_under(s3_client, s3_bucket, f"{alice.id}/") == []
    assert await rows_left(db, alice.id) == {
        "files": 0,
        "idempotency_keys": 0,
        "usage": 0,
        "reservations": 0,
        "outbox_published": 0,
        "outbox_unpublished": 0,
    }


async def test_a_presigned_put_landing_after_the_erasure_is_removed(
    storage_env: dict[str, str],
    alice: User,
    db: asyncpg.Connection,
    http: aiohttp.ClientSession,
    s3_client: Any,
    s3_bucket: str,
) -> None:
    settings = settings_from(storage_env, PRESIGN_TTL_S="2")
    async with AsgiClient(create_app(settings, run_relay=False)) as client:
        service = service_of(client)
        started = []
        for name in ("a.txt", "b.txt"):
            resp = await client.post(
                "/v1/files/uploads",
                headers=alice.headers,
                json_body={"name": name, "content_type": "text/plain", "size": 5},
            )
            assert resp.status_code == 201, resp.text
            started.append(resp.json())

        # URLs handed out are still valid: the erasure cannot look at the bucket a last time
        with pytest.raises(Unavailable) as waiting:
            await service.erase_user(alice.id, requested_at=datetime.now(UTC))
        assert waiting.value.code == "erasure_waiting"
        assert waiting.value.retry_after_s is not None
        assert 0 < waiting.value.retry_after_s <= 4

        # both PUTs land after the rows are gone; one client even calls complete
        for upload_ in started:
            async with http.put(upload_["url"], data=b"hello", headers=upload_["headers"]) as put:
                assert put.status == 200, await put.text()
        done = await client.post(started[0]["complete_url"], headers=alice.headers)
        assert done.status_code == 403, done.text
        assert done.json()["code"] == "account_deleted"
        assert len(keys_under(s3_client, s3_bucket, f"{alice.id}/")) == 1

        # the stream's retries: refused until the URLs expired, then the erasure completes
        finished: list[dict[str, int] | None] = []
        codes: list[str] = []

        async def completes() -> bool:
            try:
                finished.append(await service.erase_user(alice.id, requested_at=datetime.now(UTC)))
            except Unavailable as exc:
                codes.append(exc.code)
                return False
            return True

        await eventually(completes, timeout_s=10, interval_s=0.5)
        counts = finished[-1]
        assert set(codes) <= {"erasure_waiting"}

    assert counts is not None
    assert counts["files"] == 2
    assert keys_under(s3_client, s3_bucket, f"{alice.id}/") == []
    recorded = await ledger(db, alice.id)
    assert recorded is not None
    assert recorded["attempts"] >= 2  # every run while it waited counts
