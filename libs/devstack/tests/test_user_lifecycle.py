"""A user's whole life through the real stack: signed up through the local Supabase Auth
(supabase-py, as a frontend does), files uploaded through the gateway (one still mid-multipart
when the account goes), documents indexed by the rag worker, emails received from notify; then
``DELETE /v1/me`` and nothing of the user is left: no row in any schema, no object or unfinished
upload in the bucket. The same with the storage and the rag worker SIGKILLed while they erase,
and started again. And the export: every byte and every document of the caller, nothing of
another user's.

Every process is real (gateway, storage, rag and notify, and their three workers) over the
embedded Postgres, Redis and S3; Auth is the local Supabase Auth (its admin API deletes the
``auth.users`` row, as Supabase's does) and Brevo the local stand-in.
"""

from __future__ import annotations

import asyncio
import io
import os
import re
import secrets
import signal
import time
import uuid
import zipfile
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aioboto3
import aiohttp
import asyncpg
import msgspec
import pytest
from supabase_auth import AsyncGoTrueClient

from xtyl_devstack import s3
from xtyl_devstack.auth.config import RateLimits, load_config
from xtyl_devstack.auth.server import LocalAuth
from xtyl_devstack.brevo import LocalBrevo
from xtyl_devstack.ports import free_port
from xtyl_devstack.processes import ManagedProcess
from xtyl_devstack.service_process import (
    RunningService,
    running_service_async,
    start_worker_process,
)
from xtyl_devstack.stack import StackInfo
from xtyl_devstack.testing import TEST_INTERNAL_SECRET, TEST_JWT_SECRET

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PASSWORD = "correct horse battery"
HOOK_SECRET = "v1,whsec_" + "bGlmZWN5Y2xlLXNlbmQtZW1haWwtaG9vay1zZWNyZXQtMDEyMzQ1Njc="
SITE_URL = "http://localhost:3000"
#: Schemas that hold application data; every table in them is searched for the user.
DATA_SCHEMAS = ("public", "auth", "xtyl_gateway", "xtyl_storage", "xtyl_rag", "xtyl_notify")
#: What is meant to outlive the user: the services' erasure records (the operator's proof) and
#: the gateway's record of the deletion; each holds the user's id and times, nothing else.
PROOF_TABLES = {
    "xtyl_gateway.user_deletions",
    "xtyl_storage.erasures",
    "xtyl_rag.erasures",
    "xtyl_notify.erasures",
}
#: notify's window for document emails: at most one per user per window.
EMAIL_WINDOW_S = 30
DOCUMENT_TAGS = {"document_ready", "document_failed", "document_digest"}
#: Erasure in small steps with a pause between them, so a worker can be killed half-way.
SLOW_ERASURE = {"ERASURE_BATCH_SIZE": "2", "ERASURE_BATCH_PAUSE_S": "0.3"}


@dataclass
class Stack:
    auth: LocalAuth
    brevo: LocalBrevo
    gateway: RunningService
    storage: RunningService
    workers: dict[str, ManagedProcess]
    database_url: str
    devstack: StackInfo
    bucket: str


@pytest.fixture(scope="module")
def bucket(s3_client: Any) -> Iterator[str]:
    """A bucket of this module's own, emptied and deleted afterwards."""
    name = f"lifecycle-{secrets.token_hex(6)}"
    s3_client.create_bucket(Bucket=name)
    yield name
    s3.delete_bucket(s3_client, name)


