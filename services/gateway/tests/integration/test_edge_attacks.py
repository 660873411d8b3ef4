"""The gateway under attack, as raw bytes on sockets, in front of the real storage and rag
services over the real Postgres, Redis and S3.

Each test is one way a client once saw, slowed or broke another user's requests: an
``Expect: 100-continue`` whose interim answer was taken as final (the next user then read the
real one), stalled bodies holding every upstream connection, aborted uploads leaking them, an
early 413 held back while the client paused, unfinished headers eating memory, headers and
transfer codings that must never reach a service.
"""

from __future__ import annotations

import asyncio
import io
import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest

from xtyl_devstack.issuer import LocalIssuer, mint_legacy_access_token
from xtyl_devstack.process_tree import tree_rss
from xtyl_devstack.service_process import RunningService, running_service_async
from xtyl_devstack.stack import StackInfo
from xtyl_devstack.testing import TEST_JWT_SECRET

from .conftest import FakeUpstream
from .rawhttp import RawConnection, RawResponse, request_head

pytestmark = pytest.mark.integration

MAX_UPLOAD = 10 * 1000 * 1000
BODY_IDLE_S = 3
IN_FLIGHT = 20


@dataclass(frozen=True)
class Caller:
    id: uuid.UUID
    token: str

    @property
    def auth(self) -> tuple[str, str]:
        return ("Authorization", f"Bearer {self.token}")


def new_caller(issuer: LocalIssuer) -> Caller:
    user_id = uuid.uuid4()
    token = mint_legacy_access_token(
        TEST_JWT_SECRET,
        supabase_url=issuer.supabase_url,
        user_id=user_id,
        email=f"{user_id.hex[:8]}@example.com",
    )
    return Caller(user_id, token)


@dataclass(frozen=True)
class EdgeStack:
    gateway: RunningService
    storage: RunningService
    rag: RunningService


@pytest.fixture(scope="module")
def edge_bucket(s3_client: Any) -> str:
    name = f"edge-{secrets.token_hex(4)}"
    s3_client.create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="module")
async def edge_stack(
    migrated_database_url: str,
    redis_url: str,
    devstack: StackInfo,
    edge_bucket: str,
    auth_env: dict[str, str],
    service_log_dir: Path,
) -> AsyncIterator[EdgeStack]:
    common = {
        **{k: v for k, v in auth_env.items() if k != "SUPABASE_URL"},
        "DATABASE_URL": migrated_database_url,
        "REDIS_URL": redis_url,
        "EVENTS_STREAM_PREFIX": f"test:edge:{secrets.token_hex(4)}:events",
    }
    storage_env = {
        **common,
        "R2_ENDPOINT": devstack.s3_endpoint,
        "R2_ACCESS_KEY": devstack.s3_access_key,
        "R2_SECRET_KEY": devstack.s3_secret_key,
        "R2_BUCKET": edge_bucket,
        "MAX_UPLOAD_BYTES": str(MAX_UPLOAD),
        "ALLOWED_CONTENT_TYPES": "text/*,application/octet-stream",
    }
    async with AsyncExitStack() as stack:
        storage = await stack.enter_async_context(
            running_service_async(
                "xtyl_storage",
                storage_env,
                log_dir=service_log_dir,
                name="edge-storage",
                ready_path="/readyz",
            )
        )
        rag = await stack.enter_async_context(
            running_service_async(
                "xtyl_rag",
                {**common, "STORAGE_URL": storage.url, "EMBEDDING_THREADS": "1"},
                log_dir=service_log_dir,
                name="edge-rag",
                ready_path="/readyz",
                timeout_s=60,
            )
        )
        gateway = await stack.enter_async_context(
            running_service_async(
                "xtyl_gateway",
                {
                    **auth_env,
                    "DATABASE_URL": migrated_database_url,
                    "REDIS_URL": redis_url,
                    "STORAGE_URL": storage.url,
                    "RAG_URL": rag.url,
                    "NOTIFY_URL": "http://127.0.0.1:9",
                    "RATE_LIMIT_REQUESTS": "100000",
                    "RATE_LIMIT_ROUTES": "",
                    "REQUEST_BODY_IDLE_TIMEOUT_S": str(BODY_IDLE_S),
                    "USER_MAX_IN_FLIGHT": str(IN_FLIGHT),
                    "UPSTREAM_POOL_SIZE": "64",
                    "UPSTREAM_POOL_WAIT_S": "1",
                },
                log_dir=service_log_dir,
                name="edge-gateway",
            )
        )
        yield EdgeStack(gateway, storage, rag)


