"""Every error leaves a service as problem+json with a stable code, never a traceback."""

from __future__ import annotations

from typing import Any

import asyncpg
import msgspec
import pytest
import structlog
from litestar import asgi, get, post
from litestar.params import FromPath, FromQuery, JSONBody
from litestar.testing import AsyncTestClient
from litestar.types import Receive, Scope, Send

from xtyl_common.errors import NotFound, RateLimited, Unavailable
from xtyl_common.web import build_service_app


class Body(msgspec.Struct, forbid_unknown_fields=True):
    name: str


@get("/missing")
async def missing() -> None:
    raise NotFound("file 42 does not exist", code="file_not_found")


@get("/limited")
async def limited() -> None:
    raise RateLimited(7)


@get("/down")
async def down() -> None:
    raise Unavailable("postgres is down")


@get("/boom")
async def boom() -> None:
    raise RuntimeError("secret internals")


@post("/things")
async def create(data: JSONBody[Body]) -> dict[str, Any]:
    return {"name": data.name}


def app() -> Any:
    return build_service_app(
        title="t", version="1", route_handlers=[missing, limited, down, boom, create]
    )


async def test_client_error_has_code_and_detail() -> None:
    async with AsyncTestClient(app()) as client:
        resp = await client.get("/missing")
    assert resp.status_code == 404
    assert resp.headers["content-type"] == "application/problem+json"
    body = resp.json()
    assert body["code"] == "file_not_found"
    assert body["type"].endswith("/file_not_found")
    assert body["detail"] == "file 42 does not exist"
    assert body["instance"] == "/missing"


async def test_rate_limited_carries_retry_after() -> None:
    async with AsyncTestClient(app()) as client:
        resp = await client.get("/limited")
    assert resp.status_code == 429
    assert resp.headers["retry-after"] == "7"
    assert resp.json()["retry_after"] == 7


async def test_dependency_error_is_503() -> None:
    async with AsyncTestClient(app()) as client:
        resp = await client.get("/down")
    assert resp.status_code == 503
    assert resp.json()["code"] == "dependency_unavailable"


async def test_unexpected_error_is_500_without_internals() -> None:
    async with AsyncTestClient(app()) as client:
        resp = await client.get("/boom")
    assert resp.status_code == 500
    assert resp.json()["code"] == "internal_error"
    assert "secret internals" not in resp.text
    assert "Traceback" not in resp.text


async def test_unknown_field_is_422_and_bad_json_is_400() -> None:
    async with AsyncTestClient(app()) as client:
        unknown = await client.post("/things", json={"name": "a", "owner_id": "x"})
        broken = await client.post(
            "/things", content=b"{not json", headers={"content-type": "application/json"}
        )
    assert unknown.status_code == 422
    assert unknown.json()["code"] == "invalid_input"
    assert "owner_id" in unknown.text
    assert broken.status_code == 400
    assert broken.json()["code"] == "malformed_json"
    for resp in (unknown, broken):
        assert resp.headers["content-type"] == "application/problem+json"


async def test_unknown_route_is_404_problem() -> None:
    async with AsyncTestClient(app()) as client:
        resp = await client.get("/nowhere")
    assert resp.status_code == 404
    assert resp.json()["code"] == "not_found"


async def test_request_id_is_kept_when_plain_and_replaced_when_not() -> None:
    async with AsyncTestClient(app()) as client:
        kept = await client.get("/livez", headers={"X-Request-ID": "req-123"})
        replaced = await client.get("/livez", headers={"X-Request-ID": "bad id\r\nx"})
        fresh = await client.get("/livez")
    assert kept.headers["x-request-id"] == "req-123"
    assert replaced.headers["x-request-id"] not in {"", "bad id\r\nx"}
    assert len(fresh.headers["x-request-id"]) == 32


@asgi("/mounted", is_mount=True, copy_scope=False)
async def mounted(scope: Scope, receive: Receive, send: Send) -> None:
    raise NotFound("nothing under here", code="nothing_here")


async def test_mounted_apps_log_and_report_the_full_path() -> None:
    # Litestar hands a mounted app the path below its mount point; the access log and the
    # problem's `instance` must still name the path the caller asked for.
    with structlog.testing.capture_logs() as logs:
        async with AsyncTestClient(
            build_service_app(title="t", version="1", route_handlers=[mounted])
        ) as client:
            resp = await client.get("/mounted/deep/path")
    assert resp.status_code == 404
    assert resp.json()["instance"] == "/mounted/deep/path"
    handled = [entry for entry in logs if entry["event"] == "request_handled"]
    assert [(entry["path"], entry["status"]) for entry in handled] == [("/mounted/deep/path", 404)]


