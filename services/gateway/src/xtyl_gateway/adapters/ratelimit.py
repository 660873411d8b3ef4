"""Per-user rate limits counted atomically in Redis, shared by every gateway replica.

GCRA (the generic cell rate algorithm, as in redis-cell and Stripe's limiter): one key per
(user, bucket) holds the "theoretical arrival time". A limit of N per window lets a burst of N
through, then one request every window/N. One EVALSHA per request, with Redis' own clock, so
replicas with skewed clocks still agree. Retry-After is exact, not "try again next minute".

The limiter fails open, and fast. It talks to Redis through one redis-py client per process
(hiredis parser, a pool that connects outside its lock, no retries, no per-command health
PING, no CLIENT SETINFO on connect), and every step of a call (waiting for a pooled
connection, connecting, each reply) is bounded by ``timeout_s`` (~50 ms). Those are
redis-py's own timeouts: they fail at well-defined points and close the connection, instead
of a cancellation landing anywhere inside the driver. Behind that, a circuit breaker: after
``failures_to_open`` failures in a row nobody calls Redis for ``cooldown_s``, then one request
probes it. While Redis is down or stalled, ``hit`` raises ``Unavailable``/``TimedOut`` within
the budget (at once while the circuit is open); nothing ever waits behind another request.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec
import structlog
from redis.asyncio import BlockingConnectionPool, Redis
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from xtyl_common.errors import TimedOut, Unavailable
from xtyl_gateway.domain.circuit import CircuitBreaker

log = structlog.stdlib.get_logger("xtyl.gateway.ratelimit")

T = TypeVar("T")

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


_GCRA_SHA = hashlib.sha1(_GCRA.encode()).hexdigest()  # noqa: S324 - Redis names scripts by SHA-1


class GcraBatches:
    """The GCRA calls of one event-loop turn go to Redis as one redis-py pipeline.

    Under load many requests reach the limiter in the same turn; sending each on its own costs
    a pooled connection, a write and a read apiece (the largest part of the gateway's CPU per
    request). Here the first call of a turn schedules a flush for the end of the turn, every
    call of that turn joins it, and one pipeline (one connection, one write, one read) answers
    them all, each caller getting its own reply. A failure of the pipeline is every caller's
    failure. ``NOSCRIPT`` (a restarted Redis lost its script cache) loads the script and runs
    the batch once more.
    """

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._waiting: list[tuple[str, int, int, asyncio.Future[tuple[int, int]]]] = []
        self._running: set[asyncio.Task[None]] = set()

    async def run(self, key: str, interval_ms: int, burst_ms: int) -> tuple[int, int]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[int, int]] = loop.create_future()
        if not self._waiting:
            loop.call_soon(self._flush)
        self._waiting.append((key, interval_ms, burst_ms, future))
        return await future

    def _flush(self) -> None:
        batch, self._waiting = self._waiting, []
        task = asyncio.ensure_future(self._execute(batch))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _execute(
        self, batch: list[tuple[str, int, int, asyncio.Future[tuple[int, int]]]]
    ) -> None:
        try:
            try:
                replies = await self._pipeline(batch)
            except NoScriptError:
                await self._redis.script_load(_GCRA)  # pyright: ignore[reportUnknownMemberType]
                replies = await self._pipeline(batch)
        except BaseException as exc:  # every caller of the batch gets the failure
            for *_, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (*_, future), reply in zip(batch, replies, strict=True):
            if not future.done():
                future.set_result((int(reply[0]), int(reply[1])))

    async def _pipeline(
        self, batch: list[tuple[str, int, int, asyncio.Future[tuple[int, int]]]]
    ) -> list[Any]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for key, interval_ms, burst_ms, _ in batch:
                pipe.evalsha(_GCRA_SHA, 1, key, str(interval_ms), str(burst_ms))  # pyright: ignore[reportUnknownMemberType]
            replies: list[Any] = await pipe.execute()
        return replies


class Limit(msgspec.Struct, frozen=True):
    """``requests`` per ``window_s`` seconds, for the route bucket ``name``."""

    name: str
    requests: int
    window_s: float


class Decision(msgspec.Struct, frozen=True):
    allowed: bool
    retry_after_s: int


def limiter_redis(url: str, *, timeout_s: float, max_connections: int) -> Redis:
    """The limiter's own redis-py client: every wait bounded by ``timeout_s``, no retries."""
    pool: BlockingConnectionPool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout_s,  # waiting for a free pooled connection
        socket_connect_timeout=timeout_s,
        socket_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
        lib_name=None,  # no CLIENT SETINFO round trips on each (re)connect
        lib_version=None,
        decode_responses=False,
    )
    return Redis(connection_pool=pool)