async def exchange(base_url: str, raw: bytes, timeout_s: float = 10.0) -> RawResponse:
    conn = await RawConnection.open(base_url)
    try:
        await conn.send(raw)
        _, resp = await conn.final_response(timeout_s)
        return resp
    finally:
        await conn.close()


def upload_head(caller: Caller, length: int, *, name: str = "a.txt", expect: bool = False) -> bytes:
    headers = [caller.auth, ("Content-Type", "text/plain"), ("Content-Length", str(length))]
    if expect:
        headers.append(("Expect", "100-continue"))
    return request_head("POST", f"/v1/files?filename={name}", headers)


def established_between(pid: int, port: int, *, local: bool) -> int:
    """TCP connections of the process tree of ``pid`` whose local (or remote) port is ``port``."""
    root = psutil.Process(pid)
    count = 0
    for proc in [root, *root.children(recursive=True)]:
        try:
            connections = proc.net_connections(kind="tcp")
        except psutil.NoSuchProcess:
            continue
        for conn in connections:
            if conn.status != psutil.CONN_ESTABLISHED or not conn.raddr:
                continue
            if (conn.laddr.port if local else conn.raddr.port) == port:
                count += 1
    return count


def port_of(service: RunningService) -> int:
    return int(service.url.rsplit(":", 1)[1])


# -- 1, 2: Expect: 100-continue ---------------------------------------------------------------


@pytest.mark.parametrize("route", ["storage", "rag"])
async def test_expect_continue_gives_one_final_answer_and_never_another_users(
    route: str, edge_stack: EdgeStack, issuer: LocalIssuer
) -> None:
    alice, bob = new_caller(issuer), new_caller(issuer)
    if route == "storage":
        body = b"x" * 1300
        head = upload_head(alice, len(body), expect=True)
        listing, created = "/v1/files?limit=1", 201
    else:
        body = json.dumps({"title": "a", "text": "hello " * 200}).encode()
        head = request_head(
            "POST",
            "/v1/documents",
            [
                alice.auth,
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(body))),
                ("Expect", "100-continue"),
            ],
        )
        listing, created = "/v1/documents?limit=1", 202

    conn = await RawConnection.open(edge_stack.gateway.url)
    await conn.send(head)
    interim = await conn.response()
    assert interim.status == 100
    await conn.send(body)
    interim_seen, answer = await conn.final_response()
    await conn.close()
    assert interim_seen == []
    assert answer.status == created, answer.body
    assert answer.headers["content-type"].startswith("application/json")

    # Bob, right after, on another connection: his own (empty) list, never Alice's answer.
    for _ in range(3):
        resp = await exchange(edge_stack.gateway.url, request_head("GET", listing, [bob.auth]))
        assert resp.status == 200, resp.body
        assert resp.json()["items"] == []


