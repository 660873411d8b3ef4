"""Outage tests get private servers they can stop and start again on the same port."""

from __future__ import annotations

import asyncpg
import pytest
import redis

from xtyl_devstack.postgres import PostgresServer
from xtyl_devstack.redis import RedisServer
from xtyl_devstack.stack import StackInfo


async def test_postgres_stop_then_start_keeps_port_and_data(
    postgres_control: PostgresServer, devstack: StackInfo
) -> None:
    assert postgres_control.dsn() != devstack.database_url  # never the shared server
    conn = await asyncpg.connect(postgres_control.dsn())
    await conn.execute("CREATE TABLE IF NOT EXISTS survivors (name text)")
    await conn.execute("INSERT INTO survivors VALUES ('row before the outage')")
    await conn.close()
    port = postgres_control.port

    postgres_control.stop()
    assert not postgres_control.running
    with pytest.raises(OSError, match=r"[Cc]onnect"):
        await asyncpg.connect(postgres_control.dsn(), timeout=2)

    postgres_control.start()
    assert postgres_control.port == port
    conn = await asyncpg.connect(postgres_control.dsn())
    try:
        names = await conn.fetch("SELECT name FROM survivors")
        extension = await conn.fetchval("SELECT extname FROM pg_extension WHERE extname='vector'")
    finally:
        await conn.close()
    assert [row["name"] for row in names] == ["row before the outage"]
    assert extension == "vector"


def test_postgres_left_stopped_is_restarted_for_the_next_test(
    postgres_control: PostgresServer,
) -> None:
    postgres_control.stop()
    assert not postgres_control.running


async def test_postgres_control_is_running_at_test_start(
    postgres_control: PostgresServer,
) -> None:
    assert postgres_control.running
    conn = await asyncpg.connect(postgres_control.dsn())
    try:
        assert await conn.fetchval("SELECT 1") == 1
    finally:
        await conn.close()


def test_redis_stop_then_start_comes_back_empty_on_same_port(redis_control: RedisServer) -> None:
    url, port = redis_control.url, redis_control.port
    with redis.Redis.from_url(url) as client:
        client.set("before", "1")
        assert client.get("before") == b"1"

    redis_control.stop()
    with (
        redis.Redis.from_url(url, socket_connect_timeout=1) as client,
        pytest.raises(redis.ConnectionError),
    ):
        client.ping()

    redis_control.start()
    assert redis_control.port == port
    with redis.Redis.from_url(url) as client:
        assert client.ping() is True
        assert client.get("before") is None
