"""A stream worker's health: its supervised loops, and the small HTTP listener that shows them.

Every stream worker process (:func:`.worker.stream_worker_settings`, started by
``worker_entry``'s ``main`` or by arq's CLI) serves on ``HOST``:``HEALTH_PORT`` (default
``0.0.0.0:8081``: what Kubernetes probes, ``k8s/base/*-worker.yaml``):

* ``GET /livez``: 200 while the process runs. It never looks at a dependency: restarting a
  worker does not bring Redis back;
* ``GET /readyz``: 200 ``{"status": "ready", "worker": ..., "checks": ..., "loops": ...}``
  once the worker has started and while every supervised loop (the stream consumer's, and the
  outbox relay's where the worker runs one) runs and passes; else 503 problem details (code
  ``not_ready``) naming what is down, with each loop's state. A check that is not critical
  makes it ``"degraded"`` and stays 200, as the services' ``/readyz``
  (:mod:`xtyl_common.health`), whose check runner it uses;
* ``GET /metrics``: Prometheus' text format (:func:`xtyl_common.metrics.exposition`), with
  ``xtyl_worker_healthy{worker}`` set to what ``/readyz`` says at that moment.

The listener is up before anything else of the worker starts (before Redis is reached, before
the service's start-up, such as rag's model), so the probes see a live process that is not
ready yet. A port already taken stops the start with one log line (``health_listener_failed``)
and exit status 1.

An outbox relay started while the worker starts (inside the service's ``on_startup``) joins
the worker (:func:`joining_worker`): its loop's heartbeat is labelled with the worker's name
and its health is part of ``/readyz``.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable
from contextlib import contextmanager
from contextvars import ContextVar

import msgspec
import structlog
from aiohttp import web

from xtyl_common import metrics
from xtyl_common.errors import PROBLEM_CONTENT_TYPE, PROBLEM_TYPE_BASE, Unavailable
from xtyl_common.health import HealthCheck, Readiness
from xtyl_common.supervise import LoopState

log = structlog.stdlib.get_logger("xtyl.events.worker")

DEFAULT_HEALTH_PORT = 8081

_encoder = msgspec.json.Encoder()


class WorkerHealthSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=False):
    """Where a worker's health listener listens (the interface is the service's ``HOST``)."""

    health_port: int = DEFAULT_HEALTH_PORT

    def __post_init__(self) -> None:
        if not 0 < self.health_port < 65536:
            raise ValueError("must be a TCP port between 1 and 65535 (at `$.health_port`)")


class HealthListenerError(Exception):
    """The health listener could not start (its port is taken, the address is not ours)."""


LoopStates = Callable[[], Iterable[LoopState]]


class WorkerHealth:
    """What one worker process reports: the checks behind ``/readyz`` (``startup`` until the
    worker has started, then one per part: ``stream_consumer``, ``outbox_relay``) and the
    states of their loops; and the listener serving them, once :meth:`serve_on` gave it an
    address."""

    def __init__(self, worker: str | None = None) -> None:
        #: The ``worker`` label (``rag-worker``); ``worker_entry`` sets it from the program.
        self.worker = worker
        self.host: str | None = None
        self.port: int | None = None
        #: Set once the service's start-up and the consumer's have finished.
        self.started = False
        self.readiness = Readiness()
        self.readiness.add("startup", self._check_started)
        self._states: list[LoopStates] = []
        self._runner: web.AppRunner | None = None

    @property
    def name(self) -> str:
        return self.worker or "worker"

    def serve_on(self, host: str, port: int) -> None:
        """Serve the listener on ``host:port`` (from :meth:`start_listener` on)."""
        self.host, self.port = host, port

    def add(
        self, name: str, check: HealthCheck, states: LoopStates, *, critical: bool = True
    ) -> None:
        """A part of the worker: its ``/readyz`` check and its loops' states."""
        self.readiness.add(name, check, critical=critical)
        self._states.append(states)

    def loops(self) -> list[LoopState]:
        return [state for states in self._states for state in states()]

    async def _check_started(self) -> None:
        if not self.started:
            raise Unavailable("the worker is starting", code="worker_starting")

    async def status(self) -> tuple[dict[str, str], list[str]]:
        """Each check's state and the names of those down; sets ``xtyl_worker_healthy``."""
        checks = await self.readiness.run()
        down = [name for name, state in checks.items() if state.startswith("down")]
        metrics.WORKER_HEALTHY.labels(self.name).set(0 if down else 1)
        return checks, down

    # --- the listener -----------------------------------------------------------------------

    @property
    def listening(self) -> bool:
        return self._runner is not None

    async def start_listener(self) -> None:
        """Listen on the address :meth:`serve_on` gave (nothing without one; once).
        :class:`HealthListenerError` when that address cannot be had."""
        if self._runner is not None or self.port is None:
            return
        app = web.Application()
        app.router.add_get("/livez", self._livez)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port).start()
        except OSError as exc:
            await runner.cleanup()
            reason = exc.strerror or str(exc) or type(exc).__name__
            raise HealthListenerError(
                f"cannot listen on {self.host}:{self.port} (HEALTH_PORT): {reason}"
            ) from None
        self._runner = runner
        metrics.WORKER_HEALTHY.labels(self.name).set(0)
        log.info("health_listener_started", host=self.host, port=self.port)

    async def stop_listener(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _livez(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "alive", "worker": self.name})

    async def _readyz(self, request: web.Request) -> web.Response:
        checks, down = await self.status()
        loops = self.loops()
        if not down:
            degraded = [name for name, state in checks.items() if state != "up"]
            ready: dict[str, object] = {"status": "ready", "worker": self.name, "checks": checks}
            if degraded:
                ready.update(status="degraded", degraded=degraded)
            ready["loops"] = loops
            return web.Response(body=_encoder.encode(ready), content_type="application/json")
        problem = {
            "type": PROBLEM_TYPE_BASE + "not_ready",
            "title": "Worker not ready",
            "status": 503,
            "code": "not_ready",
            "detail": f"{', '.join(down)} {'is' if len(down) == 1 else 'are'} down",
            "worker": self.name,
            "down": down,
            "checks": checks,
            "loops": loops,
        }
        return web.Response(
            status=503,
            body=_encoder.encode(problem),
            headers={"Content-Type": PROBLEM_CONTENT_TYPE},
        )

    async def _metrics(self, request: web.Request) -> web.Response:
        await self.status()
        body, content_type = metrics.exposition()
        return web.Response(body=body, headers={"Content-Type": content_type})


# --- the worker a relay started at start-up belongs to ---------------------------------------

_joining: ContextVar[WorkerHealth | None] = ContextVar("xtyl_joining_worker", default=None)


def joining_worker() -> WorkerHealth | None:
    """The worker whose service start-up is running in this context, if any: a relay made
    there joins it (:class:`~xtyl_common.events.relay.OutboxRelay`)."""
    return _joining.get()


@contextmanager
def starting(health: WorkerHealth) -> Generator[None]:
    """Run the service's start-up inside this: what it starts joins ``health``."""
    token = _joining.set(health)
    try:
        yield
    finally:
        _joining.reset(token)