@pytest.fixture(scope="module")
async def stack(
    request: pytest.FixtureRequest,
    migrated_database_url: str,
    redis_url: str,
    devstack: StackInfo,
    bucket: str,
    service_log_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Stack]:
    gateway_port, storage_port = free_port(), free_port()
    gateway_url = f"http://127.0.0.1:{gateway_port}"
    config = load_config(request.config.rootpath / "supabase" / "config.toml", {}).for_local(
        site_url=SITE_URL,
        hook_uri=f"{gateway_url}/webhooks/auth/send-email",
        hook_secret=HOOK_SECRET,
        rate_limits=RateLimits(
            sign_in_sign_ups=10_000, token_refresh=10_000, token_verifications=10_000
        ),
    )
    async with AsyncExitStack() as exits:
        auth = await exits.enter_async_context(
            LocalAuth(
                tmp_path_factory.mktemp("lifecycle-auth"),
                database_url=migrated_database_url,
                config=config,
                jwt_secret=TEST_JWT_SECRET,
            )
        )
        brevo = await exits.enter_async_context(
            LocalBrevo(tmp_path_factory.mktemp("lifecycle-brevo"), api_key="lifecycle")
        )
        common = {
            "SUPABASE_URL": auth.supabase_url,
            "SUPABASE_JWT_SECRET": TEST_JWT_SECRET,
            "INTERNAL_JWT_SECRET": TEST_INTERNAL_SECRET,
            "DATABASE_URL": migrated_database_url,
            "REDIS_URL": redis_url,
            "EVENTS_STREAM_PREFIX": f"test:lifecycle:{secrets.token_hex(4)}:events",
            "EVENTS_READ_BLOCK_MS": "200",
            "EVENTS_RELAY_POLL_INTERVAL_S": "0.2",
            "EVENTS_CLAIM_IDLE_MS": "3000",
            **SLOW_ERASURE,
        }
        storage_env = common | {
            "R2_ENDPOINT": devstack.s3_endpoint,
            "R2_ACCESS_KEY": devstack.s3_access_key,
            "R2_SECRET_KEY": devstack.s3_secret_key,
            "R2_BUCKET": bucket,
        }
        rag_env = common | {
            "STORAGE_URL": f"http://127.0.0.1:{storage_port}",
            "EMBEDDING_THREADS": "1",
        }
        notify_env = common | {
            "BREVO_API_URL": brevo.url,
            "BREVO_API_KEY": "lifecycle",
            "EMAIL_HASH_PEPPER": "test-email-hash-pepper-0123456789abcdef",
            "APP_URL": SITE_URL,
            "PUBLIC_API_URL": gateway_url,
            "SEND_EMAIL_HOOK_SECRET": HOOK_SECRET,
            "DOCUMENT_EMAIL_WINDOW_S": str(EMAIL_WINDOW_S),
            "DIGEST_POLL_INTERVAL_S": "0.5",
        }
        storage, notify = await asyncio.gather(
            exits.enter_async_context(
                running_service_async(
                    "xtyl_storage",
                    storage_env,
                    log_dir=service_log_dir,
                    name="storage-lifecycle",
                    port=storage_port,
                    ready_path="/readyz",
                )
            ),
            exits.enter_async_context(
                running_service_async(
                    "xtyl_notify",
                    notify_env,
                    log_dir=service_log_dir,
                    name="notify-lifecycle",
                    ready_path="/readyz",
                )
            ),
        )
        rag = await exits.enter_async_context(
            running_service_async(
                "xtyl_rag",
                rag_env,
                log_dir=service_log_dir,
                name="rag-lifecycle",
                ready_path="/readyz",
                timeout_s=60.0,
            )
        )
        workers: dict[str, ManagedProcess] = {}
        for name, module, env, ready in (
            ("storage-worker", "xtyl_storage.worker", storage_env, b"consumer_started"),
            ("rag-worker", "xtyl_rag.worker", rag_env, b"rag_worker_started"),
            ("notify-worker", "xtyl_notify.worker", notify_env, b"consumer_started"),
        ):
            process = await asyncio.to_thread(
                start_worker_process,
                module,
                env,
                log_dir=service_log_dir,
                name=f"{name}-lifecycle",
                ready_log=ready,
            )
            exits.callback(process.stop)
            workers[name] = process
        gateway = await exits.enter_async_context(
            running_service_async(
                "xtyl_gateway",
                common
                | {
                    "STORAGE_URL": storage.url,
                    "RAG_URL": rag.url,
                    "NOTIFY_URL": notify.url,
                    "SUPABASE_SERVICE_ROLE_KEY": auth.service_role_key,
                    "RATE_LIMIT_REQUESTS": "100000",
                },
                log_dir=service_log_dir,
                name="gateway-lifecycle",
                port=gateway_port,
                ready_path="/readyz",
            )
        )
        yield Stack(auth, brevo, gateway, storage, workers, migrated_database_url, devstack, bucket)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        yield session


@dataclass
class User:
    id: str
    email: str
    headers: dict[str, str]


