"""Drill: Redis killed and restarted empty on the same port during a burst of 20 sign-ups.

Real processes: the gateway (its outbox relay publishes the ``user.created`` that the
``auth.users`` trigger writes) and notify-worker (consumer group ``notify``), both on a private
Redis that the test stops and starts again with nothing in it, as a managed Redis failover
without persistence does. Entries already in the stream are lost with it; users who sign up
while it is down wait in the gateway's outbox. No process may exit, and each of the 20 users
must get exactly one welcome email (the Brevo stand-in of this test process keeps them).
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from redis.asyncio import Redis

from xtyl_common.events import stream_key
from xtyl_common.migrate import migrate
from xtyl_common.redis_client import create_redis
from xtyl_devstack.brevo import LocalBrevo
from xtyl_devstack.ports import free_port
from xtyl_devstack.postgres import create_database, drop_database
from xtyl_devstack.processes import ManagedProcess
from xtyl_devstack.redis import RedisServer
from xtyl_devstack.service_process import (
    RunningService,
    running_service_async,
    start_worker_process,
)
from xtyl_devstack.stack import StackInfo
from xtyl_devstack.testing import eventually

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SIGN_UPS = 20
#: What the drill changes from production: shorter waits, so the test takes seconds.
FAST_EVENTS = {
    "EVENTS_READ_BLOCK_MS": "200",
    "EVENTS_RELAY_POLL_INTERVAL_S": "0.2",
    "EVENTS_RELAY_BACKOFF_MAX_S": "1",
    "EVENTS_RECOVERY_CHECK_INTERVAL_S": "0.5",
    "EVENTS_REDIS_TIMEOUT_S": "2",
}


@pytest.fixture
def drill_prefix() -> str:
    return f"drill:{secrets.token_hex(4)}:events"


@pytest.fixture
async def drill_database_url(devstack: StackInfo) -> AsyncIterator[str]:
    """A database of the drill's own: the session's database has other gateways whose relays
    would publish these users' events under their own stream prefix."""
    name = f"xtyl_drill_{secrets.token_hex(4)}"
    await asyncio.to_thread(create_database, devstack.postgres_dsn, name)
    url = devstack.dsn(name)
    await migrate(url)
    yield url
    await asyncio.to_thread(drop_database, devstack.postgres_dsn, name)


@pytest.fixture
async def drill_db(drill_database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool: asyncpg.Pool = await asyncpg.create_pool(drill_database_url, min_size=1, max_size=2)
    yield pool
    await pool.close()


@pytest.fixture
async def gateway(
    drill_database_url: str,
    auth_env: dict[str, str],
    redis_control: RedisServer,
    drill_prefix: str,
    service_log_dir: Path,
) -> AsyncIterator[RunningService]:
    nowhere = f"http://127.0.0.1:{free_port()}"  # the drill sends no request through it
    env = {
        **auth_env,
        **FAST_EVENTS,
        "DATABASE_URL": drill_database_url,
        "REDIS_URL": redis_control.url,
        "EVENTS_STREAM_PREFIX": drill_prefix,
        "STORAGE_URL": nowhere,
        "RAG_URL": nowhere,
        "NOTIFY_URL": nowhere,
    }
    async with running_service_async(
        "xtyl_gateway", env, log_dir=service_log_dir, name="gateway-drill"
    ) as service:
        yield service


@pytest.fixture
async def worker(
    notify_env: dict[str, str],
    drill_database_url: str,
    redis_control: RedisServer,
    drill_prefix: str,
    service_log_dir: Path,
) -> AsyncIterator[ManagedProcess]:
    env = {
        **notify_env,
        **FAST_EVENTS,
        "DATABASE_URL": drill_database_url,
        "REDIS_URL": redis_control.url,
        "EVENTS_STREAM_PREFIX": drill_prefix,
    }
    process = await asyncio.to_thread(
        start_worker_process,
        "xtyl_notify.worker",
        env,
        log_dir=service_log_dir,
        name="notify-worker-drill",
        ready_log=b"consumer_started",
    )
    yield process
    await asyncio.to_thread(process.stop)


async def sign_up(db: asyncpg.Pool, address: str) -> None:
    """What Supabase Auth does on a sign-up: a row in auth.users (the trigger does the rest)."""
    await db.execute(
        "insert into auth.users (id, aud, role, email, raw_user_meta_data, created_at)"
        " values ($1, 'authenticated', 'authenticated', $2, '{}'::jsonb, now())",
        uuid.uuid4(),
        address,
    )


@pytest.mark.timeout(300)
async def test_redis_restarted_empty_during_20_sign_ups_each_user_gets_one_welcome_email(
    drill_db: asyncpg.Pool,
    brevo: LocalBrevo,
    redis_control: RedisServer,
    drill_prefix: str,
    gateway: RunningService,
    worker: ManagedProcess,
) -> None:
    addresses = [f"drill-{secrets.token_hex(5)}@example.com" for _ in range(SIGN_UPS)]
    first = SIGN_UPS // 2
    bus: Redis = create_redis(redis_control.url, socket_timeout_s=2.0, connect_timeout_s=0.5)
    users_stream = stream_key("users", drill_prefix)
    try:
        await asyncio.gather(*(sign_up(drill_db, a) for a in addresses[:first]))

        async def all_in_the_stream() -> bool:
            return await bus.xlen(users_stream) >= first

        await eventually(all_in_the_stream, timeout_s=30)
        await asyncio.to_thread(redis_control.stop)
        await asyncio.gather(*(sign_up(drill_db, a) for a in addresses[first:]))
        await asyncio.sleep(2.0)  # the worker's Redis calls fail meanwhile
        assert worker.running, "notify-worker exited while Redis was down"
        await asyncio.to_thread(redis_control.start)  # same port, nothing in it
        assert not list(redis_control.data_dir.glob("*.rdb"))

        async def everyone_welcomed() -> bool:
            assert worker.running, "notify-worker exited"
            assert gateway.process.running, "gateway exited"
            return all(brevo.emails_to(a) for a in addresses)

        await eventually(everyone_welcomed, timeout_s=120, interval_s=0.2)

        async def drained() -> bool:  # every entry, replays included, handled and acknowledged
            groups = await bus.xinfo_groups(users_stream)
            return any(
                g["name"] == b"notify" and g["pending"] == 0 and g["lag"] == 0 for g in groups
            )

        await eventually(drained, timeout_s=60)
    finally:
        await bus.aclose()
    welcomes = {a: [e["subject"] for e in brevo.emails_to(a)] for a in addresses}
    assert welcomes == {a: ["Welcome to xtyl"] for a in addresses}
    assert worker.running
    assert gateway.process.running
