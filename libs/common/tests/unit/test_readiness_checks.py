"""/readyz: a critical check that fails takes the replica out (503); a non-critical one only
shows as degraded (200), so an outage of an optional dependency leaves every replica serving."""

from __future__ import annotations

import asyncio
from typing import Any

from litestar import Litestar
from litestar.testing import AsyncTestClient

from xtyl_common.errors import Unavailable
from xtyl_common.health import readiness_of
from xtyl_common.web import build_service_app


async def ok() -> None:
    return None


async def refused() -> None:
    raise Unavailable("connection refused")


async def silent() -> None:
    await asyncio.sleep(60)


def app_with(**checks: tuple[Any, bool]) -> Litestar:
    app = build_service_app(title="t", version="1", route_handlers=[])
    readiness = readiness_of(app)
    readiness.timeout_s = 0.2
    for name, (check, critical) in checks.items():
        readiness.add(name, check, critical=critical)
    return app


async def readyz(app: Litestar) -> tuple[int, dict[str, Any]]:
    async with AsyncTestClient(app) as client:
        response = await client.get("/readyz")
    return response.status_code, response.json()


async def test_a_failing_non_critical_check_is_degraded_and_ready() -> None:
    status, body = await readyz(
        app_with(postgres=(ok, True), redis=(refused, False), cache=(silent, False))
    )

    assert status == 200
    assert body == {
        "status": "degraded",
        "checks": {
            "postgres": "up",
            "redis": "degraded: connection refused",
            "cache": "degraded: no answer within 0.2 s",
        },
        "degraded": ["redis", "cache"],
    }


async def test_a_failing_critical_check_is_still_503_and_names_only_what_is_down() -> None:
    status, body = await readyz(app_with(postgres=(refused, True), redis=(refused, False)))

    assert status == 503
    assert body["code"] == "not_ready"
    assert body["down"] == ["postgres"]
    assert body["detail"] == "postgres is down"
    assert body["checks"] == {
        "postgres": "down: connection refused",
        "redis": "degraded: connection refused",
    }


async def test_every_check_up_is_ready() -> None:
    status, body = await readyz(app_with(postgres=(ok, True), redis=(ok, False)))

    assert (status, body) == (200, {"status": "ready", "checks": {"postgres": "up", "redis": "up"}})