async def test_a_2_7_mb_multipart_upload_with_expect_continue_is_stored(
    edge_stack: EdgeStack, issuer: LocalIssuer, http: aiohttp.ClientSession
) -> None:
    """What curl does on its own above 1 MiB: ``curl -F file=@big.txt`` of the README."""
    alice = new_caller(issuer)
    payload = (b"All work and no play makes Jack a dull boy.\n" * 62_000)[:2_700_000]
    form = aiohttp.FormData()
    form.add_field("file", io.BytesIO(payload), filename="big.txt", content_type="text/plain")
    async with http.post(
        edge_stack.gateway.url + "/v1/files",
        data=form,
        headers={"Authorization": f"Bearer {alice.token}"},
        expect100=True,
    ) as resp:
        assert resp.status == 201, await resp.text()
        stored = await resp.json()
    assert stored["size"] == len(payload)
    async with http.get(
        f"{edge_stack.gateway.url}/v1/files/{stored['id']}/content",
        headers={"Authorization": f"Bearer {alice.token}"},
    ) as resp:
        assert resp.status == 200
        assert await resp.read() == payload


# -- 3: stalled bodies cannot take a service away from others ---------------------------------


async def test_stalled_uploads_of_one_user_leave_storage_to_others(
    edge_stack: EdgeStack, issuer: LocalIssuer
) -> None:
    mallory, bob = new_caller(issuer), new_caller(issuer)
    stalled: list[RawConnection] = []
    try:
        for i in range(60):
            conn = await RawConnection.open(edge_stack.gateway.url)
            await conn.send(upload_head(mallory, 100_000, name=f"s{i}.txt") + b"hello")
            stalled.append(conn)
        await asyncio.sleep(0.5)

        started = time.monotonic()
        resp = await exchange(
            edge_stack.gateway.url, request_head("GET", "/v1/files?limit=1", [bob.auth]), 5
        )
        assert resp.status == 200, resp.body
        assert time.monotonic() - started < BODY_IDLE_S, "Bob waited on Mallory's uploads"

        answers = await asyncio.gather(*(conn.final_response(BODY_IDLE_S + 10) for conn in stalled))
    finally:
        for conn in stalled:
            await conn.close()
    statuses = [resp.status for _, resp in answers]
    assert statuses.count(408) == IN_FLIGHT, statuses
    assert statuses.count(429) == len(stalled) - IN_FLIGHT, statuses
    for _, resp in answers:
        assert resp.headers["content-type"] == "application/problem+json"
        assert resp.json()["code"] in ("request_timeout", "too_many_in_flight")
    too_many = next(resp for _, resp in answers if resp.status == 429)
    assert too_many.headers["retry-after"] == "1"

    # every upstream connection those uploads held is gone
    await asyncio.sleep(1)
    assert (
        established_between(edge_stack.gateway.pid, port_of(edge_stack.storage), local=False) <= 4
    )


async def test_a_full_upstream_pool_is_a_bounded_503_upstream_busy(
    gateway_env: dict[str, str],
    service_log_dir: Path,
    fake_upstream: FakeUpstream,
    issuer: LocalIssuer,
) -> None:
    """Waiting for an upstream connection is bounded: 503 ``upstream_busy``, never a hang."""
    env = {
        **gateway_env,
        "UPSTREAM_POOL_SIZE": "4",
        "USER_MAX_IN_FLIGHT": "3",
        "UPSTREAM_POOL_WAIT_S": "0.5",
        "REQUEST_BODY_IDLE_TIMEOUT_S": "5",
    }
    async with running_service_async(
        "xtyl_gateway", env, log_dir=service_log_dir, name="busy-gw"
    ) as gateway:
        held: list[RawConnection] = []
        try:
            for caller in (new_caller(issuer), new_caller(issuer)):
                for i in range(2):
                    conn = await RawConnection.open(gateway.url)
                    await conn.send(upload_head(caller, 100_000, name=f"b{i}.txt") + b"x")
                    held.append(conn)
            await asyncio.sleep(0.5)
            started = time.monotonic()
            resp = await exchange(
                gateway.url, request_head("GET", "/v1/files", [new_caller(issuer).auth])
            )
            waited = time.monotonic() - started
        finally:
            for conn in held:
                await conn.close()
    assert resp.status == 503, resp.body
    assert resp.json()["code"] == "upstream_busy"
    assert resp.headers["retry-after"] == "1"
    assert waited < 3


