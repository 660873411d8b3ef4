"""The gateway streams requests to the right service, with the right headers, and says clearly
when a service is down or slow."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import AsyncIterator

import aiohttp
import pytest

from xtyl_devstack.issuer import LocalIssuer
from xtyl_devstack.service_process import RunningService

from .conftest import FakeUpstream

pytestmark = pytest.mark.integration


@pytest.fixture
def token(issuer: LocalIssuer) -> str:
    return issuer.mint(user_id=uuid.uuid4(), email="p@example.com")


@pytest.mark.parametrize(
    "path", ["/v1/files", "/v1/files/abc?limit=5", "/v1/documents/x", "/v1/search", "/v1/answer"]
)
async def test_routes_reach_the_upstream_with_path_and_query(
    path: str, gateway: RunningService, token: str, http: aiohttp.ClientSession
) -> None:
    async with http.get(gateway.url + path, headers={"Authorization": f"Bearer {token}"}) as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["path_qs"] == path


async def test_identity_headers_are_dropped_and_token_and_request_id_forwarded(
    gateway: RunningService, token: str, http: aiohttp.ClientSession
) -> None:
    async with http.post(
        gateway.url + "/v1/search",
        json={"query": "q"},
        headers={
            "Authorization": f"Bearer {token}",
            "X-Request-ID": "client-req-1",
            "X-User-Id": str(uuid.uuid4()),
            "X-Xtyl-Service": "storage",
            "X-Internal-Auth": "yes",
            "X-Forwarded-User": "admin",
        },
    ) as resp:
        assert resp.status == 201
        assert resp.headers["X-Request-ID"] == "client-req-1"
        assert "Connection" not in resp.headers or resp.headers["Connection"] != "keep-alive, x"
        body = await resp.json()
    received = {name.lower(): value for name, value in body["headers"].items()}
    assert received["authorization"] == f"Bearer {token}"
    assert received["x-request-id"] == "client-req-1"
    assert received["x-forwarded-for"] == "127.0.0.1"
    for forbidden in ("x-user-id", "x-xtyl-service", "x-internal-auth", "x-forwarded-user"):
        assert forbidden not in received


async def test_large_upload_streams_through_unchanged(
    gateway: RunningService,
    token: str,
    http: aiohttp.ClientSession,
    fake_upstream: FakeUpstream,
) -> None:
    block = os.urandom(1 << 20)
    digest = hashlib.sha256()
    total = 64

    async def body() -> AsyncIterator[bytes]:
        for i in range(total):
            chunk = block[i:] + block[:i]
            digest.update(chunk)
            yield chunk

    async with http.post(
        gateway.url + "/v1/files?filename=big.bin",
        data=body(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/octet-stream"},
    ) as resp:
        assert resp.status == 201
        received = await resp.json()
    assert received["body_size"] == total << 20
    assert received["body_sha256"] == digest.hexdigest()


async def test_large_download_streams_through(
    gateway: RunningService, token: str, http: aiohttp.ClientSession
) -> None:
    size = 50 << 20
    async with http.get(
        gateway.url + f"/v1/files/x/download?size={size}",
        headers={"Authorization": f"Bearer {token}"},
    ) as resp:
        assert resp.status == 200
        count = 0
        async for chunk in resp.content.iter_any():
            count += len(chunk)
    assert count == size


async def test_refused_upstream_is_503_problem(
    gateway: RunningService, token: str, http: aiohttp.ClientSession
) -> None:
    async with http.get(
        gateway.url + "/v1/notifications", headers={"Authorization": f"Bearer {token}"}
    ) as resp:
        assert resp.status == 503
        assert resp.headers["Content-Type"] == "application/problem+json"
        body = await resp.json(content_type=None)
    assert body["code"] == "upstream_unavailable"
    assert "notify" in body["detail"]


async def test_slow_upstream_is_504_problem(
    gateway: RunningService, token: str, http: aiohttp.ClientSession
) -> None:
    async with http.get(
        gateway.url + "/v1/documents/slow", headers={"Authorization": f"Bearer {token}"}
    ) as resp:
        assert resp.status == 504
        body = await resp.json(content_type=None)
    assert body["code"] == "upstream_timeout"


async def test_cors_preflight_for_the_frontend_origin(
    gateway: RunningService, http: aiohttp.ClientSession
) -> None:
    async with http.options(
        gateway.url + "/v1/files",
        headers={
            "Origin": "https://app.example.com",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    ) as resp:
        assert resp.status in (200, 204)
        assert resp.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    async with http.options(
        gateway.url + "/v1/files",
        headers={"Origin": "https://evil.example.com", "Access-Control-Request-Method": "POST"},
    ) as resp:
        assert resp.headers.get("Access-Control-Allow-Origin") != "https://evil.example.com"


async def test_unknown_route_is_404_problem(
    gateway: RunningService, token: str, http: aiohttp.ClientSession
) -> None:
    async with http.get(
        gateway.url + "/v1/filesystem", headers={"Authorization": f"Bearer {token}"}
    ) as resp:
        assert resp.status == 404
        assert (await resp.json(content_type=None))["code"] == "not_found"


async def test_brevo_webhook_passes_without_a_user_token(
    gateway: RunningService, http: aiohttp.ClientSession
) -> None:
    """Brevo cannot hold a Supabase token: the notify service checks its shared secret."""
    async with http.post(
        gateway.url + "/webhooks/brevo?token=s3cret", json={"event": "hard_bounce"}
    ) as resp:
        assert resp.status == 503  # the test gateway's notify upstream is down: it was routed
        assert (await resp.json(content_type=None))["code"] == "upstream_unavailable"