class RateLimiter:
    """``hit`` counts one request; raises ``Unavailable``/``TimedOut`` when Redis cannot say.

    Build one per process with :meth:`from_url` and :meth:`close` it on shutdown.
    """

    def __init__(self, redis: Redis, breaker: CircuitBreaker, *, prefix: str = "xtyl:rl") -> None:
        self._redis = redis
        self._breaker = breaker
        self._prefix = prefix
        self._batches = GcraBatches(redis)  # EVALSHA, pipelined per loop turn

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        timeout_s: float = 0.05,
        max_connections: int = 64,
        failures_to_open: int = 3,
        cooldown_s: float = 1.0,
    ) -> RateLimiter:
        return cls(
            limiter_redis(url, timeout_s=timeout_s, max_connections=max_connections),
            CircuitBreaker(failures_to_open=failures_to_open, cooldown_s=cooldown_s),
        )

    async def hit(self, subject: str, limit: Limit) -> Decision:
        interval_ms = max(1, int(limit.window_s * 1000 / limit.requests))
        burst_ms = interval_ms * limit.requests
        key = f"{self._prefix}:{limit.name}:{subject}"
        reply = await self._guarded(lambda: self._gcra(key, interval_ms, burst_ms))
        allowed, wait_ms = reply
        return Decision(allowed == 1, 0 if allowed else max(1, math.ceil(wait_ms / 1000)))

    def state(self) -> str:
        """``"up"``, or ``"degraded: …"`` while the circuit is open (limits not enforced)."""
        if self._breaker.state == "closed":
            return "up"
        return f"degraded: {self._open_reason()}"

    async def check_health(self) -> None:
        """Readiness check (register it as non-critical): a PING through the breaker; raises
        while the limiter fails open."""
        await self._guarded(self._ping)

    async def close(self) -> None:
        await self._redis.aclose(close_connection_pool=True)

    async def _gcra(self, key: str, interval_ms: int, burst_ms: int) -> tuple[int, int]:
        return await self._batches.run(key, interval_ms, burst_ms)

    async def _ping(self) -> None:
        await self._redis.ping()  # pyright: ignore[reportUnknownMemberType]

    async def _guarded(self, call: Callable[[], Awaitable[T]]) -> T:
        breaker = self._breaker
        if not breaker.allow():
            raise Unavailable(self._open_reason(), code="redis_circuit_open")
        try:
            result = await call()
        except RedisTimeoutError as exc:
            self._failed(f"Redis timed out: {exc}")
            raise TimedOut(f"Redis did not answer in time: {exc}", code="redis_timeout") from None
        except (RedisError, OSError) as exc:  # refused, reset, LOADING, READONLY, pool full …
            self._failed(f"Redis failed: {exc}")
            raise Unavailable(f"Redis failed: {exc}", code="redis_unavailable") from None
        except BaseException:  # cancelled: no verdict on Redis
            breaker.abandon()
            raise
        if breaker.record_success():
            log.info("rate_limiter_recovered")
        return result

    def _failed(self, reason: str) -> None:
        if self._breaker.record_failure(reason):
            log.warning("rate_limiter_circuit_opened", reason=reason)

    def _open_reason(self) -> str:
        return f"rate limits not enforced, circuit open ({self._breaker.last_failure})"
