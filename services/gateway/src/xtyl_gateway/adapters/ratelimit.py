"""Per-user rate limits counted atomically in Redis, shared by every gateway replica.

GCRA (the generic cell rate algorithm, as in redis-cell and Stripe's limiter): one key per
(user, bucket) holds the "theoretical arrival time". A limit of N per window lets a burst of N
through, then one request every window/N. One EVALSHA per request, with Redis' own clock, so
replicas with skewed clocks still agree. Retry-After is exact, not "try again next minute".
"""

from __future__ import annotations

import hashlib
import math

import msgspec

from xtyl_gateway.adapters.resp import PipelinedRedis, RedisReplyError

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


_GCRA_SHA = hashlib.sha1(_GCRA.encode()).hexdigest()  # noqa: S324 - Redis names scripts by SHA-1


class RateLimiter:
    def __init__(self, redis: PipelinedRedis, *, prefix: str = "xtyl:rl") -> None:
        self._redis = redis
        self._prefix = prefix

    async def hit(self, subject: str, limit: Limit) -> Decision:
        interval_ms = max(1, int(limit.window_s * 1000 / limit.requests))
        burst_ms = interval_ms * limit.requests
        key = f"{self._prefix}:{limit.name}:{subject}"
        result = await self._eval(key, interval_ms, burst_ms)
        allowed, wait_ms = int(result[0]), int(result[1])
        return Decision(allowed == 1, 0 if allowed else max(1, math.ceil(wait_ms / 1000)))

    async def _eval(self, key: str, interval_ms: int, burst_ms: int) -> list[int]:
        try:
            reply = await self._redis.execute("EVALSHA", _GCRA_SHA, 1, key, interval_ms, burst_ms)
        except RedisReplyError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
            # first use, or Redis restarted and lost its script cache: EVAL loads it again
            reply = await self._redis.execute("EVAL", _GCRA, 1, key, interval_ms, burst_ms)
        return [int(value) for value in reply]
