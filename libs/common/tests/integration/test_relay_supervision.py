"""The outbox relay's loop is supervised: whatever its dependencies raise, it logs, backs off
and publishes once they work again; its readiness check says when it is dead or stalled.

Real Postgres and Redis; the failures come from thin wrappers around the real clients (a pool
whose ``acquire`` raises, a Redis whose pipeline raises), or from Postgres itself
(``pg_terminate_backend`` on the relay's LISTEN connection).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any, cast

import asyncpg
import pytest
import structlog
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from xtyl_common.errors import Unavailable
from xtyl_common.events import (
    EventSettings,
    FileDeleted,
    FileDeletedPayload,
    OutboxRelay,
    add_event,
    decode_event,
    stream_key,
)
from xtyl_devstack.testing import eventually

pytestmark = pytest.mark.integration


class BrokenDependency(Exception):
    """Not a Postgres, Redis or OS error: nothing the relay knows of."""


class FailingPool:
    """The real pool, except that the first ``failures`` acquires raise."""

    def __init__(self, pool: asyncpg.Pool, failures: int) -> None:
        self.pool = pool
        self.failures = failures
        self.raised = 0

    def acquire(self, *, timeout: float | None = None) -> Any:
        if self.raised < self.failures:
            self.raised += 1
            raise BrokenDependency(f"acquire #{self.raised} refused")
        return self.pool.acquire(timeout=timeout)

    async def release(self, conn: Any, *, timeout: float | None = None) -> None:  # noqa: ASYNC109
        await self.pool.release(conn, timeout=timeout)


class PipelineRefusingRedis(Redis):
    """A real Redis client whose MULTI/EXEC pipelines fail while ``refusing`` is set; PING
    and everything else work."""

    refusing = True

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Pipeline:
        if self.refusing:
            raise BrokenDependency("pipeline refused")
        return super().pipeline(transaction=transaction, shard_hint=shard_hint)


@pytest.fixture
def settings(redis_prefix: str) -> EventSettings:
    return EventSettings(
        stream_prefix=redis_prefix + "events",
        relay_poll_interval_s=0.1,
        relay_backoff_initial_s=0.05,
        relay_backoff_max_s=0.2,
        db_timeout_s=1.0,
        redis_timeout_s=1.0,
    )


@pytest.fixture
async def relays() -> AsyncIterator[list[OutboxRelay]]:
    started: list[OutboxRelay] = []
    yield started
    for relay in started:
        await relay.stop()


def _deleted() -> FileDeleted:
    return FileDeleted(
        producer="test", payload=FileDeletedPayload(file_id=uuid.uuid4(), owner_id=uuid.uuid4())
    )


async def _commit(pool: asyncpg.Pool, schema: str) -> FileDeleted:
    event = _deleted()
    async with pool.acquire() as conn, conn.transaction():
        await add_event(conn, event, schema=schema)
    return event


async def _on_stream(redis: Redis, settings: EventSettings, event: FileDeleted) -> bool:
    entries = await redis.xrange(stream_key("files", settings.stream_prefix))
    return any(decode_event(fields[b"event"]).id == event.id for _, fields in entries)


async def test_relay_survives_an_unknown_exception_from_its_pool_and_publishes_after(
    pool: asyncpg.Pool,
    schema: str,
    redis: Redis,
    settings: EventSettings,
    relays: list[OutboxRelay],
) -> None:
    event = await _commit(pool, schema)
    failing = FailingPool(pool, failures=4)
    relay = OutboxRelay(cast(asyncpg.Pool, failing), redis, schemas=[schema], settings=settings)
    with structlog.testing.capture_logs() as logs:
        task = relay.start()
        relays.append(relay)
        await eventually(lambda: _on_stream(redis, settings, event), timeout_s=10)

    assert failing.raised == 4
    assert not task.done(), "the relay loop is still running"
    failures = [e for e in logs if e["event"] in {"relay_failed", "relay_listen_failed"}]
    assert failures, logs
    assert all(e["log_level"] == "error" and e["unexpected"] for e in failures)
    assert all(isinstance(e["exc_info"], BrokenDependency) for e in failures), "traceback logged"
    assert relay.healthy()
    await relay.check_health()


async def test_relay_relistens_after_postgres_ends_its_listen_connection(
    pool: asyncpg.Pool,
    schema: str,
    redis: Redis,
    settings: EventSettings,
    relays: list[OutboxRelay],
) -> None:
    """What a Postgres restart does to the LISTEN connection, without stopping the shared
    server: the backend is terminated, asyncpg hands the connection back to the pool."""
    relay = OutboxRelay(pool, redis, schemas=[schema], settings=settings)
    task = relay.start()
    relays.append(relay)
    await eventually(lambda: _listening_on_a_backend(relay), timeout_s=5)
    listen_pid = _listen_pid(relay)

    async with pool.acquire() as conn:
        assert await conn.fetchval("select pg_terminate_backend($1)", listen_pid)
    event = await _commit(pool, schema)

    await eventually(lambda: _on_stream(redis, settings, event), timeout_s=10)
    assert not task.done(), "the relay loop is still running"
    await eventually(lambda: _listening_on_a_backend(relay, not_pid=listen_pid), timeout_s=5)


def _listen_pid(relay: OutboxRelay) -> int | None:
    conn = relay._listen_conn  # pyright: ignore[reportPrivateUsage]
    if conn is None:
        return None
    try:
        pid: int = conn.get_server_pid()
    except asyncpg.InterfaceError:  # its connection broke and went back to the pool
        return None
    return pid


async def _listening_on_a_backend(relay: OutboxRelay, *, not_pid: int | None = None) -> bool:
    pid = _listen_pid(relay)
    return pid is not None and pid != not_pid


async def test_readiness_fails_when_passes_keep_failing_while_postgres_and_redis_answer(
    pool: asyncpg.Pool,
    schema: str,
    redis_url: str,
    settings: EventSettings,
    relays: list[OutboxRelay],
) -> None:
    refusing = PipelineRefusingRedis.from_url(redis_url, socket_timeout=2)
    try:
        event = await _commit(pool, schema)
        relay = OutboxRelay(pool, refusing, schemas=[schema], settings=settings)
        relay.start()
        relays.append(relay)
        await relay.check_health()  # failing, but not for long yet

        stale_s = relay.health.stale_after_s
        await asyncio.sleep(stale_s + 0.5)
        with pytest.raises(Unavailable) as raised:
            await relay.check_health()
        reason = str(raised.value)
        assert "outbox relay: no pass succeeded for" in reason
        assert "BrokenDependency: pipeline refused" in reason
        assert relay.state().running
        assert relay.state().failures > 0

        refusing.refusing = False  # the dependency works again: so does the relay
        await eventually(lambda: _on_stream(refusing, settings, event), timeout_s=10)
        await eventually(lambda: _check_passes(relay), timeout_s=5)
    finally:
        for started in relays:  # before their client closes: a command after that would
            await started.stop()  # open a connection nothing closes (a ResourceWarning later)
        await refusing.aclose()


async def _check_passes(relay: OutboxRelay) -> bool:
    try:
        await relay.check_health()
    except Unavailable:
        return False
    return True


async def test_readiness_fails_when_the_relay_task_has_ended(
    pool: asyncpg.Pool,
    schema: str,
    redis: Redis,
    settings: EventSettings,
    relays: list[OutboxRelay],
) -> None:
    relay = OutboxRelay(pool, redis, schemas=[schema], settings=settings)
    task = relay.start()
    relays.append(relay)
    await relay.check_health()

    task.cancel()  # whatever ended it, the check must notice
    await asyncio.gather(task, return_exceptions=True)

    with pytest.raises(Unavailable, match="outbox relay stopped"):
        await relay.check_health()
    assert not relay.healthy()
    assert relay.state().running is False
