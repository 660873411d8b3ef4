"""The rate limiter fails open, fast: a Redis that is down or stalled lets requests through
within its ~50 ms budget (at once while the circuit is open), never one request behind another,
/readyz says "degraded" and stays 200, and limits apply again when Redis is back.

A stalled Redis is played by a TCP server in the test that accepts connections and reads
commands but never answers (a paused or overloaded Redis looks exactly like that).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from redis.asyncio import Redis

from xtyl_common.errors import TimedOut, Unavailable
from xtyl_devstack.issuer import LocalIssuer
from xtyl_devstack.redis import RedisServer
from xtyl_devstack.scrape import sample, scrape
from xtyl_devstack.service_process import RunningService, running_service_async
from xtyl_gateway.adapters.ratelimit import Limit, RateLimiter

pytestmark = pytest.mark.integration

# generous against the ~50 ms budget (a loaded 2-core CI box), far below a second
FAST_S = 0.5


class StalledRedis:
    """Accepts connections, reads what it is sent, never answers."""

    def __init__(self) -> None:
        self.connections = 0
        self.bytes_received = 0
        self.url = ""
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._swallow, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"redis://127.0.0.1:{port}/0"

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        await self._server.wait_closed()

    async def _swallow(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        while chunk := await reader.read(65536):
            self.bytes_received += len(chunk)
        writer.close()


@pytest.fixture
async def stalled_redis() -> AsyncIterator[StalledRedis]:
    server = StalledRedis()
    await server.start()
    yield server
    await server.stop()


async def timed_get(
    http: aiohttp.ClientSession, url: str, token: str | None = None
) -> tuple[int, float, dict[str, object]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    started = time.perf_counter()
    async with http.get(url, headers=headers) as resp:
        body: dict[str, object] = await resp.json(content_type=None)
        return resp.status, time.perf_counter() - started, body


# ------------------------------------------------------------------- the limiter on its own
async def test_a_stalled_redis_fails_every_concurrent_hit_within_the_budget(
    stalled_redis: StalledRedis,
) -> None:
    limiter = RateLimiter.from_url(stalled_redis.url, timeout_s=0.05, cooldown_s=60)
    limit = Limit("all", 10, 60)

    async def one(subject: str) -> tuple[type[Exception], float]:
        started = time.perf_counter()
        with pytest.raises((TimedOut, Unavailable)) as caught:
            await limiter.hit(subject, limit)
        return caught.type, time.perf_counter() - started

    try:
        first = await asyncio.gather(*(one(f"user-{i}") for i in range(8)))
        assert {kind for kind, _ in first} == {TimedOut}, "each waited for Redis, in parallel"
        assert max(elapsed for _, elapsed in first) < FAST_S
        assert stalled_redis.bytes_received > 0, "the commands did reach the stalled server"
        assert limiter.state().startswith("degraded: rate limits not enforced")

        # the circuit is open: nobody calls Redis any more
        connections = stalled_redis.connections
        after = await asyncio.gather(*(one(f"user-{i}") for i in range(100)))
        assert {kind for kind, _ in after} == {Unavailable}
        assert max(elapsed for _, elapsed in after) < FAST_S
        assert stalled_redis.connections == connections
    finally:
        await limiter.close()


async def test_limits_survive_a_redis_that_lost_its_scripts(
    redis_url: str, redis_prefix: str
) -> None:
    limiter = RateLimiter.from_url(redis_url)
    admin = Redis.from_url(redis_url)
    limit = Limit(f"{redis_prefix}flush", 2, 60)
    try:
        assert (await limiter.hit("u", limit)).allowed
        await admin.script_flush()  # pyright: ignore[reportUnknownMemberType] - as a restart does
        assert (await limiter.hit("u", limit)).allowed
        decision = await limiter.hit("u", limit)
        assert not decision.allowed
        assert 1 <= decision.retry_after_s <= 30
        assert limiter.state() == "up"
    finally:
        await admin.aclose()
        await limiter.close()


async def test_redis_down_then_back_closes_the_circuit_again(
    redis_control: RedisServer, redis_prefix: str
) -> None:
    limiter = RateLimiter.from_url(redis_control.url, cooldown_s=0.3)
    limit = Limit(f"{redis_prefix}back", 1, 60)
    try:
        assert (await limiter.hit("u", limit)).allowed
        await asyncio.to_thread(redis_control.stop)
        for _ in range(5):
            started = time.perf_counter()
            with pytest.raises(Unavailable):
                await limiter.hit("u", limit)
            assert time.perf_counter() - started < FAST_S
        assert limiter.state().startswith("degraded")
        with pytest.raises(Unavailable):
            await limiter.check_health()

        await asyncio.to_thread(redis_control.start)  # back, empty, without our script
        await asyncio.sleep(0.3)
        assert (await limiter.hit("u", limit)).allowed, "the probe closes the circuit"
        assert limiter.state() == "up"
        assert not (await limiter.hit("u", limit)).allowed
        await limiter.check_health()
    finally:
        await limiter.close()


# ------------------------------------------------------------------ a real gateway process
@pytest.fixture
async def gateway_on_stalled_redis(
    gateway_env: dict[str, str], service_log_dir: Path, stalled_redis: StalledRedis
) -> AsyncIterator[RunningService]:
    env = {**gateway_env, "REDIS_URL": stalled_redis.url, "RATE_LIMIT_REQUESTS": "5"}
    async with running_service_async(
        "xtyl_gateway", env, log_dir=service_log_dir, name="stalled-redis-gw"
    ) as service:
        yield service


async def test_gateway_on_a_stalled_redis_answers_concurrent_requests_at_once(
    gateway_on_stalled_redis: RunningService,
    stalled_redis: StalledRedis,
    issuer: LocalIssuer,
    http: aiohttp.ClientSession,
) -> None:
    url = gateway_on_stalled_redis.url
    token = issuer.mint(user_id=uuid.uuid4())

    results = await asyncio.gather(*(timed_get(http, url + "/v1/search", token) for _ in range(8)))

    assert [status for status, _, _ in results] == [200] * 8, "the limiter failed open"
    slowest = max(elapsed for _, elapsed, _ in results)
    assert slowest < FAST_S, f"requests queued behind the stalled Redis ({slowest:.2f} s)"
    assert stalled_redis.bytes_received > 0, "the gateway did ask the stalled Redis"

    # more than the limit of 5 pass: limits are not enforced while Redis cannot count
    later = [await timed_get(http, url + "/v1/search", token) for _ in range(5)]
    assert [status for status, _, _ in later] == [200] * 5
    assert max(elapsed for _, elapsed, _ in later) < FAST_S

    status, elapsed, body = await timed_get(http, url + "/readyz")
    assert status == 200, body
    assert elapsed < FAST_S
    assert body["status"] == "degraded"
    checks = body["checks"]
    assert isinstance(checks, dict)
    assert checks["postgres"] == "up"
    assert str(checks["redis"]).startswith("degraded: ")

    # what an operator sees: every one of the 13 requests passed unchecked
    text = await scrape(http, url)
    name = "xtyl_gateway_rate_limit_decisions_total"
    assert sample(text, name, decision="failed_open") == 13
    assert sample(text, name, decision="allowed") == sample(text, name, decision="limited") == 0


@pytest.fixture
async def gateway_on_controlled_redis(
    gateway_env: dict[str, str], service_log_dir: Path, redis_control: RedisServer
) -> AsyncIterator[RunningService]:
    env = {**gateway_env, "REDIS_URL": redis_control.url, "RATE_LIMIT_REQUESTS": "3"}
    async with running_service_async(
        "xtyl_gateway", env, log_dir=service_log_dir, name="outage-redis-gw"
    ) as service:
        yield service


async def test_gateway_passes_requests_while_redis_is_down_and_limits_again_when_back(
    gateway_on_controlled_redis: RunningService,
    redis_control: RedisServer,
    issuer: LocalIssuer,
    http: aiohttp.ClientSession,
) -> None:
    url = gateway_on_controlled_redis.url + "/v1/search"
    token = issuer.mint(user_id=uuid.uuid4())
    assert [(await timed_get(http, url, token))[0] for _ in range(4)] == [200, 200, 200, 429]

    await asyncio.to_thread(redis_control.stop)
    down = [await timed_get(http, url, token) for _ in range(6)]
    assert [status for status, _, _ in down] == [200] * 6, "limits fail open while Redis is down"
    assert max(elapsed for _, elapsed, _ in down) < FAST_S
    status, _, body = await timed_get(http, gateway_on_controlled_redis.url + "/readyz")
    assert status == 200, "a Redis outage does not take the gateway out of service"
    checks = body["checks"]
    assert isinstance(checks, dict)
    assert str(checks["redis"]).startswith("degraded: ")

    await asyncio.to_thread(redis_control.start)  # back, and empty: the user's count is gone
    statuses: list[int] = []
    async with asyncio.timeout(10):
        while 429 not in statuses:
            statuses.append((await timed_get(http, url, token))[0])
            await asyncio.sleep(0.05)
    # after at most a cool-down of passing, Redis counts again: 3 more, then refused
    assert statuses[-4:] == [200, 200, 200, 429]
    status, _, body = await timed_get(http, gateway_on_controlled_redis.url + "/readyz")
    assert (status, body["status"]) == (200, "ready")