async def sign_up(stack: Stack, name: str) -> User:
    """A new user through the local Auth's sign-up, as supabase-js does it."""
    email = f"{name.lower().replace(' ', '.')}-{secrets.token_hex(4)}@example.com"
    async with AsyncGoTrueClient(
        url=stack.auth.api_url,
        headers={"apikey": stack.auth.anon_key},
        auto_refresh_token=False,
        persist_session=False,
    ) as client:
        response = await client.sign_up(
            {"email": email, "password": PASSWORD, "options": {"data": {"full_name": name}}}
        )
    session = response.session
    assert session is not None
    return User(session.user.id, email, {"Authorization": f"Bearer {session.access_token}"})


async def upload(
    http: aiohttp.ClientSession,
    stack: Stack,
    user: User,
    name: str,
    body: bytes,
    content_type: str = "text/plain",
) -> dict[str, Any]:
    async with http.post(
        f"{stack.gateway.url}/v1/files",
        params={"filename": name},
        data=io.BytesIO(body),
        headers={**user.headers, "Content-Type": content_type},
    ) as resp:
        assert resp.status == 201, await resp.text()
        answer: dict[str, Any] = await resp.json()
    return answer


async def all_documents(
    http: aiohttp.ClientSession, stack: Stack, user: User
) -> list[dict[str, Any]]:
    """Every document of the user, page after page."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params = {"limit": "100", **({"cursor": cursor} if cursor else {})}
        async with http.get(
            f"{stack.gateway.url}/v1/documents", params=params, headers=user.headers
        ) as resp:
            assert resp.status == 200, await resp.text()
            page: dict[str, Any] = await resp.json()
        items += page["items"]
        cursor = page.get("next_cursor")
        if not cursor:
            return items


async def wait_documents(
    http: aiohttp.ClientSession, stack: Stack, user: User, count: int, *, timeout_s: float = 120
) -> list[dict[str, Any]]:
    """The user's documents once ``count`` are ready or failed."""
    deadline = time.monotonic() + timeout_s
    while True:
        items = await all_documents(http, stack, user)
        done = [d for d in items if d["status"] in ("ready", "failed")]
        if len(done) >= count:
            return items
        statuses = sorted(d["status"] for d in items)
        assert time.monotonic() < deadline, f"{len(done)} of {count} documents done: {statuses}"
        await asyncio.sleep(0.3)


class StalledUpload:
    """A direct upload through the gateway whose body stops after its first parts: storage
    has an unfinished multipart upload in the bucket until the body goes on (or never does)."""

    def __init__(self, http: aiohttp.ClientSession, stack: Stack, user: User) -> None:
        self.go_on = asyncio.Event()
        part = os.urandom(6 * 1024 * 1024)

        async def body() -> AsyncIterator[bytes]:
            yield part
            yield part
            await self.go_on.wait()
            yield part

        async def send() -> tuple[int, dict[str, Any] | None]:
            try:
                async with http.post(
                    f"{stack.gateway.url}/v1/files?filename=big.png",
                    data=body(),
                    headers={**user.headers, "Content-Type": "image/png"},
                ) as resp:
                    answer = await resp.read()
                    return resp.status, msgspec.json.decode(answer) if answer else None
            except aiohttp.ClientError:
                return 0, None

        self.task = asyncio.create_task(send())


async def multipart_uploads(stack: Stack, prefix: str) -> list[dict[str, Any]]:
    async with s3_client(stack) as s3:
        answer = await s3.list_multipart_uploads(Bucket=stack.bucket, Prefix=prefix)
    uploads: list[dict[str, Any]] = answer.get("Uploads", [])
    return uploads


async def objects(stack: Stack, prefix: str) -> list[str]:
    async with s3_client(stack) as s3:
        answer = await s3.list_objects_v2(Bucket=stack.bucket, Prefix=prefix)
    return [o["Key"] for o in answer.get("Contents", [])]


def s3_client(stack: Stack) -> Any:
    return aioboto3.Session().client(
        "s3",
        endpoint_url=stack.devstack.s3_endpoint,
        aws_access_key_id=stack.devstack.s3_access_key,
        aws_secret_access_key=stack.devstack.s3_secret_key,
        region_name="us-east-1",
    )


