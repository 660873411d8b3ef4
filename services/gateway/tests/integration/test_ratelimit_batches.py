"""The limiter answers each of many concurrent callers with its own decision, pipelined.

Against the real Redis: the GCRA calls of one event-loop turn share one redis-py pipeline, so
these tests check what a caller would notice if replies were mixed up or lost: exact counts per
key under concurrency, and recovery when Redis forgot the script.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from xtyl_gateway.adapters.ratelimit import Limit, RateLimiter

pytestmark = pytest.mark.integration


@pytest.fixture
async def limiter(redis_url: str) -> AsyncIterator[RateLimiter]:
    # a generous budget: these tests are about answers, not about a stalled Redis
    limiter = RateLimiter.from_url(redis_url, timeout_s=2.0)
    yield limiter
    await limiter.close()


async def test_concurrent_hits_on_one_key_allow_exactly_the_burst(limiter: RateLimiter) -> None:
    limit = Limit(f"t{secrets.token_hex(4)}", 10, 60.0)
    decisions = await asyncio.gather(*(limiter.hit("alice", limit) for _ in range(50)))
    assert sum(d.allowed for d in decisions) == 10
    assert all(d.retry_after_s >= 1 for d in decisions if not d.allowed)


async def test_concurrent_hits_on_many_keys_each_get_their_own_answer(
    limiter: RateLimiter,
) -> None:
    limit = Limit(f"t{secrets.token_hex(4)}", 1, 60.0)
    users = [f"user{i}" for i in range(40)]
    first = await asyncio.gather(*(limiter.hit(user, limit) for user in users))
    second = await asyncio.gather(*(limiter.hit(user, limit) for user in users))
    assert [d.allowed for d in first] == [True] * len(users)
    assert [d.allowed for d in second] == [False] * len(users)


async def test_a_redis_that_forgot_the_script_is_taught_again(
    limiter: RateLimiter, redis_url: str
) -> None:
    limit = Limit(f"t{secrets.token_hex(4)}", 5, 60.0)
    assert (await limiter.hit("bob", limit)).allowed
    admin = Redis.from_url(redis_url)
    try:
        await admin.script_flush()  # pyright: ignore[reportUnknownMemberType]
    finally:
        await admin.aclose()
    decisions = await asyncio.gather(*(limiter.hit("bob", limit) for _ in range(6)))
    assert sum(d.allowed for d in decisions) == 4  # 5 in the burst, one used before
    assert limiter.state() == "up"
