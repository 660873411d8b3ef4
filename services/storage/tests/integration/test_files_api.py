"""Listing, reading, downloading, deleting; and that another user's id changes nothing."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import asyncpg
import pytest

from xtyl_storage.app import create_app

from .asgi import AsgiClient, Response
from .conftest import User, events_of, object_keys, rows_of, service_headers, settings_from

pytestmark = pytest.mark.integration


async def upload(
    client: AsgiClient,
    user: User,
    data: bytes = b"some text\n",
    *,
    name: str = "a.txt",
    content_type: str = "text/plain",
) -> dict[str, Any]:
    resp = await client.post(
        "/v1/files",
        params={"filename": name},
        headers={**user.headers, "Content-Type": content_type},
        content=data,
    )
    assert resp.status_code == 201, resp.text
    body: dict[str, Any] = resp.json()
    return body


def problem(resp: Response, status: int, code: str) -> None:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.json()["code"] == code


# -- listing ----------------------------------------------------------------------------------


async def test_list_pages_newest_first_with_a_cursor(
    client: AsgiClient, alice: User, bob: User
) -> None:
    ids = [(await upload(client, alice, name=f"{n}.txt"))["id"] for n in range(5)]
    await upload(client, bob, name="bobs.txt")
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params = {"limit": "2"} | ({"cursor": cursor} if cursor else {})
        resp = await client.get("/v1/files", headers=alice.headers, params=params)
        assert resp.status_code == 200, resp.text
        page = resp.json()
        pages += 1
        seen += [item["id"] for item in page["items"]]
        assert all(item["url"] for item in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == list(reversed(ids))


async def test_list_defaults_and_empty(client: AsgiClient, alice: User) -> None:
    resp = await client.get("/v1/files", headers=alice.headers)
    assert resp.status_code == 200
    assert resp.json() == {"items": [], "next_cursor": None}


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"limit": "101"}, "invalid_input"),
        ({"limit": "0"}, "invalid_input"),
        ({"limit": "ten"}, "invalid_input"),
        ({"cursor": "not-a-cursor"}, "invalid_cursor"),
        ({"cursor": "WyIyMDI0Il0"}, "invalid_cursor"),
    ],
)
async def test_bad_list_parameters_are_422(
    client: AsgiClient, alice: User, params: dict[str, str], code: str
) -> None:
    problem(await client.get("/v1/files", headers=alice.headers, params=params), 422, code)


# -- reading ----------------------------------------------------------------------------------


async def test_metadata_download_and_presigned_url_give_the_same_bytes(
    client: AsgiClient, alice: User, http: aiohttp.ClientSession
) -> None:
    data = b"\x00\x01binary\xff" * 100
    file = await upload(
        client, alice, data, name="blob.bin", content_type="application/octet-stream"
    )

    meta = await client.get(f"/v1/files/{file['id']}", headers=alice.headers)
    assert meta.status_code == 200
    assert meta.json()["sha256"] == hashlib.sha256(data).hexdigest()

    download = await client.get(f"/v1/files/{file['id']}/content", headers=alice.headers)
    assert download.status_code == 200
    assert download.content == data
    assert download.headers["content-type"] == "application/octet-stream"
    assert download.headers["content-disposition"].startswith('attachment; filename="blob.bin"')

    redirect = await client.get(
        f"/v1/files/{file['id']}/content", headers=alice.headers, params={"redirect": "true"}
    )
    assert redirect.status_code == 307
    location = redirect.headers["location"]
    expires = int(parse_qs(urlsplit(location).query)["X-Amz-Expires"][0])
    assert 0 < expires <= 900
    async with http.get(location) as resp:
        assert resp.status == 200
        assert await resp.read() == data


async def test_public_bucket_answers_the_public_url(
    storage_env: dict[str, str], alice: User
) -> None:
    settings = settings_from(storage_env, R2_PUBLIC_URL="https://files.example.com/")
    async with AsgiClient(create_app(settings, run_relay=False)) as client:
        file = await upload(client, alice, name="photo.png", content_type="image/png")
        key = f"{alice.id}/{file['id']}/photo.png"
        assert file["url"] == f"https://files.example.com/{key}"
        redirect = await client.get(
            f"/v1/files/{file['id']}/content", headers=alice.headers, params={"redirect": "true"}
        )
        assert redirect.status_code == 307
        assert redirect.headers["location"] == f"https://files.example.com/{key}"


# -- deleting ---------------------------------------------------------------------------------


async def test_delete_removes_object_and_file_and_repeating_it_is_harmless(
    client: AsgiClient,
    alice: User,
    s3_client: Any,
    s3_bucket: str,
    db: asyncpg.Connection,
) -> None:
    file = await upload(client, alice)
    first = await client.delete(f"/v1/files/{file['id']}", headers=alice.headers)
    second = await client.delete(f"/v1/files/{file['id']}", headers=alice.headers)
    assert (first.status_code, second.status_code) == (204, 204)
    assert object_keys(s3_client, s3_bucket) == []
    problem(
        await client.get(f"/v1/files/{file['id']}", headers=alice.headers), 404, "file_not_found"
    )
    listing = await client.get("/v1/files", headers=alice.headers)
    assert listing.json()["items"] == []
    types = [e["type"] for e in await events_of(db, file["id"])]
    assert types == ["file.uploaded", "file.deleted"]


# -- other users' files -----------------------------------------------------------------------


async def test_every_route_answers_404_for_another_users_file_and_changes_nothing(
    client: AsgiClient,
    alice: User,
    bob: User,
    s3_client: Any,
    s3_bucket: str,
    db: asyncpg.Connection,
) -> None:
    file = await upload(client, alice)
    fid = file["id"]
    attempts = [
        await client.get(f"/v1/files/{fid}", headers=bob.headers),
        await client.get(f"/v1/files/{fid}/content", headers=bob.headers),
        await client.get(
            f"/v1/files/{fid}/content", headers=bob.headers, params={"redirect": "true"}
        ),
        await client.delete(f"/v1/files/{fid}", headers=bob.headers),
        await client.post(f"/v1/files/{fid}/complete", headers=bob.headers),
        await client.get(f"/internal/files/{fid}/content", headers=service_headers(user_id=bob.id)),
        await client.get(f"/internal/files/{fid}", headers=service_headers(user_id=bob.id)),
    ]
    for resp in attempts:
        problem(resp, 404, "file_not_found")
    listing = await client.get("/v1/files", headers=bob.headers)
    assert listing.json()["items"] == []

    head = s3_client.head_object(Bucket=s3_bucket, Key=f"{alice.id}/{fid}/a.txt")
    assert head["ResponseMetadata"]["HTTPStatusCode"] == 200
    (row,) = await rows_of(db, alice.id)
    assert row["status"] == "ready"
    assert [e["type"] for e in await events_of(db, fid)] == ["file.uploaded"]


@pytest.mark.parametrize(
    "path",
    ["/v1/files/not-a-uuid", "/v1/files/12345/content", "/v1/files/%2e%2e%2f/content"],
)
async def test_bad_ids_are_4xx_problems(client: AsgiClient, alice: User, path: str) -> None:
    resp = await client.get(path, headers=alice.headers)
    assert 400 <= resp.status_code < 500, resp.text
    assert resp.headers["content-type"] == "application/problem+json"


async def test_unknown_id_is_404(client: AsgiClient, alice: User) -> None:
    resp = await client.delete(f"/v1/files/{uuid.uuid4()}", headers=alice.headers)
    problem(resp, 404, "file_not_found")


# -- internal route ---------------------------------------------------------------------------


async def test_internal_content_is_for_service_tokens_only(client: AsgiClient, alice: User) -> None:
    data = b"document text for the rag worker"
    file = await upload(client, alice, data)
    ok = await client.get(f"/internal/files/{file['id']}/content", headers=service_headers())
    assert ok.status_code == 200
    assert ok.content == data
    for_alice = await client.get(
        f"/internal/files/{file['id']}/content", headers=service_headers(user_id=alice.id)
    )
    assert for_alice.content == data
    meta = await client.get(f"/internal/files/{file['id']}", headers=service_headers())
    assert meta.json()["owner_id"] == str(alice.id)
    assert meta.json()["key"].startswith(f"{alice.id}/{file['id']}/")

    as_user = await client.get(f"/internal/files/{file['id']}/content", headers=alice.headers)
    assert as_user.status_code == 401
    anonymous = await client.get(f"/internal/files/{file['id']}/content")
    assert anonymous.status_code == 401
    service_on_user_route = await client.get(
        f"/v1/files/{file['id']}/content", headers=service_headers()
    )
    assert service_on_user_route.status_code == 401