async def traces(database_url: str, user: User) -> dict[str, int]:
    """Rows naming the user (their id or their address, anywhere in the row) in every table of
    every data schema, but the proof tables and the user.deleted event itself."""
    conn = await asyncpg.connect(database_url)
    try:
        tables = await conn.fetch(
            "select table_schema, table_name from information_schema.tables"
            " where table_schema = any($1::text[]) and table_type = 'BASE TABLE'",
            list(DATA_SCHEMAS),
        )
        found: dict[str, int] = {}
        for row in tables:
            name = f"{row['table_schema']}.{row['table_name']}"
            if name in PROOF_TABLES:
                continue
            where = "(t::text ilike '%' || $1 || '%' or t::text ilike '%' || $2 || '%')"
            if row["table_name"] == "outbox":
                where += " and t.type <> 'user.deleted'"
            table = f'"{row["table_schema"]}"."{row["table_name"]}"'  # from the catalogue
            count = await conn.fetchval(
                f"select count(*) from {table} t where {where}",  # noqa: S608
                user.id,
                user.email,
            )
            if count:
                found[name] = count
        return found
    finally:
        await conn.close()


async def erasure_rows(database_url: str, user: User) -> dict[str, asyncpg.Record | None]:
    conn = await asyncpg.connect(database_url)
    try:
        return {
            schema: await conn.fetchrow(
                f"select * from {schema}.erasures where user_id = $1",  # noqa: S608
                uuid.UUID(user.id),
            )
            for schema in ("xtyl_storage", "xtyl_rag", "xtyl_notify")
        }
    finally:
        await conn.close()


async def wait_erased(
    http: aiohttp.ClientSession, stack: Stack, user: User, *, timeout_s: float = 120
) -> dict[str, Any]:
    """``GET /v1/me/deletion`` (with the token the user still holds) until it says erased."""
    deadline = time.monotonic() + timeout_s
    while True:
        async with http.get(f"{stack.gateway.url}/v1/me/deletion", headers=user.headers) as resp:
            assert resp.status == 200, await resp.text()
            progress: dict[str, Any] = await resp.json()
        if progress["status"] == "erased":
            return progress
        assert time.monotonic() < deadline, progress
        await asyncio.sleep(0.3)


async def a_life(
    http: aiohttp.ClientSession, stack: Stack, name: str, files: int
) -> tuple[User, list[bytes]]:
    """A user who signed up, uploaded ``files`` text files, had them indexed and was mailed."""
    user = await sign_up(stack, name)
    bodies = [
        f"{name}'s notes, page {i}. Erasure must reach every copy: objects, rows, vectors,"
        f" word counts and emails. Token {secrets.token_hex(8)}.".encode()
        for i in range(files)
    ]
    for i, body in enumerate(bodies):
        await upload(http, stack, user, f"notes-{i}.txt", body)
    documents = await wait_documents(http, stack, user, files)
    assert all(d["status"] == "ready" for d in documents), documents
    await stack.brevo.wait_for_emails(user.email, 2, timeout_s=60)  # welcome + documents
    return user, bodies