async def test_user_max_in_flight_must_leave_room_for_others(
    gateway_env: dict[str, str], service_log_dir: Path
) -> None:
    env = {**gateway_env, "UPSTREAM_POOL_SIZE": "10", "USER_MAX_IN_FLIGHT": "10"}
    with pytest.raises(Exception, match="USER_MAX_IN_FLIGHT"):
        async with running_service_async(
            "xtyl_gateway", env, log_dir=service_log_dir, name="bad-gw", timeout_s=10
        ):
            pass


# -- 4: aborted uploads release both connections ----------------------------------------------


async def test_aborted_uploads_leave_no_upstream_connection(
    edge_stack: EdgeStack, issuer: LocalIssuer
) -> None:
    storage_port = port_of(edge_stack.storage)
    before = established_between(edge_stack.gateway.pid, storage_port, local=False)
    for i in range(20):
        alice = new_caller(issuer)
        conn = await RawConnection.open(edge_stack.gateway.url)
        await conn.send(upload_head(alice, 5_000_000, name=f"r{i}.txt"))
        await conn.send(b"y" * 200_000)
        await asyncio.sleep(0.05)
        conn.reset()
    deadline = time.monotonic() + 5
    gateway_side = storage_side = -1
    while time.monotonic() < deadline:
        gateway_side = established_between(edge_stack.gateway.pid, storage_port, local=False)
        storage_side = established_between(edge_stack.storage.pid, storage_port, local=True)
        if gateway_side <= before + 1 and storage_side <= before + 1:
            break
        await asyncio.sleep(0.2)
    assert gateway_side <= before + 1, (before, gateway_side)
    assert storage_side <= before + 1, (before, storage_side)
    # and nothing was stored for any of them
    resp = await exchange(
        edge_stack.gateway.url,
        request_head("GET", "/v1/files", [new_caller(issuer).auth]),
    )
    assert resp.status == 200


# -- 6: an early answer reaches an idle client at once ----------------------------------------


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_an_early_413_reaches_a_client_that_pauses(
    framing: str, edge_stack: EdgeStack, issuer: LocalIssuer
) -> None:
    alice = new_caller(issuer)
    conn = await RawConnection.open(edge_stack.gateway.url)
    if framing == "content-length":
        await conn.send(upload_head(alice, 50_000_000, name="big.txt") + b"z" * 100_000)
    else:
        head = request_head(
            "POST",
            "/v1/files?filename=big.txt",
            [alice.auth, ("Content-Type", "text/plain"), ("Transfer-Encoding", "chunked")],
        )
        await conn.send(head)
        block = b"z" * 1_000_000
        for _ in range(11):  # past the 10 MB limit, then the client pauses
            await conn.send(b"%x\r\n%b\r\n" % (len(block), block))
    started = time.monotonic()
    _, resp = await conn.final_response(timeout_s=BODY_IDLE_S - 0.5)
    elapsed = time.monotonic() - started
    await conn.close()
    assert resp.status == 413, resp.body
    assert resp.json()["code"] in ("payload_too_large", "file_too_large")
    assert elapsed < BODY_IDLE_S - 0.5


# -- 8: unfinished headers cannot eat the gateway's memory ------------------------------------


async def test_unfinished_huge_headers_are_cut_at_64_kib(
    edge_stack: EdgeStack, issuer: LocalIssuer
) -> None:
    before = tree_rss(edge_stack.gateway.pid)
    pad = b"X-Pad: " + b"a" * 8000 + b"\r\n"
    conns: list[RawConnection] = []
    peak = before

    async def flood() -> RawConnection:
        conn = await RawConnection.open(edge_stack.gateway.url)
        try:
            await conn.send(b"GET /v1/files HTTP/1.1\r\nHost: g\r\n")
            for _ in range(175):  # ~1.4 MB of header lines, never finished
                await conn.send(pad)
        except (ConnectionError, OSError):
            pass
        return conn

    try:
        for _ in range(4):
            conns += await asyncio.gather(*(flood() for _ in range(50)))
            peak = max(peak, tree_rss(edge_stack.gateway.pid))
        # every flooding connection was cut by the server, none is left waiting for more
        closed = await asyncio.gather(*(conn.closed_by_peer(timeout_s=5) for conn in conns))
    finally:
        for conn in conns:
            conn.abort()
    assert all(closed)
    assert peak - before < 64 * 1024 * 1024, f"grew {(peak - before) >> 20} MiB"
    resp = await exchange(
        edge_stack.gateway.url, request_head("GET", "/v1/files", [new_caller(issuer).auth])
    )
    assert resp.status == 200