class Document(msgspec.Struct, forbid_unknown_fields=True):
    title: str
    metadata: dict[str, Any] | None = None


@post("/documents")
async def create_document(data: JSONBody[Document]) -> dict[str, Any]:
    return {"title": data.title}


@get("/search")
async def search(q: FromQuery[str] = "") -> dict[str, Any]:
    return {"q": q}


@get("/postgres/{case:str}")
async def postgres_refuses(case: FromPath[str]) -> None:
    if case == "nul":
        raise asyncpg.exceptions.CharacterNotInRepertoireError("invalid byte sequence: 0x00")
    if case == "jsonb":
        raise asyncpg.exceptions.UntranslatableCharacterError("unsupported Unicode escape")
    if case == "surrogate":
        try:
            "\ud800".encode()
        except UnicodeEncodeError as exc:
            raise asyncpg.exceptions.DataError("invalid input for query argument $1") from exc
    raise asyncpg.exceptions.NumericValueOutOfRangeError("integer out of range")


def text_app() -> Any:
    return build_service_app(
        title="t",
        version="1",
        route_handlers=[create_document, search, postgres_refuses, mounted],
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"title":"a\\u0000b"}', "title"),
        (b'{"title":"t","metadata":{"tags":["x","\\u0000"]}}', "metadata.tags[1]"),
        (b'{"title":"t","metadata":{"k\\u0000":1}}', "metadata.k\\u0000"),
        (b'{"title":"a\\ud800"}', "title"),
        (b'{"title":"a\\udc00b"}', "title"),
        (b'{"title":"a\xed\xa0\x80"}', "title"),
        (b'{"title":"a\xff"}', None),
    ],
)
async def test_text_postgres_cannot_store_is_422_invalid_text(
    body: bytes, field: str | None
) -> None:
    async with AsyncTestClient(text_app()) as client:
        resp = await client.post(
            "/documents",
            content=body,
            headers={"content-type": "application/json", "X-Request-ID": "req-1"},
        )
    assert resp.status_code == 422, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.headers["x-request-id"] == "req-1"
    problem = resp.json()
    assert problem["code"] == "invalid_text"
    assert problem.get("field") == field
    assert problem["source"] == "body"


async def test_clean_and_broken_bodies_answer_as_before() -> None:
    async with AsyncTestClient(text_app()) as client:
        clean = await client.post(
            "/documents", json={"title": "résumé \\u0000 😀", "metadata": {"a": [1, None]}}
        )
        broken = await client.post(
            "/documents", content=b'{"title":x}', headers={"content-type": "application/json"}
        )
    assert clean.status_code == 201, clean.text
    assert clean.json() == {"title": "résumé \\u0000 😀"}
    assert broken.status_code == 400
    assert broken.json()["code"] == "malformed_json"


async def test_a_nul_in_a_query_or_path_parameter_is_invalid_text() -> None:
    async with AsyncTestClient(text_app()) as client:
        fine = await client.get("/search?q=%2500")
        query = await client.get("/search?q=a%00b")
        name = await client.get("/search?x%00=1")
        path = await client.get("/postgres/a%00b")
        mounted = await client.get("/mounted/x?q=%00")
    assert fine.json() == {"q": "%00"}
    assert (query.status_code, query.json()["code"], query.json()["field"]) == (
        422,
        "invalid_text",
        "q",
    )
    assert query.json()["source"] == "query"
    assert (name.status_code, name.json()["field"]) == (422, "x\\u0000")
    assert (path.status_code, path.json()["source"]) == (422, "path")
    # mounted ASGI apps (the gateway's proxy) see their requests untouched
    assert mounted.json()["code"] == "nothing_here"


@pytest.mark.parametrize(
    ("case", "status", "code"),
    [
        ("nul", 422, "invalid_text"),
        ("jsonb", 422, "invalid_text"),
        ("surrogate", 422, "invalid_text"),
        ("overflow", 500, "internal_error"),
    ],
)
async def test_postgres_refusing_text_is_422_never_500(case: str, status: int, code: str) -> None:
    async with AsyncTestClient(text_app()) as client:
        resp = await client.get(f"/postgres/{case}")
    assert resp.status_code == status
    assert resp.json()["code"] == code
