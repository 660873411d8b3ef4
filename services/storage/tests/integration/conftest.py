"""The storage app in-process (Litestar's test client) over the real Postgres, Redis and
SeaweedFS, one fresh bucket per test; plus helpers to mint tokens and read what was written."""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from xtyl_common.auth import issue_service_token
from xtyl_common.settings import load_settings
from xtyl_devstack.issuer import LocalIssuer, mint_legacy_access_token
from xtyl_devstack.stack import StackInfo
from xtyl_devstack.testing import TEST_INTERNAL_SECRET, TEST_JWT_SECRET
from xtyl_storage.app import create_app
from xtyl_storage.settings import StorageSettings

from .asgi import AsgiClient

MIB = 1024 * 1024


@dataclass(frozen=True)
class User:
    id: uuid.UUID
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture
def make_user(issuer: LocalIssuer) -> Callable[[], User]:
    def make() -> User:
        user_id = uuid.uuid4()
        token = mint_legacy_access_token(
            TEST_JWT_SECRET,
            supabase_url=issuer.supabase_url,
            user_id=user_id,
            email=f"{user_id.hex[:8]}@example.com",
        )
        return User(user_id, token)

    return make


@pytest.fixture
def alice(make_user: Callable[[], User]) -> User:
    return make_user()


@pytest.fixture
def bob(make_user: Callable[[], User]) -> User:
    return make_user()


def service_headers(
    service: str = "rag-worker", user_id: uuid.UUID | None = None
) -> dict[str, str]:
    token = issue_service_token(TEST_INTERNAL_SECRET, service=service, user_id=user_id)
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def storage_env(
    migrated_database_url: str,
    redis_url: str,
    devstack: StackInfo,
    s3_bucket: str,
    auth_env: dict[str, str],
) -> dict[str, str]:
    """The environment of a storage service on the test stack: 10 MB limit, 5 MiB parts.

    No SUPABASE_URL: the in-process app verifies the legacy HS256 tokens the tests mint, and
    does not fetch the local issuer's JWKS (no need: these tests do not send ES256 tokens).
    """
    return {
        **{k: v for k, v in auth_env.items() if k != "SUPABASE_URL"},
        "DATABASE_URL": migrated_database_url,
        "REDIS_URL": redis_url,
        "R2_ENDPOINT": devstack.s3_endpoint,
        "R2_ACCESS_KEY": devstack.s3_access_key,
        "R2_SECRET_KEY": devstack.s3_secret_key,
        "R2_BUCKET": s3_bucket,
        "MAX_UPLOAD_BYTES": str(10 * 1000 * 1000),
        "UPLOAD_PART_BYTES": str(5 * MIB),
        "ALLOWED_CONTENT_TYPES": "text/*,application/pdf,application/octet-stream,image/png",
        "S3_CONNECT_TIMEOUT_S": "2",
        "S3_READ_TIMEOUT_S": "10",
    }


def settings_from(env: dict[str, str], **overrides: str) -> StorageSettings:
    return load_settings(StorageSettings, environ={**env, **overrides})


@pytest.fixture
def storage_settings(storage_env: dict[str, str]) -> StorageSettings:
    return settings_from(storage_env)


@pytest.fixture
async def client(storage_settings: StorageSettings) -> AsyncIterator[AsgiClient]:
    """The app in-process on the test's loop; its relay is off so tests read the outbox."""
    async with AsgiClient(create_app(storage_settings, run_relay=False)) as test_client:
        yield test_client


@pytest.fixture
async def db(migrated_database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn: asyncpg.Connection = await asyncpg.connect(migrated_database_url)
    yield conn
    await conn.close()


async def rows_of(db: asyncpg.Connection, owner: uuid.UUID) -> list[dict[str, Any]]:
    rows = await db.fetch(
        "select * from xtyl_storage.files where owner_id = $1 order by created_at", owner
    )
    return [dict(row.items()) for row in rows]


async def events_of(db: asyncpg.Connection, file_id: uuid.UUID | str) -> list[dict[str, Any]]:
    rows = await db.fetch(
        "select type, payload::text as payload, producer from xtyl_storage.outbox"
        " where payload->>'file_id' = $1 order by seq",
        str(file_id),
    )
    return [{**dict(row.items()), "payload": json.loads(row["payload"])} for row in rows]


def object_keys(s3_client: Any, bucket: str) -> list[str]:
    response = s3_client.list_objects_v2(Bucket=bucket)
    return [item["Key"] for item in response.get("Contents", [])]


def open_multipart_uploads(s3_client: Any, bucket: str) -> list[dict[str, Any]]:
    response = s3_client.list_multipart_uploads(Bucket=bucket)
    uploads: list[dict[str, Any]] = response.get("Uploads", [])
    return uploads


_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "upgrade", "trailer"}


@dataclass
class FaultyS3:
    """A pass-through proxy to the real S3 server that fails or holds chosen requests."""

    target: str
    url: str = ""
    #: Fail every ``PUT ...?partNumber=N`` for these N.
    fail_parts: set[int] = field(default_factory=set[int])
    #: Fail every GET of an object.
    fail_gets: bool = False
    failed: list[str] = field(default_factory=list[str])
    #: Requests this says yes to are read, then held until ``resume`` is set, then sent on to
    #: S3, whose answer nobody may be waiting for any more: an S3 that froze and, when it came
    #: back, applied the writes it had received.
    hold: Callable[[web.Request], bool] | None = None
    resume: asyncio.Event = field(default_factory=asyncio.Event)
    held: list[str] = field(default_factory=list[str])
    #: Held requests applied by S3 after ``resume`` (status of S3's answer).
    applied_late: list[int] = field(default_factory=list[int])


def writes_object(request: web.Request) -> bool:
    """A request that creates an object: a PUT of one, or completing a multipart upload."""
    if request.method == "PUT" and "partNumber" not in request.query:
        return True
    return request.method == "POST" and "uploadId" in request.query


@pytest.fixture
async def faulty_s3(devstack: StackInfo) -> AsyncIterator[FaultyS3]:
    state = FaultyS3(target=devstack.s3_endpoint)
    session = aiohttp.ClientSession(auto_decompress=False)

    async def forward(request: web.Request) -> web.StreamResponse:
        part = request.query.get("partNumber")
        failing = (
            request.method == "PUT" and part is not None and int(part) in state.fail_parts
        ) or (request.method == "GET" and state.fail_gets and request.path.count("/") > 2)
        if failing:
            await request.read()
            state.failed.append(f"{request.method} {request.path_qs}")
            return web.Response(status=503, text="<Error><Code>SlowDown</Code></Error>")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        body = await request.read()
        holding = state.hold is not None and state.hold(request)
        if holding:
            state.held.append(f"{request.method} {request.path_qs}")
            await state.resume.wait()
        async with session.request(
            request.method,
            state.target + request.path_qs,
            headers=headers,
            data=io.BytesIO(body) if body else None,  # bytes over 1 MB make aiohttp warn
            allow_redirects=False,
        ) as upstream:
            payload = await upstream.read()
            if holding:
                state.applied_late.append(upstream.status)
            dropped = _HOP_BY_HOP | {"content-encoding"}
            if request.method != "HEAD":  # a HEAD answer says the object's length
                dropped |= {"content-length"}
            out_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in dropped}
            return web.Response(status=upstream.status, headers=out_headers, body=payload)

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", forward)
    runner = web.AppRunner(app, access_log=None, handler_cancellation=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield state
    state.resume.set()
    await runner.cleanup()
    await session.close()
