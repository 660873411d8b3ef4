"""Limits are per user (not per IP) and shared by every gateway replica through Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import aiohttp
import pytest

from xtyl_devstack.issuer import LocalIssuer
from xtyl_devstack.scrape import sample, scrape
from xtyl_devstack.service_process import RunningService, running_service_async

pytestmark = pytest.mark.integration

LIMIT = 6


@pytest.fixture(scope="module")
async def limited_gateways(
    gateway_env: dict[str, str], service_log_dir: Path
) -> AsyncIterator[list[RunningService]]:
    env = {
        **gateway_env,
        "RATE_LIMIT_REQUESTS": str(LIMIT),
        "RATE_LIMIT_WINDOW_S": "60",
        "RATE_LIMIT_ROUTES": "/v1/answer=2",
    }
    async with AsyncExitStack() as stack:
        gateways = await asyncio.gather(
            *(
                stack.enter_async_context(
                    running_service_async(
                        "xtyl_gateway", env, log_dir=service_log_dir, name=f"limited-gw{i}"
                    )
                )
                for i in range(3)
            )
        )
        yield list(gateways)


async def status_of(http: aiohttp.ClientSession, url: str, token: str) -> tuple[int, str | None]:
    async with http.get(url, headers={"Authorization": f"Bearer {token}"}) as resp:
        await resp.read()
        return resp.status, resp.headers.get("Retry-After")


async def test_three_gateways_share_one_limit(
    limited_gateways: list[RunningService], issuer: LocalIssuer, http: aiohttp.ClientSession
) -> None:
    token = issuer.mint(user_id=uuid.uuid4())
    statuses = [
        await status_of(http, limited_gateways[i % 3].url + "/v1/search", token)
        for i in range(LIMIT)
    ]
    assert [s for s, _ in statuses] == [200] * LIMIT
    for gw in limited_gateways:
        status, retry_after = await status_of(http, gw.url + "/v1/search", token)
        assert status == 429
        assert retry_after is not None
        assert 1 <= int(retry_after) <= 60


async def test_each_decision_is_counted(
    limited_gateways: list[RunningService], issuer: LocalIssuer, http: aiohttp.ClientSession
) -> None:
    gateway = limited_gateways[0]
    token = issuer.mint(user_id=uuid.uuid4())
    before = await scrape(http, gateway.url)
    statuses = [(await status_of(http, gateway.url + "/v1/search", token))[0] for _ in range(7)]
    after = await scrape(http, gateway.url)

    assert statuses == [200] * LIMIT + [429]
    name = "xtyl_gateway_rate_limit_decisions_total"

    def moved(decision: str) -> float:
        return sample(after, name, decision=decision) - sample(before, name, decision=decision)

    assert (moved("allowed"), moved("limited"), moved("failed_open")) == (LIMIT, 1, 0)


async def test_two_users_behind_one_ip_are_limited_separately(
    limited_gateways: list[RunningService], issuer: LocalIssuer, http: aiohttp.ClientSession
) -> None:
    alice, bob = issuer.mint(user_id=uuid.uuid4()), issuer.mint(user_id=uuid.uuid4())
    url = limited_gateways[0].url + "/v1/search"
    for _ in range(LIMIT):
        assert (await status_of(http, url, alice))[0] == 200
    assert (await status_of(http, url, alice))[0] == 429
    assert (await status_of(http, url, bob))[0] == 200


async def test_tighter_route_limit_and_problem_body(
    limited_gateways: list[RunningService], issuer: LocalIssuer, http: aiohttp.ClientSession
) -> None:
    token = issuer.mint(user_id=uuid.uuid4())
    url = limited_gateways[1].url + "/v1/answer"
    assert [(await status_of(http, url, token))[0] for _ in range(2)] == [200, 200]
    async with http.get(url, headers={"Authorization": f"Bearer {token}"}) as resp:
        assert resp.status == 429
        body = await resp.json(content_type=None)
    assert body["code"] == "rate_limited"
    assert body["retry_after"] >= 1
    # the general limit still has room on another route
    assert (await status_of(http, limited_gateways[1].url + "/v1/search", token))[0] == 200


async def test_me_shares_the_users_limit_with_the_proxied_routes(
    limited_gateways: list[RunningService], issuer: LocalIssuer, http: aiohttp.ClientSession
) -> None:
    token = issuer.mint(user_id=uuid.uuid4())  # no public.users row: /v1/me answers 404
    gateway = limited_gateways[2]
    for _ in range(LIMIT - 1):
        assert (await status_of(http, gateway.url + "/v1/search", token))[0] == 200
    assert (await status_of(http, gateway.url + "/v1/me", token))[0] == 404
    status, retry_after = await status_of(http, gateway.url + "/v1/me", token)
    assert status == 429
    assert retry_after is not None
    assert (await status_of(http, gateway.url + "/v1/search", token))[0] == 429
