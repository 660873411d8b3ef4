"""Every error leaves a service as problem+json with a stable code, never a traceback."""

from __future__ import annotations

from typing import Any

import msgspec
import structlog
from litestar import asgi, get, post
from litestar.params import JSONBody
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
