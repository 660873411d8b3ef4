"""``/internal/me/*``: what the gateway reads for one user with a service token naming them
(usage, erasure, export); user tokens and tokens naming nobody are refused; a token naming a
user reads only that user's files through ``/internal/files``."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from xtyl_storage.routes.files import SERVICE_STATE_KEY
from xtyl_storage.service import EXPORT_PAGE, StorageService

from .asgi import AsgiClient
from .conftest import User, service_headers

pytestmark = pytest.mark.integration


def gateway_for(user: User) -> dict[str, str]:
    return service_headers("gateway", user_id=user.id)


async def upload(client: AsgiClient, user: User, data: bytes, name: str) -> dict[str, Any]:
    resp = await client.post(
        "/v1/files",
        params={"filename": name},
        headers={**user.headers, "Content-Type": "text/plain"},
        content=data,
    )
    assert resp.status_code == 201, resp.text
    body: dict[str, Any] = resp.json()
    return body


async def test_usage_answers_each_quota_of_the_user_named(
    client: AsgiClient, alice: User, bob: User
) -> None:
    await upload(client, alice, b"a" * 300, "a.txt")
    await upload(client, alice, b"b" * 200, "b.txt")
    await upload(client, bob, b"c" * 50, "c.txt")

    resp = await client.get("/internal/me/usage", headers=gateway_for(alice))

    assert resp.status_code == 200, resp.text
    assert resp.json() == {
        "storage_bytes": {"used": 500, "limit": 5 * 1024**3, "unit": "bytes"},
        "files": {"used": 2, "limit": 10_000, "unit": "count"},
    }
    fresh = await client.get("/internal/me/usage", headers=service_headers("gateway", uuid.uuid4()))
    assert fresh.json()["storage_bytes"]["used"] == 0


async def test_erasure_answers_the_ledger_state(client: AsgiClient, alice: User) -> None:
    before = await client.get("/internal/me/erasure", headers=gateway_for(alice))
    assert before.status_code == 200, before.text
    assert before.json()["status"] == "none"

    await upload(client, alice, b"x", "x.txt")
    service: StorageService = client.app.state[SERVICE_STATE_KEY]
    requested = datetime.now(UTC)
    await service.erase_user(alice.id, requested_at=requested)

    after = (await client.get("/internal/me/erasure", headers=gateway_for(alice))).json()
    assert after["status"] == "erased"
    assert after["erased"] == {"files": 1, "objects": 1, "multipart_uploads": 0}
    assert after["attempts"] == 1
    assert datetime.fromisoformat(after["requested_at"]) == requested
    assert after["completed_at"] is not None


async def test_export_streams_the_users_ready_files_one_json_object_a_line(
    client: AsgiClient, alice: User, bob: User
) -> None:
    kept = [await upload(client, alice, f"file {n}".encode(), f"{n}.txt") for n in range(3)]
    gone = await upload(client, alice, b"gone", "gone.txt")
    await client.delete(f"/v1/files/{gone['id']}", headers=alice.headers)
    await upload(client, bob, b"bob's", "bob.txt")

    resp = await client.get("/internal/me/export", headers=gateway_for(alice))

    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("application/x-ndjson")
    assert resp.content.endswith(b"\n")
    lines = [json.loads(line) for line in resp.content.splitlines()]
    assert [line["id"] for line in lines] == [f["id"] for f in reversed(kept)]  # newest first
    assert lines[0] == {
        "record": "file",
        "id": kept[2]["id"],
        "name": "2.txt",
        "content_type": "text/plain",
        "size": 6,
        "sha256": kept[2]["sha256"],
        "created_at": lines[0]["created_at"],
    }
    assert datetime.fromisoformat(lines[0]["created_at"]) == datetime.fromisoformat(
        kept[2]["created_at"]
    )
    # the bytes of each, through the existing route, with the same token
    content = await client.get(
        f"/internal/files/{kept[0]['id']}/content", headers=gateway_for(alice)
    )
    assert content.content == b"file 0"


async def test_export_pages_through_more_files_than_a_page(
    client: AsgiClient, alice: User, db: asyncpg.Connection
) -> None:
    total = EXPORT_PAGE + 7
    await db.executemany(
        "insert into xtyl_storage.files"
        " (id, owner_id, key, name, content_type, size, sha256, status, created_at, updated_at)"
        " values ($1, $2, $3, $4, 'text/plain', 1, $5, 'ready',"
        " now() - make_interval(secs => $6), now())",
        [
            (file_id, alice.id, f"{alice.id}/{file_id}/f.txt", f"{n}.txt", "0" * 64, n % 50)
            for n in range(total)
            for file_id in [uuid.uuid4()]
        ],
    )

    resp = await client.get("/internal/me/export", headers=gateway_for(alice))

    lines = [json.loads(line) for line in resp.content.splitlines()]
    assert len(lines) == total
    assert len({line["id"] for line in lines}) == total
    keys = [(line["created_at"], line["id"]) for line in lines]
    assert keys == sorted(keys, reverse=True)


@pytest.mark.parametrize("route", ["usage", "erasure", "export"])
async def test_me_routes_refuse_user_tokens_and_tokens_naming_nobody(
    client: AsgiClient, alice: User, route: str
) -> None:
    as_user = await client.get(f"/internal/me/{route}", headers=alice.headers)
    assert as_user.status_code == 401, as_user.text
    assert as_user.headers["content-type"] == "application/problem+json"
    nobody = await client.get(f"/internal/me/{route}", headers=service_headers("gateway"))
    assert nobody.status_code == 403, nobody.text
    assert nobody.json()["code"] == "user_required"


async def test_a_token_naming_a_user_reads_none_of_another_users_files(
    client: AsgiClient, alice: User, bob: User
) -> None:
    bobs = await upload(client, bob, b"bob's secret", "secret.txt")
    for path in (f"/internal/files/{bobs['id']}", f"/internal/files/{bobs['id']}/content"):
        resp = await client.get(path, headers=gateway_for(alice))
        assert resp.status_code == 404, resp.text
        assert resp.json()["code"] == "file_not_found"
        own = await client.get(path, headers=gateway_for(bob))
        assert own.status_code == 200, own.text
