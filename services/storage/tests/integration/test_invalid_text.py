"""Text Postgres cannot store (NUL, lone UTF-16 surrogates) in a file name, a query parameter
or a JSON body, sent to a real ``python -m xtyl_storage`` process: 422 ``invalid_text`` naming
the field, and nothing stored (no row, no object, no open multipart upload)."""

from __future__ import annotations

import io
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from xtyl_devstack.service_process import running_service_async

from .conftest import MIB, User
from .test_uploads import FORM_TYPE, assert_nothing_left, multipart_body

pytestmark = pytest.mark.integration


@pytest.fixture
async def storage(storage_env: dict[str, str], service_log_dir: Path) -> AsyncIterator[str]:
    env = {**storage_env, "EVENTS_STREAM_PREFIX": f"test:{uuid.uuid4().hex[:8]}:events"}
    async with running_service_async(
        "xtyl_storage", env, log_dir=service_log_dir, name="storage", ready_path="/readyz"
    ) as service:
        yield service.url


async def problem_of(resp: aiohttp.ClientResponse) -> dict[str, Any]:
    assert resp.status == 422, await resp.text()
    assert resp.headers["Content-Type"] == "application/problem+json"
    problem: dict[str, Any] = await resp.json()
    assert problem["code"] == "invalid_text"
    return problem


async def test_file_names_with_a_nul_or_a_lone_surrogate_are_refused_and_store_nothing(
    http: aiohttp.ClientSession,
    storage: str,
    alice: User,
    s3_client: Any,
    s3_bucket: str,
    db: asyncpg.Connection,
) -> None:
    text = {**alice.headers, "Content-Type": "text/plain"}
    # the raw body with ?filename=: a NUL can only come percent-encoded
    async with http.post(
        f"{storage}/v1/files?filename=evil%00name.txt", data=b"content", headers=text
    ) as r:
        problem = await problem_of(r)
    assert (problem["field"], problem["source"]) == ("filename", "query")

    # the same upload with a body of 2 MiB: the client still reads the answer
    async with http.post(
        f"{storage}/v1/files?filename=%00.txt", data=io.BytesIO(b"x" * (2 * MIB)), headers=text
    ) as r:
        assert (await problem_of(r))["field"] == "filename"

    # a multipart part's file name, raw bytes in its header
    body, content_type = multipart_body([("file", "evil\x00name.txt", "text/plain", b"hello")])
    async with http.post(
        f"{storage}/v1/files",
        data=body,
        headers={**alice.headers, "Content-Type": content_type},
    ) as r:
        problem = await problem_of(r)
    assert (problem["field"], problem["source"]) == ("filename", "body")
    assert content_type == FORM_TYPE

    # a presigned upload's JSON body
    for raw, field in [
        (b'{"name":"evil\\u0000.txt","content_type":"text/plain","size":5}', "name"),
        (b'{"name":"evil\\ud800.txt","content_type":"text/plain","size":5}', "name"),
        (b'{"name":"a.txt","content_type":"text/plain\\u0000","size":5}', "content_type"),
    ]:
        async with http.post(
            f"{storage}/v1/files/uploads",
            data=raw,
            headers={**alice.headers, "Content-Type": "application/json"},
        ) as r:
            assert (await problem_of(r))["field"] == field

    await assert_nothing_left(s3_client, s3_bucket, db, alice.id)

    # the listing's cursor, and the same name without the NUL still uploads
    async with http.get(f"{storage}/v1/files?cursor=%00", headers=alice.headers) as r:
        assert (await problem_of(r))["field"] == "cursor"
    async with http.post(
        f"{storage}/v1/files?filename=evilname.txt", data=b"content", headers=text
    ) as r:
        assert r.status == 201, await r.text()
        assert (await r.json())["name"] == "evilname.txt"
