"""Fixtures of the event backbone's integration tests: a pool on the migrated test database,
a Redis client, a fresh outbox schema per test, and a reader of metrics."""

from __future__ import annotations

import secrets
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import asynccontextmanager

import asyncpg
import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from xtyl_common.db import DatabaseConfig, create_pool
from xtyl_common.events import install_outbox
from xtyl_common.metrics import exposition
from xtyl_common.redis_client import create_redis


@pytest.fixture
async def pool(migrated_database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(DatabaseConfig(url=migrated_database_url, max_size=10))
    yield pool
    await pool.close()


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    """A client of the test Redis (modules needing other timeouts define their own)."""
    client = create_redis(redis_url)
    yield client
    await client.aclose()


@asynccontextmanager
async def redis_user_without(redis: Redis, redis_url: str, command: str) -> AsyncGenerator[str]:
    """The test Redis' URL for a user who may do anything but ``command`` (an ACL user,
    deleted on the way out): a server that refuses one step of a protocol."""
    user, password = f"no-{command}-{secrets.token_hex(4)}", secrets.token_hex(16)
    await redis.acl_setuser(
        user,
        enabled=True,
        passwords=[f"+{password}"],
        keys=["*"],
        channels=["*"],
        categories=["+@all"],
        commands=[f"-{command}"],
    )
    try:
        yield redis_url.replace("redis://", f"redis://{user}:{password}@", 1)
    finally:
        await redis.acl_deluser(user)


#: ``sample(name, text=None, **labels)``: the value of one series in Prometheus' text format
#: (``text``, or this process's ``exposition()``), ``None`` when it is not served.
MetricSample = Callable[..., float | None]


def _sample(name: str, text: str | None = None, **labels: str) -> float | None:
    if text is None:
        text = exposition()[0].decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return None


@pytest.fixture
def sample() -> MetricSample:
    """Reads a metric as a scrape does (prometheus-client's own parser)."""
    return _sample


@pytest.fixture
async def schema(pool: asyncpg.Pool) -> AsyncIterator[str]:
    """A schema of its own with an outbox installed, dropped afterwards."""
    name = f"ev_{secrets.token_hex(4)}"
    async with pool.acquire() as conn:
        await install_outbox(conn, name)
    yield name
    async with pool.acquire() as conn:
        await conn.execute(f"drop schema {name} cascade")
