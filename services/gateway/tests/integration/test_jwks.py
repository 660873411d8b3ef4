"""The JWKS is fetched rarely, and an outage of it never turns into a 500."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from xtyl_devstack.issuer import LocalIssuer
from xtyl_devstack.scrape import sample, scrape
from xtyl_devstack.service_process import RunningService, running_service_async

pytestmark = pytest.mark.integration


@pytest.fixture
async def fresh_gateway(
    gateway_env: dict[str, str], service_log_dir: Path, issuer: LocalIssuer
) -> AsyncIterator[RunningService]:
    issuer.jwks_mode = "ok"
    async with running_service_async(
        "xtyl_gateway", gateway_env, log_dir=service_log_dir, name="jwks-gw"
    ) as service:
        yield service
    issuer.jwks_mode = "ok"


async def test_random_kids_cause_at_most_one_fetch_per_cooldown(
    fresh_gateway: RunningService, issuer: LocalIssuer, http: aiohttp.ClientSession
) -> None:
    user = uuid.uuid4()
    # one good request first, so the keys are cached whatever the warm-up did
    good = issuer.mint(user_id=user)
    async with http.get(
        fresh_gateway.url + "/v1/search", headers={"Authorization": f"Bearer {good}"}
    ) as resp:
        assert resp.status == 200
    before = issuer.jwks_requests
    sem = asyncio.Semaphore(50)

    async def one() -> tuple[int, str]:
        token = issuer.mint(user_id=user, headers={"kid": secrets.token_hex(8)})
        async with (
            sem,
            http.get(
                fresh_gateway.url + "/v1/search", headers={"Authorization": f"Bearer {token}"}
            ) as resp,
        ):
            body = await resp.json(content_type=None)
            return resp.status, body["code"]

    results = await asyncio.gather(*(one() for _ in range(1000)))
    assert set(results) == {(401, "unknown_key")}
    assert issuer.jwks_requests - before <= 1


async def test_jwks_down_keeps_cached_keys_and_refuses_unknown_ones(
    fresh_gateway: RunningService, issuer: LocalIssuer, http: aiohttp.ClientSession
) -> None:
    user = uuid.uuid4()
    async with http.get(
        fresh_gateway.url + "/v1/search",
        headers={"Authorization": f"Bearer {issuer.mint(user_id=user)}"},
    ) as resp:
        assert resp.status == 200
    issuer.jwks_mode = "fail"
    async with http.get(
        fresh_gateway.url + "/v1/search",
        headers={"Authorization": f"Bearer {issuer.mint(user_id=user, email='new@x.io')}"},
    ) as resp:
        assert resp.status == 200, "a cached key keeps working while the JWKS is down"
    stranger = issuer.mint(user_id=user, headers={"kid": "rotated-" + secrets.token_hex(4)})
    async with http.get(
        fresh_gateway.url + "/v1/search", headers={"Authorization": f"Bearer {stranger}"}
    ) as resp:
        assert resp.status == 401
        assert (await resp.json(content_type=None))["code"] == "unknown_key"


@pytest.fixture
async def gateway_started_without_jwks(
    gateway_env: dict[str, str], service_log_dir: Path, issuer: LocalIssuer
) -> AsyncIterator[RunningService]:
    issuer.jwks_mode = "fail"
    try:
        async with running_service_async(
            "xtyl_gateway", gateway_env, log_dir=service_log_dir, name="no-jwks-gw"
        ) as service:
            yield service
    finally:
        issuer.jwks_mode = "ok"


async def test_jwks_down_at_start_then_back_accepts_es256_within_seconds(
    gateway_started_without_jwks: RunningService,
    issuer: LocalIssuer,
    http: aiohttp.ClientSession,
) -> None:
    url = gateway_started_without_jwks.url + "/v1/search"
    user = uuid.uuid4()

    async def status() -> tuple[int, str | None]:
        headers = {"Authorization": f"Bearer {issuer.mint(user_id=user)}"}
        async with http.get(url, headers=headers) as resp:
            body = await resp.json(content_type=None)
            return resp.status, body.get("code")

    # down for a while: every ES256 user is refused, and the endpoint is not hammered
    before = issuer.jwks_requests
    started = loop_time()
    while loop_time() - started < 3:
        assert await status() == (401, "unknown_key")
        await asyncio.sleep(0.05)
    assert issuer.jwks_requests - before <= 5, "a short backoff, not a fetch per request"

    issuer.jwks_mode = "ok"
    back = loop_time()
    async with asyncio.timeout(10):
        while (await status())[0] != 200:
            await asyncio.sleep(0.05)
    assert loop_time() - back < 3.0, "accepted within the retry backoff, not the 30 s cooldown"

    # what an operator sees: the failed fetches, the one that worked, the refusals meanwhile
    text = await scrape(http, gateway_started_without_jwks.url)
    fetches = "xtyl_gateway_jwks_fetches_total"
    assert sample(text, fetches, outcome="failed") >= 1
    assert sample(text, fetches, outcome="ok") == 1
    checks = "xtyl_gateway_token_verifications_total"
    assert sample(text, checks, outcome="unknown_key", alg="ES256") >= 10
    assert sample(text, checks, outcome="valid", alg="ES256") == 1


def loop_time() -> float:
    return asyncio.get_running_loop().time()