async def test_a_head_over_64_kib_is_431(edge_stack: EdgeStack) -> None:
    conn = await RawConnection.open(edge_stack.gateway.url)
    try:
        await conn.send(b"GET /v1/files HTTP/1.1\r\nHost: g\r\nX-Pad: " + b"a" * 70_000)
        resp = await conn.response()
    finally:
        conn.abort()
    assert resp.status == 431


# -- 9: the header policy and body framing ----------------------------------------------------

SMUGGLED_HEADERS = [
    ("Expect", "100-continue"),
    ("X-Original-URL", "/internal/files"),
    ("X-Rewrite-URL", "/internal/files"),
    ("X-HTTP-Method-Override", "DELETE"),
    ("X-Forwarded-Port", "443"),
    ("X-Forwarded-Prefix", "/internal"),
    ("X-Forwarded-Host", "evil.example.com"),
    ("X-Client-IP", "10.0.0.1"),
    ("True-Client-IP", "10.0.0.1"),
    ("CF-Connecting-IP", "10.0.0.1"),
    ("X-Real-IP", "10.0.0.1"),
    ("Forwarded", "for=10.0.0.1"),
    ("X-User-Id", "00000000-0000-0000-0000-000000000000"),
    ("X-Internal-Token", "yes"),
    ("Cookie", "session=1"),
]


async def test_only_allowed_headers_reach_the_service(
    gateway: RunningService, fake_upstream: FakeUpstream, issuer: LocalIssuer
) -> None:
    caller = new_caller(issuer)
    body = b'{"q":1}'
    head = request_head(
        "POST",
        "/v1/search",
        [
            caller.auth,
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            ("Idempotency-Key", "k-1"),
            ("Accept", "application/json"),
            *SMUGGLED_HEADERS,
        ],
    )
    conn = await RawConnection.open(gateway.url)
    await conn.send(head)
    interim = await conn.response()
    assert interim.status == 100  # the gateway answers the client's Expect itself
    await conn.send(body)
    seen, resp = await conn.final_response()
    await conn.close()
    assert seen == []
    assert resp.status == 201, resp.body
    received = {name.lower(): value for name, value in resp.json()["headers"].items()}
    for name, _ in SMUGGLED_HEADERS:
        assert name.lower() not in received, name
    assert received["idempotency-key"] == "k-1"
    assert received["accept"] == "application/json"
    assert received["content-type"] == "application/json"
    assert received["x-forwarded-for"] == "127.0.0.1"
    assert resp.json()["body_size"] == len(body)


@pytest.mark.parametrize(
    ("raw_body", "code"),
    [
        (b"5\r\nhello\r\nZZ\r\nxx\r\n0\r\n\r\n", "malformed_body"),
        (b"5\r\nhelloXX0\r\n\r\n", "malformed_body"),
    ],
)
async def test_a_malformed_chunked_body_is_400(
    raw_body: bytes, code: str, gateway: RunningService, issuer: LocalIssuer
) -> None:
    caller = new_caller(issuer)
    head = request_head(
        "POST",
        "/v1/search",
        [caller.auth, ("Content-Type", "application/json"), ("Transfer-Encoding", "chunked")],
    )
    resp = await exchange(gateway.url, head + raw_body)
    assert resp.status == 400, resp.body
    assert resp.json()["code"] == code


