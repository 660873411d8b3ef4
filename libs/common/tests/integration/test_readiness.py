"""/readyz follows the dependencies, /livez never does, and recovery needs no restart."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import aiohttp
import pytest

from xtyl_common.migrate import migrate
from xtyl_devstack.issuer import LocalIssuer
from xtyl_devstack.postgres import PostgresServer
from xtyl_devstack.redis import RedisServer
from xtyl_devstack.service_process import running_service_async

pytestmark = pytest.mark.integration


async def get(http: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, object]]:
    async with http.get(url) as resp:
        return resp.status, await resp.json(content_type=None)


async def until_status(http: aiohttp.ClientSession, url: str, status: int) -> dict[str, object]:
    async with asyncio.timeout(20):
        while True:
            got, body = await get(http, url)
            if got == status:
                return body
            await asyncio.sleep(0.1)


async def test_readyz_names_postgres_while_it_is_down_and_recovers_without_restart(
    postgres_control: PostgresServer,
    redis_control: RedisServer,
    auth_env: dict[str, str],
    service_log_dir: Path,
    http: aiohttp.ClientSession,
    issuer: LocalIssuer,
) -> None:
    env = {
        **auth_env,
        "DATABASE_URL": postgres_control.dsn("xtyl"),
        "REDIS_URL": redis_control.url,
    }
    async with running_service_async(
        "xtyl_gateway", env, log_dir=service_log_dir, name="readiness-gw", ready_path="/readyz"
    ) as gateway:
        pid = gateway.pid
        assert (await get(http, gateway.url + "/readyz"))[0] == 200

        await asyncio.to_thread(postgres_control.stop)
        body = await until_status(http, gateway.url + "/readyz", 503)
        assert body["code"] == "not_ready"
        assert body["down"] == ["postgres"]
        assert body["detail"] == "postgres is down"
        assert (await get(http, gateway.url + "/livez")) == (200, {"status": "alive"})
        token = issuer.mint(user_id=uuid.uuid4())
        async with http.get(
            gateway.url + "/v1/me", headers={"Authorization": f"Bearer {token}"}
        ) as resp:
            assert resp.status == 503, "a request needing Postgres says so, never a 500"
            problem = await resp.json(content_type=None)
            assert problem["code"] == "postgres_unavailable"

        await asyncio.to_thread(postgres_control.start)
        body = await until_status(http, gateway.url + "/readyz", 200)
        assert body["checks"] == {"postgres": "up", "redis": "up", "outbox_relay": "up"}
        assert gateway.process.pid == pid, "recovered without a restart"


async def test_readyz_names_redis_while_it_is_down_and_requests_still_pass(
    postgres_control: PostgresServer,
    redis_control: RedisServer,
    auth_env: dict[str, str],
    service_log_dir: Path,
    http: aiohttp.ClientSession,
    issuer: LocalIssuer,
) -> None:
    """Rate limits fail open: a Redis outage shows in /readyz as degraded (still 200: it must
    not take every gateway replica out of service), not as 503s on every call."""
    env = {
        **auth_env,
        "DATABASE_URL": postgres_control.dsn("xtyl"),
        "REDIS_URL": redis_control.url,
    }
    await migrate(postgres_control.dsn("xtyl"))
    async with running_service_async(
        "xtyl_gateway", env, log_dir=service_log_dir, name="readiness-gw2", ready_path="/readyz"
    ) as gateway:
        await asyncio.to_thread(redis_control.stop)
        status, body = await get(http, gateway.url + "/readyz")
        assert status == 200
        assert body["status"] == "degraded"
        assert body["degraded"] == ["redis"]
        checks = body["checks"]
        assert isinstance(checks, dict)
        assert checks["postgres"] == "up"
        assert str(checks["redis"]).startswith("degraded: ")
        assert (await get(http, gateway.url + "/livez"))[0] == 200
        token = issuer.mint(user_id=uuid.uuid4())
        async with http.get(
            gateway.url + "/v1/me", headers={"Authorization": f"Bearer {token}"}
        ) as resp:
            # no profile row in this database: the request got past the rate limiter
            assert resp.status == 404
            assert (await resp.json(content_type=None))["code"] == "user_not_found"
        await asyncio.to_thread(redis_control.start)
        async with asyncio.timeout(20):
            while (await get(http, gateway.url + "/readyz"))[1]["status"] != "ready":
                await asyncio.sleep(0.1)
