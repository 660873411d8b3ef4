"""Fixtures of the event backbone's integration tests: a pool on the migrated test database
and a fresh outbox schema per test."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import asyncpg
import pytest

from xtyl_common.db import DatabaseConfig, create_pool
from xtyl_common.events import install_outbox


@pytest.fixture
async def pool(migrated_database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(DatabaseConfig(url=migrated_database_url, max_size=10))
    yield pool
    await pool.close()


@pytest.fixture
async def schema(pool: asyncpg.Pool) -> AsyncIterator[str]:
    """A schema of its own with an outbox installed, dropped afterwards."""
    name = f"ev_{secrets.token_hex(4)}"
    async with pool.acquire() as conn:
        await install_outbox(conn, name)
    yield name
    async with pool.acquire() as conn:
        await conn.execute(f"drop schema {name} cascade")