@pytest.mark.timeout(420)
async def test_deleting_an_account_leaves_nothing_of_it(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    user, _ = await a_life(http, stack, "Grace Hopper", files=3)
    other, other_bodies = await a_life(http, stack, "Alan Turing", files=1)
    stalled = StalledUpload(http, stack, user)
    deadline = time.monotonic() + 30
    while not await multipart_uploads(stack, f"{user.id}/"):
        assert not stalled.task.done(), stalled.task.result()
        assert time.monotonic() < deadline, "the stalled upload never began a multipart upload"
        await asyncio.sleep(0.1)
    assert await traces(stack.database_url, user)  # the check sees the user before

    async with http.delete(f"{stack.gateway.url}/v1/me", headers=user.headers) as resp:
        assert resp.status == 202, await resp.text()
        assert resp.headers["Location"] == "/v1/me/deletion"
    async with http.delete(f"{stack.gateway.url}/v1/me", headers=user.headers) as resp:
        assert resp.status == 202, await resp.text()  # asking again is no error
    progress = await wait_erased(http, stack, user)
    assert set(progress["services"]) == {"storage", "rag", "notify"}
    assert progress["services"]["storage"]["erased"]["files"] == 3, progress
    assert progress["services"]["rag"]["erased"]["documents"] == 3, progress

    stalled.go_on.set()
    status, problem = await stalled.task
    assert status != 201, problem  # the upload that outlived the account was not stored
    await asyncio.sleep(1)  # what a refused upload cleans up, it cleans up before answering
    assert await traces(stack.database_url, user) == {}
    assert await objects(stack, f"{user.id}/") == []
    assert await multipart_uploads(stack, f"{user.id}/") == []
    # nothing more is stored for the deleted account, even with its unexpired token
    async with http.post(
        f"{stack.gateway.url}/v1/files?filename=late.txt",
        data=b"too late",
        headers={**user.headers, "Content-Type": "text/plain"},
    ) as resp:
        assert resp.status == 403, await resp.text()
        assert (await resp.json())["code"] == "account_deleted"
    assert await objects(stack, f"{user.id}/") == []

    # the other user lost nothing
    assert len(await objects(stack, f"{other.id}/")) == 1
    documents = await wait_documents(http, stack, other, 1)
    assert [d["status"] for d in documents] == ["ready"]
    async with http.get(f"{stack.gateway.url}/v1/files", headers=other.headers) as resp:
        (file,) = (await resp.json())["items"]
    async with http.get(
        f"{stack.gateway.url}/v1/files/{file['id']}/content", headers=other.headers
    ) as resp:
        assert await resp.read() == other_bodies[0]


@pytest.mark.timeout(480)
@pytest.mark.parametrize("killed", ["storage-worker", "rag-worker"])
async def test_an_erasure_finishes_after_its_worker_is_killed_half_way(
    stack: Stack, http: aiohttp.ClientSession, killed: str
) -> None:
    user, _ = await a_life(http, stack, f"Killed {killed}", files=8)
    schema = {"storage-worker": "xtyl_storage", "rag-worker": "xtyl_rag"}[killed]
    async with http.delete(f"{stack.gateway.url}/v1/me", headers=user.headers) as resp:
        assert resp.status == 202, await resp.text()

    # kill the worker once its erasure has begun and before it ends
    deadline = time.monotonic() + 60
    while True:
        row = (await erasure_rows(stack.database_url, user))[schema]
        if row is not None:
            break
        assert time.monotonic() < deadline, f"{killed} never began the erasure"
        await asyncio.sleep(0.02)
    worker = stack.workers[killed]
    assert worker.pid is not None
    os.killpg(worker.pid, signal.SIGKILL)
    await asyncio.to_thread(worker.stop)
    at_kill = (await erasure_rows(stack.database_url, user))[schema]
    assert at_kill is not None
    assert at_kill["completed_at"] is None, "the erasure ended before the kill: nothing proven"
    assert await traces(stack.database_url, user), "killed before it erased anything?"

    await asyncio.to_thread(worker.restart)
    progress = await wait_erased(http, stack, user, timeout_s=180)
    row = (await erasure_rows(stack.database_url, user))[schema]
    assert row is not None
    assert row["attempts"] >= 2, dict(row)  # the run after the kill finished it
    assert progress["services"][killed.removesuffix("-worker")]["status"] == "erased"
    assert await traces(stack.database_url, user) == {}
    assert await objects(stack, f"{user.id}/") == []
    assert await multipart_uploads(stack, f"{user.id}/") == []


@pytest.mark.timeout(300)
async def test_the_export_holds_every_byte_and_document_and_nothing_of_another_user(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    user, bodies = await a_life(http, stack, "Ada Export", files=3)
    binary = os.urandom(3 * 1024 * 1024)
    stored = await upload(http, stack, user, "../../etc/passwd", binary, "image/png")
    other, other_bodies = await a_life(http, stack, "Other Export", files=1)

    async with http.get(f"{stack.gateway.url}/v1/me/export", headers=user.headers) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.headers["Content-Type"] == "application/zip"
        archive = zipfile.ZipFile(io.BytesIO(await resp.read()))
    assert archive.testzip() is None
    names = archive.namelist()
    assert all(not n.startswith("/") and ".." not in n.split("/") for n in names), names
    manifest = msgspec.json.decode(archive.read("manifest.json"))
    assert manifest["complete"] is True, manifest
    assert manifest["files"] == 4, manifest
    assert manifest["documents"] == 3, manifest
    profile = msgspec.json.decode(archive.read("profile.json"))
    assert profile["id"] == user.id
    assert profile["email"] == user.email

    contents = {n: archive.read(n) for n in names if n.startswith("files/")}
    assert sorted(contents.values()) == sorted([*bodies, binary])
    (stored_name,) = [n for n in contents if n.startswith(f"files/{stored['id']}/")]
    assert contents[stored_name] == binary
    texts = {archive.read(n).decode() for n in names if n.startswith("documents/")}
    assert {t.strip() for t in texts} == {b.decode().strip() for b in bodies}
    everything = b"".join(archive.read(n) for n in names)
    assert other.id.encode() not in everything
    assert other.email.encode() not in everything
    assert other_bodies[0] not in everything
    notifications = archive.read("notifications.ndjson").splitlines()
    records = [msgspec.json.decode(line) for line in notifications]
    assert {r["record"] for r in records} >= {"recipient", "email"}, records


def ready_count(mail: dict[str, Any]) -> int:
    """How many ready documents a document email tells about (its subject says)."""
    if "document_ready" in mail["tags"]:
        return 1
    found = re.search(r"(\d+) documents? (?:is|are) ready", mail["subject"])
    assert found is not None, mail["subject"]
    return int(found.group(1))


def document_emails(stack: Stack, user: User) -> list[dict[str, Any]]:
    return [e for e in stack.brevo.emails_to(user.email) if DOCUMENT_TAGS & set(e["tags"])]


@pytest.mark.timeout(420)
async def test_317_uploads_in_a_minute_send_two_emails_and_one_click_unsubscribes(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    user = await sign_up(stack, "Many Uploads")
    await stack.brevo.wait_for_emails(user.email, 1, timeout_s=60)  # welcome
    uploads = 317
    started = time.monotonic()
    gate = asyncio.Semaphore(8)

    async def one(i: int) -> None:
        async with gate:
            await upload(http, stack, user, f"page-{i}.txt", f"Page {i} of many.".encode())

    await asyncio.gather(*(one(i) for i in range(uploads)))
    uploaded_in = time.monotonic() - started
    assert uploaded_in < 60, f"317 uploads took {uploaded_in:.0f} s: not within a minute"
    print(f"317 uploads in {uploaded_in:.1f} s")
    documents = await wait_documents(http, stack, user, uploads, timeout_s=240)
    assert len(documents) == uploads

    # the first document's mail went at once; the rest wait for the window, then one digest
    deadline = time.monotonic() + EMAIL_WINDOW_S + 60
    while len(document_emails(stack, user)) < 2:
        assert time.monotonic() < deadline, document_emails(stack, user)
        await asyncio.sleep(0.5)
    await asyncio.sleep(3)  # nothing more comes
    mails = document_emails(stack, user)
    assert len(mails) == 2, [m["subject"] for m in mails]
    digest = mails[-1]
    told = [ready_count(mail) for mail in mails]
    assert sum(told) == uploads, [m["subject"] for m in mails]  # every document, once

    # one click in the mail's header: no sign-in, the link's signature is the credential
    header = digest["headers"]["List-Unsubscribe"]
    assert digest["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    link = header.strip("<>")
    assert link.startswith(stack.gateway.url + "/v1/notifications/unsubscribe?token=")
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    forged = link[:-4] + ("AAAA" if not link.endswith("AAAA") else "BBBB")
    async with http.post(forged, data="List-Unsubscribe=One-Click", headers=form) as resp:
        assert resp.status == 403, await resp.text()
        assert (await resp.json())["code"] == "unsubscribe_link_invalid"
    async with http.get(
        f"{stack.gateway.url}/v1/notifications/preferences", headers=user.headers
    ) as resp:
        assert resp.status == 200, await resp.text()
        assert all((await resp.json()).values()), "a forged link changed the preferences"
    async with http.post(link, data="List-Unsubscribe=One-Click", headers=form) as resp:
        assert resp.status == 200, await resp.text()
    async with http.get(
        f"{stack.gateway.url}/v1/notifications/preferences", headers=user.headers
    ) as resp:
        preferences = await resp.json()
    # the link turns off what the mail told about: ready documents (no failures were in it)
    assert preferences == {"document_ready": False, "document_failed": True}, preferences

    # an unsubscribed kind sends nothing, even after the window
    await upload(http, stack, user, "after.txt", b"After the unsubscribe.")
    await wait_documents(http, stack, user, uploads + 1, timeout_s=120)
    await asyncio.sleep(EMAIL_WINDOW_S + 5)
    assert len(document_emails(stack, user)) == 2

    # and the quotas say what was spent
    async with http.get(f"{stack.gateway.url}/v1/me/usage", headers=user.headers) as resp:
        assert resp.status == 200, await resp.text()
        usage = await resp.json()
    assert usage["unavailable"] == []
    assert usage["quotas"]["files"]["used"] == uploads + 1
    assert usage["quotas"]["documents"]["used"] == uploads + 1
    assert usage["quotas"]["files"]["service"] == "storage"
    assert usage["quotas"]["answers_per_day"]["used"] == 0
