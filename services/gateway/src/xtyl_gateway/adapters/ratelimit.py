"""Per-user rate limits counted atomically in Redis, shared by every gateway replica.

GCRA (the generic cell rate algorithm, as in redis-cell and Stripe's limiter): one key per
(user, bucket) holds the "theoretical arrival time". A limit of N per window lets a burst of N
through, then one request every window/N. One EVALSHA per request, with Redis' own clock, so
replicas with skewed clocks still agree. Retry-After is exact, not "try again next minute".
"""

from __future__ import annotations

import math

import msgspec
from redis.asyncio import Redis
from redis.exceptions import NoScriptError

_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - burst
if now < allow_at then
  return {0, allow_at - now}
end
redis.call('SET', KEYS[1], new_tat, 'PX', new_tat - now)
return {1, 0}
"""


class Limit(msgspec.Struct, frozen=True):
    """``requests`` per ``window_s`` seconds, for the route bucket ``name``."""

    name: str
    requests: int
    window_s: float


class Decision(msgspec.Struct, frozen=True):
    allowed: bool
    retry_after_s: int


class RateLimiter:
    def __init__(self, redis: Redis, *, prefix: str = "xtyl:rl") -> None:
        self._redis = redis
        self._prefix = prefix
        self._sha: str | None = None

    async def hit(self, subject: str, limit: Limit) -> Decision:
        interval_ms = max(1, int(limit.window_s * 1000 / limit.requests))
        burst_ms = interval_ms * limit.requests
        key = f"{self._prefix}:{limit.name}:{subject}"
        result = await self._eval(key, interval_ms, burst_ms)
        allowed, wait_ms = int(result[0]), int(result[1])
        return Decision(allowed == 1, 0 if allowed else max(1, math.ceil(wait_ms / 1000)))

    async def _eval(self, key: str, interval_ms: int, burst_ms: int) -> list[int]:
        if self._sha is None:
            self._sha = str(await self._redis.script_load(_GCRA))  # pyright: ignore[reportUnknownMemberType]
        try:
            return await self._redis.evalsha(self._sha, 1, key, interval_ms, burst_ms)  # type: ignore[no-any-return]  # pyright: ignore[reportUnknownMemberType]
        except NoScriptError:  # Redis restarted and lost its script cache
            self._sha = None
            return await self._redis.eval(_GCRA, 1, key, interval_ms, burst_ms)  # type: ignore[no-any-return]  # pyright: ignore[reportUnknownMemberType]