@pytest.mark.parametrize("coding", ["gzip, chunked", "deflate, chunked"])
async def test_transfer_codings_other_than_chunked_are_refused(
    coding: str, gateway: RunningService, fake_upstream: FakeUpstream, issuer: LocalIssuer
) -> None:
    caller = new_caller(issuer)
    seen_before = len(fake_upstream.seen)
    head = request_head(
        "POST",
        "/v1/search",
        [caller.auth, ("Content-Type", "application/json"), ("Transfer-Encoding", coding)],
    )
    resp = await exchange(gateway.url, head + b"5\r\nhello\r\n0\r\n\r\n")
    assert resp.status == 400, resp.body
    assert resp.json()["code"] == "unsupported_transfer_coding"
    assert len(fake_upstream.seen) == seen_before, "nothing may reach the service"


async def test_a_compressed_request_body_is_refused(
    gateway: RunningService, fake_upstream: FakeUpstream, issuer: LocalIssuer
) -> None:
    caller = new_caller(issuer)
    head = request_head(
        "POST",
        "/v1/search",
        [caller.auth, ("Content-Encoding", "gzip"), ("Content-Length", "5")],
    )
    resp = await exchange(gateway.url, head + b"hello")
    assert resp.status == 400
    assert resp.json()["code"] == "unsupported_content_encoding"


# -- what held before the change, and must keep holding ---------------------------------------

SMUGGLING = {
    "CL and TE": [("Content-Length", "5"), ("Transfer-Encoding", "chunked")],
    "two lengths": [("Content-Length", "5"), ("Content-Length", "6")],
    "list of lengths": [("Content-Length", "5, 6")],
    "signed length": [("Content-Length", "+5")],
    "TE with a space": [("Transfer-Encoding ", "chunked")],
    "obs-fold": [("Content-Length", "5"), ("X-Folded", "a\r\n b")],
}


@pytest.mark.parametrize("name", list(SMUGGLING))
async def test_smuggling_framings_never_smuggle(
    name: str, gateway: RunningService, fake_upstream: FakeUpstream, issuer: LocalIssuer
) -> None:
    """Refused (400), or read as RFC 9112 says (chunked wins over a length) with the
    connection closed after it: the request hidden behind the body is never served."""
    caller = new_caller(issuer)
    seen_before = len(fake_upstream.seen)
    head = request_head("POST", "/v1/search", [caller.auth, *SMUGGLING[name]])
    smuggled = request_head("GET", "/v1/files/smuggled", [caller.auth])
    conn = await RawConnection.open(gateway.url)
    await conn.send(head + b"0\r\n\r\n" + smuggled)
    resp = await conn.response()
    closed = await conn.closed_by_peer(timeout_s=5)
    await conn.close()
    seen = fake_upstream.seen[seen_before:]
    assert not any(s.path_qs.startswith("/v1/files/smuggled") for s in seen)
    if resp.status == 400:
        assert seen == []
    else:
        assert resp.status == 201, resp.body
        assert resp.json()["body_size"] == 0
        assert resp.headers.get("connection") == "close"
    assert closed, "the connection stays open for the smuggled request"


@pytest.mark.parametrize(
    "path",
    [
        "/v1/files/../../internal/files",
        "/v1/files/%2e%2e/%2e%2e/internal/files",
        "/v1/files/..%2f..%2finternal/files",
        "/v1/files/.%2E/internal",
        "/v1/files/..%5c..%5cinternal",
        "/v1/files/./x",
        "/v1/files%2f..%2finternal",
        "/internal/files",
        "//internal/files",
    ],
)
async def test_path_tricks_never_reach_internal_routes(
    path: str, gateway: RunningService, fake_upstream: FakeUpstream, issuer: LocalIssuer
) -> None:
    caller = new_caller(issuer)
    seen_before = len(fake_upstream.seen)
    resp = await exchange(gateway.url, request_head("GET", path, [caller.auth]))
    assert resp.status in (400, 404), resp.body
    assert len(fake_upstream.seen) == seen_before
