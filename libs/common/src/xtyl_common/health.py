"""``/livez`` (the process answers) and ``/readyz`` (every dependency answers).

A service registers one check per dependency in its lifespan::

    readiness_of(app).add("postgres", postgres_check(pool))

``/readyz`` runs them concurrently, each with a timeout, and answers 200 with each check's state,
or 503 problem details (code ``not_ready``) naming what is down. Liveness never looks at
dependencies: restarting a process does not bring Postgres back.

A dependency the service can work without (the gateway's rate limiter fails open when Redis
is gone) is registered with ``critical=False``: its failure shows as ``"degraded: …"`` and
``/readyz`` stays 200, so an outage of it does not take every replica out of service::

    readiness_of(app).add("redis", limiter.check_health, critical=False)
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from litestar import Litestar, Request, Response, get

from xtyl_common.errors import PROBLEM_CONTENT_TYPE, PROBLEM_TYPE_BASE
from xtyl_common.metrics import exposition

READINESS_STATE_KEY = "readiness"

HealthCheck = Callable[[], Awaitable[object]]

_encoder = msgspec.json.Encoder()


class Readiness:
    """The named dependency checks behind ``/readyz``."""

    def __init__(self, timeout_s: float = 2.0) -> None:
        self.timeout_s = timeout_s
        self._checks: dict[str, HealthCheck] = {}
        self._non_critical: set[str] = set()

    def add(self, name: str, check: HealthCheck, *, critical: bool = True) -> None:
        """Register ``check`` (raises when the dependency is not usable). A failing critical
        check is ``"down: …"`` and makes ``/readyz`` 503; a non-critical one is
        ``"degraded: …"`` and ``/readyz`` stays 200."""
        self._checks[name] = check
        if critical:
            self._non_critical.discard(name)
        else:
            self._non_critical.add(name)

    def remove(self, name: str) -> None:
        self._checks.pop(name, None)
        self._non_critical.discard(name)

    async def run(self) -> dict[str, str]:
        """Each check's state: ``"up"``, ``"down: reason"`` or ``"degraded: reason"``."""
        names = list(self._checks)
        results = await asyncio.gather(*(self._run_one(self._checks[name]) for name in names))
        return {
            name: (
                "degraded" + state.removeprefix("down")
                if name in self._non_critical and state.startswith("down:")
                else state
            )
            for name, state in zip(names, results, strict=True)
        }

    async def _run_one(self, check: HealthCheck) -> str:
        try:
            async with asyncio.timeout(self.timeout_s):
                await check()
        except TimeoutError:
            return f"down: no answer within {self.timeout_s:g} s"
        except Exception as exc:
            reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            return f"down: {reason}"
        return "up"


def readiness_of(app: Litestar) -> Readiness:
    readiness: Readiness = app.state[READINESS_STATE_KEY]
    return readiness


@get("/livez", include_in_schema=False, sync_to_thread=False)
def livez() -> dict[str, str]:
    return {"status": "alive"}


@get("/readyz", include_in_schema=False)
async def readyz(request: Request[Any, Any, Any]) -> Response[bytes]:
    checks = await readiness_of(request.app).run()
    down = [name for name, state in checks.items() if state.startswith("down")]
    if not down:
        degraded = [name for name, state in checks.items() if state != "up"]
        ready: dict[str, object] = {"status": "ready", "checks": checks}
        if degraded:
            ready = {"status": "degraded", "checks": checks, "degraded": degraded}
        return Response(_encoder.encode(ready), media_type="application/json")
    body = {
        "type": PROBLEM_TYPE_BASE + "not_ready",
        "title": "Service not ready",
        "status": 503,
        "code": "not_ready",
        "detail": f"{', '.join(down)} {'is' if len(down) == 1 else 'are'} down",
        "down": down,
        "checks": checks,
    }
    return Response(_encoder.encode(body), status_code=503, media_type=PROBLEM_CONTENT_TYPE)


@get("/metrics", include_in_schema=False, sync_to_thread=False)
def metrics() -> Response[bytes]:
    """Prometheus' text format (see :mod:`xtyl_common.metrics`)."""
    body, content_type = exposition()
    return Response(body, media_type=content_type)


def health_handlers() -> list[Any]:
    return [livez, readyz, metrics]
