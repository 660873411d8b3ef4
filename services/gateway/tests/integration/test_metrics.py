"""What an operator reads on the gateway's /metrics after real traffic: requests counted by
their allow-list prefix whatever id the path carries, upstream exchanges timed and their
failures counted by reason, token checks by outcome, the verified-token cache."""

from __future__ import annotations

import asyncio
import uuid

import aiohttp
import jwt
import pytest

from xtyl_devstack.issuer import LocalIssuer
from xtyl_devstack.scrape import sample, scrape, series
from xtyl_devstack.service_process import RunningService

pytestmark = pytest.mark.integration


async def test_a_thousand_ids_are_one_route_series(
    gateway: RunningService, issuer: LocalIssuer, http: aiohttp.ClientSession
) -> None:
    token = issuer.mint(user_id=uuid.uuid4())
    headers = {"Authorization": f"Bearer {token}"}
    before = await scrape(http, gateway.url)
    slots = asyncio.Semaphore(8)

    async def get(n: int) -> int:
        async with (
            slots,
            http.get(f"{gateway.url}/v1/files/{uuid.uuid4()}?n={n}", headers=headers) as resp,
        ):
            await resp.read()
            return resp.status

    assert set(await asyncio.gather(*(get(n) for n in range(1000)))) == {200}
    after = await scrape(http, gateway.url)

    files = {"service": "gateway", "route": "/v1/files", "method": "GET", "status": "200"}
    moved = sample(after, "xtyl_http_requests_total", **files) - sample(
        before, "xtyl_http_requests_total", **files
    )
    assert moved == 1000
    routes = {s["route"] for s in series(after, "xtyl_http_requests_total")}
    assert all(not route.startswith("/v1/files/") for route in routes), routes
    assert len(routes) < 20, routes  # route templates, never one series per path
    upstream = {"upstream": "storage", "status": "200"}
    name = "xtyl_gateway_upstream_request_duration_seconds_count"
    assert sample(after, name, **upstream) - sample(before, name, **upstream) == 1000
    name = "xtyl_gateway_rate_limit_decisions_total"
    assert (
        sample(after, name, decision="allowed") - sample(before, name, decision="allowed") == 1000
    )


async def test_a_path_outside_the_allow_list_is_unmatched(
    gateway: RunningService, issuer: LocalIssuer, http: aiohttp.ClientSession
) -> None:
    token = issuer.mint(user_id=uuid.uuid4())
    before = await scrape(http, gateway.url)
    async with http.get(
        gateway.url + "/v1/filesystem/x", headers={"Authorization": f"Bearer {token}"}
    ) as resp:
        assert resp.status == 404
    after = await scrape(http, gateway.url)
    labels = {"service": "gateway", "route": "unmatched", "status": "404"}
    name = "xtyl_http_requests_total"
    assert sample(after, name, **labels) - sample(before, name, **labels) == 1


async def test_upstream_failures_are_counted_by_reason(
    gateway: RunningService, issuer: LocalIssuer, http: aiohttp.ClientSession
) -> None:
    headers = {"Authorization": f"Bearer {issuer.mint(user_id=uuid.uuid4())}"}
    before = await scrape(http, gateway.url)
    async with http.get(gateway.url + "/v1/notifications", headers=headers) as resp:
        assert resp.status == 503  # the test gateway's notify is a closed port
    async with http.get(gateway.url + "/v1/documents/slow", headers=headers) as resp:
        assert resp.status == 504  # rag answers after 3 s, the gateway waits 1 s
    after = await scrape(http, gateway.url)

    name = "xtyl_gateway_upstream_errors_total"

    def moved(upstream: str, reason: str) -> float:
        labels = {"upstream": upstream, "reason": reason}
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert moved("notify", "connect") == 1
    assert moved("rag", "timeout") == 1
    assert moved("storage", "connect") == moved("notify", "timeout") == 0
    # every reason of every upstream is served from the start (increase() sees the first)
    reasons = {(s["upstream"], s["reason"]) for s in series(after, name)}
    assert reasons >= {
        (upstream, reason)
        for upstream in ("storage", "rag", "notify")
        for reason in ("connect", "timeout", "reset", "busy")
    }
    name = "xtyl_gateway_upstream_request_duration_seconds_count"
    failed = {"upstream": "rag", "status": "error"}
    assert sample(after, name, **failed) - sample(before, name, **failed) == 1


async def test_token_checks_are_counted_by_outcome_and_the_cache_by_result(
    gateway: RunningService, issuer: LocalIssuer, http: aiohttp.ClientSession
) -> None:
    good = issuer.mint(user_id=uuid.uuid4())
    forged = jwt.encode(
        {"sub": str(uuid.uuid4()), "aud": "authenticated", "role": "authenticated"},
        "not-the-project-secret-but-long-enough-0123",
        algorithm="HS256",
    )
    before = await scrape(http, gateway.url)
    for token, status in ((good, 200), (good, 200), (forged, 401), ("abc", 401)):
        async with http.get(
            gateway.url + "/v1/search", headers={"Authorization": f"Bearer {token}"}
        ) as resp:
            assert resp.status == status
    after = await scrape(http, gateway.url)

    def moved(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    checks = "xtyl_gateway_token_verifications_total"
    assert moved(checks, outcome="valid", alg="ES256") == 1  # the second came from the cache
    assert moved(checks, outcome="invalid", alg="HS256") == 1
    assert moved(checks, outcome="malformed", alg="other") == 1
    assert moved(checks) == 3
    cache = "xtyl_gateway_token_cache_requests_total"
    assert (moved(cache, result="hit"), moved(cache, result="miss")) == (1, 3)
    assert sample(after, "xtyl_gateway_jwks_fetches_total", outcome="ok") >= 1
