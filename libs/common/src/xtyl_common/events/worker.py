"""The arq worker that hosts a stream consumer, and the entry point of a worker service.

A worker service declares its group and handlers once::

    # services/notify/src/xtyl_notify/worker.py
    async def startup(ctx): ctx["db"] = await create_pool(...)       # the service's own wiring
    async def shutdown(ctx): await ctx["db"].close()

    def worker_settings(settings: NotifySettings, events: EventSettings) -> dict[str, Any]:
        return stream_worker_settings(
            redis_url=settings.redis_url,
            group="notify",
            handlers={UserCreated: send_welcome_email, DocumentIndexed: notify_document_ready},
            events=events,
            on_startup=startup,
            on_shutdown=shutdown,
            cron_jobs=[reconciler_cron(find_unsent_welcomes, schema="notify", pool_key="db")],
        )

    __getattr__, main = worker_entry(NotifySettings, worker_settings, program=PROGRAM)

``main()`` reads the settings from the environment and runs :func:`run_stream_worker`; the
module's ``WorkerSettings`` (read when first asked for) is what arq's CLI takes
(``arq xtyl_notify.worker.WorkerSettings``). The consumer
(:class:`~xtyl_common.events.consumer.StreamConsumer`, kept in ``ctx`` under
:data:`CONSUMER_CTX_KEY`) starts after the service's ``on_startup`` (handlers see its ctx) and
stops, with the grace period, before its ``on_shutdown``. arq itself only hosts the process:
its startup and shutdown, the service's own jobs and cron jobs. Every arq payload is msgpack,
never pickle.

:func:`run_stream_worker` runs a :class:`StreamWorker`: arq's ``Worker``, through its public
API only, made to outlive Redis being down, stalled or restarted empty. Plain arq ends the
process when Redis fails under its poll loop; a ``StreamWorker`` logs ``worker_redis_failed``,
waits (doubling from ``poll_delay`` up to ``redis_retry_max_s``) and runs arq's ``main()``
again, with the service's ``on_startup`` run only once. Its Redis pool gives every command a
timeout (arq's own has none), and the service's ``on_shutdown`` runs even when Redis is down
at exit. arq's CLI runs arq's own ``Worker`` on the same settings, without any of that.

Every such process serves ``/livez``, ``/readyz`` and ``/metrics`` on ``HOST``:``HEALTH_PORT``
(:mod:`.worker_health`; a :class:`StreamWorker` opens it before reaching Redis, arq's CLI at
its start-up) and traces each stream handler attempt as a child of the trace the event
carried (tracing configured by ``worker_entry``; arq's own polling is not traced, nor are the
service's arq jobs, which run inside it).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import Any, NamedTuple, TypeVar, cast

import structlog
from arq.connections import ArqRedis, RedisSettings
from arq.cron import CronJob
from arq.typing import StartupShutdown, WorkerCoroutine
from arq.worker import Function, Worker
from redis.asyncio import ConnectionPool

from xtyl_common.events.consumer import StreamConsumer
from xtyl_common.events.contracts import Event
from xtyl_common.events.handling import TRANSIENT, Handler
from xtyl_common.events.serialization import deserialize_job, serialize_job
from xtyl_common.events.settings import ENV_PREFIX, EventSettings
from xtyl_common.events.telemetry import untraced, worker_label
from xtyl_common.events.worker_health import (
    HealthListenerError,
    WorkerHealth,
    WorkerHealthSettings,
    starting,
)
from xtyl_common.logging import configure_logging
from xtyl_common.redis_client import create_redis
from xtyl_common.settings import BaseSettings, load_settings_or_exit
from xtyl_common.supervise import describe
from xtyl_common.tracing import configure_tracing, shutdown_tracing

log = structlog.stdlib.get_logger("xtyl.events.worker")

#: Where the running consumer is kept in arq's ctx.
CONSUMER_CTX_KEY = "stream_consumer"
#: The settings' key of the worker's health (a :class:`StreamWorker` argument arq's CLI
#: leaves out).
WORKER_HEALTH_KEY = "worker_health"
#: The longest wait between two runs of arq's ``main()`` while Redis fails.
REDIS_RETRY_MAX_S = 5.0

ServiceSettings = TypeVar("ServiceSettings", bound=BaseSettings)


class StreamWorker(Worker):
    """arq's ``Worker``, made to survive Redis being down, stalled or restarted empty.

    ``redis_url`` (with ``redis_timeout_s`` on every command and connection) replaces
    ``redis_settings`` when given. :meth:`main` runs arq's ``main()`` again after a Redis
    error (arq's poll loop also starts due jobs, prunes finished ones and enqueues cron jobs;
    a cron run that could not be enqueued meanwhile is skipped, the next one runs). The
    service's ``on_startup`` runs once (arq's ``main()`` calls it on each run), and its
    ``on_shutdown`` once, even when Redis is down at exit.
    """

    def __init__(
        self,
        *args: Any,
        redis_url: str | None = None,
        redis_timeout_s: float = 5.0,
        redis_retry_max_s: float = REDIS_RETRY_MAX_S,
        on_startup: StartupShutdown | None = None,
        on_shutdown: StartupShutdown | None = None,
        worker_health: WorkerHealth | None = None,
        **kwargs: Any,
    ) -> None:
        self.redis_url = redis_url
        self.worker_health = worker_health
        self.redis_timeout_s = redis_timeout_s
        self.redis_retry_max_s = redis_retry_max_s
        self.service_startup = on_startup
        self.service_shutdown = on_shutdown
        self.service_started = False
        self.service_startup_failed = False
        self.service_shut_down = False
        self.redis_failures = 0
        if redis_url is not None and kwargs.get("redis_pool") is None:
            kwargs["redis_pool"] = self.timed_pool(redis_url, kwargs)
        super().__init__(
            *args, on_startup=self.start_service, on_shutdown=self.stop_service, **kwargs
        )

    def timed_pool(self, redis_url: str, options: Mapping[str, Any]) -> ArqRedis:
        """An arq pool for ``redis_url`` whose commands and connections time out (``options``:
        the worker's, for the job serializers and the default queue)."""
        connections = ConnectionPool.from_url(
            redis_url,
            socket_timeout=self.redis_timeout_s,
            socket_connect_timeout=self.redis_timeout_s,
            health_check_interval=30,
        )
        defaults = {
            "default_queue_name": options.get("queue_name"),
            "expires_extra_ms": options.get("expires_extra_ms"),
        }
        return ArqRedis(
            connections,
            job_serializer=options.get("job_serializer"),
            job_deserializer=options.get("job_deserializer"),
            **{name: value for name, value in defaults.items() if value is not None},
        )

    async def main(self) -> None:
        """The health listener first (so probes see a live process while Redis is still
        being reached); then arq's ``main()``, run again (after a pause) whenever Redis fails
        under it. arq's polling is not traced (a trace per poll); stream handlers are."""
        if self.worker_health is not None:
            await open_health_listener(self.worker_health)
        with untraced():
            await self._run_arq()

    async def _run_arq(self) -> None:
        while True:
            try:
                await super().main()
            except TRANSIENT as exc:
                if self.service_startup_failed:
                    raise  # the service could not start: not Redis' doing, not ours to retry
                self.redis_failures += 1
                delay = self.backoff_s(self.redis_failures)
                log.warning(
                    "worker_redis_failed",
                    error=describe(exc),
                    failures=self.redis_failures,
                    retry_in_s=delay,
                )
                await asyncio.sleep(delay)
            else:
                return  # burst mode: the queue is empty

    def backoff_s(self, failures: int) -> float:
        return round(
            min(max(self.poll_delay_s, 0.1) * 2 ** (failures - 1), self.redis_retry_max_s), 2
        )

    async def start_service(self, ctx: dict[Any, Any]) -> None:
        """arq's ``on_startup``: the service's, the first time; later runs of ``main()`` reach
        it once Redis answers again."""
        if self.redis_failures:
            log.info("worker_redis_recovered", after_failures=self.redis_failures)
            self.redis_failures = 0
        if self.service_started:
            return
        if self.service_startup is not None:
            try:
                await self.service_startup(ctx)
            except BaseException:
                self.service_startup_failed = True
                raise
        self.service_started = True

    async def stop_service(self, ctx: dict[Any, Any]) -> None:
        """arq's ``on_shutdown``: the service's, once."""
        if self.service_shut_down:
            return
        self.service_shut_down = True
        if self.service_shutdown is not None:
            await self.service_shutdown(ctx)

    async def close(self) -> None:
        """arq's ``close``; when Redis fails under it, the service's ``on_shutdown`` still
        runs and the pool is closed."""
        # arq gathers its job tasks without return_exceptions: a job cancelled by the signal
        # would end close() there, before on_shutdown
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        self.tasks.clear()
        pool = cast("ArqRedis | None", self.pool)  # None when main() never connected
        try:
            await super().close()
        except TRANSIENT as exc:
            if self.service_shut_down:
                raise  # from the service's own on_shutdown
            log.warning("worker_close_redis_failed", error=describe(exc))
            await self.stop_service(self.ctx)
            if pool is not None:
                with contextlib.suppress(*TRANSIENT):
                    await pool.aclose(close_connection_pool=True)
        finally:
            if self.worker_health is not None:
                await self.worker_health.stop_listener()


def run_stream_worker(settings: Mapping[str, Any]) -> StreamWorker:
    """Run a :class:`StreamWorker` built from :func:`stream_worker_settings` until a signal.
    Exit status 1 when its health listener cannot listen (logged ``health_listener_failed``)."""
    worker = StreamWorker(**settings)
    try:
        worker.run()
    except HealthListenerError:
        raise SystemExit(1) from None
    return worker


async def open_health_listener(health: WorkerHealth) -> None:
    """Start the worker's health listener; one log line when it cannot (then re-raised)."""
    try:
        await health.start_listener()
    except HealthListenerError as exc:
        log.error("health_listener_failed", error=str(exc))
        raise


class WorkerEntry(NamedTuple):
    """A worker module's ``__getattr__`` (``WorkerSettings`` for arq's CLI) and ``main``."""

    module_getattr: Callable[[str], Any]
    main: Callable[[], None]


def worker_entry(
    settings_type: type[ServiceSettings],
    worker_settings: Callable[[ServiceSettings, EventSettings], Mapping[str, Any]],
    *,
    program: str,
) -> WorkerEntry:
    """The entry points of a worker module, whose arq settings
    ``worker_settings(settings, events)`` makes::

        __getattr__, main = worker_entry(NotifySettings, worker_settings, program=PROGRAM)

    Both read the service's ``settings_type``, the ``EVENTS_*`` :class:`EventSettings` and
    ``HEALTH_PORT`` from the environment when called (a missing or malformed variable: one
    line naming it on stderr and exit status 2, see
    :func:`~xtyl_common.settings.load_settings_or_exit`), then configure logging from the
    service's settings and tracing (on when an OTLP endpoint is set) for the worker, named
    after the program without ``xtyl-`` (``rag-worker``: also its metrics' ``worker``
    label). Its health listener serves on ``HOST``:``HEALTH_PORT`` (see
    :mod:`.worker_health`). ``main()`` runs :func:`run_stream_worker` (the script,
    ``python -m``); the module's ``WorkerSettings`` is for arq's CLI
    (``arq <module>.WorkerSettings``).
    """

    def settings_from_env() -> dict[str, Any]:
        settings = load_settings_or_exit(settings_type, program=program)
        events = load_settings_or_exit(EventSettings, program=program, prefix=ENV_PREFIX)
        listener = load_settings_or_exit(WorkerHealthSettings, program=program)
        configure_logging(settings.log_level, json_logs=settings.log_json)
        name = worker_label(program)
        configure_tracing(name)
        options = dict(worker_settings(settings, events))
        health = options.get(WORKER_HEALTH_KEY)
        if isinstance(health, WorkerHealth):
            health.worker = health.worker or name
            health.serve_on(settings.host, listener.health_port)
        return options

    def module_getattr(name: str) -> Any:
        if name == "WorkerSettings":
            return settings_from_env()
        raise AttributeError(name)

    def main() -> None:
        run_stream_worker(settings_from_env())

    return WorkerEntry(module_getattr, main)


def service_hooks(
    key: str,
    open_service: Callable[[], AbstractAsyncContextManager[Any]],
    *,
    started: Callable[[], None] | None = None,
) -> tuple[StartupShutdown, StartupShutdown]:
    """arq ``on_startup`` / ``on_shutdown`` that keep a service open in the worker's ``ctx``
    under ``key`` (``open_service()``, the service's composition root) for the worker's life,
    closed again at shutdown; ``started`` runs once it is open (the start-up log line).
    A start-up that fails half-way closes what it had opened."""
    stack_key = f"{key}_stack"

    async def startup(ctx: dict[Any, Any]) -> None:
        stack = AsyncExitStack()
        ctx[stack_key] = stack
        try:
            ctx[key] = await stack.enter_async_context(open_service())
        except BaseException:
            await stack.aclose()
            raise
        if started is not None:
            started()

    async def shutdown(ctx: dict[Any, Any]) -> None:
        stack: AsyncExitStack | None = ctx.pop(stack_key, None)
        if stack is not None:
            await stack.aclose()

    return startup, shutdown


async def xtyl_ping(ctx: dict[Any, Any]) -> str:
    """A no-op job: arq refuses a worker with no function of its own."""
    return "pong"


def stream_worker_settings(
    *,
    redis_url: str,
    group: str,
    handlers: Mapping[type[Event] | str, Handler],
    events: EventSettings | None = None,
    functions: Sequence[WorkerCoroutine | Function] = (),
    cron_jobs: Sequence[CronJob] = (),
    on_startup: StartupShutdown | None = None,
    on_shutdown: StartupShutdown | None = None,
    consumer_name: str | None = None,
    worker_name: str | None = None,
    **worker_options: Any,
) -> dict[str, Any]:
    """arq ``WorkerSettings`` (a dict) whose process also consumes ``group``'s streams.

    ``worker_options`` go to arq's ``Worker`` as they are (``max_jobs`` there is for the
    service's own arq jobs; stream handlers use ``events.max_jobs``). ``worker_name`` is the
    ``worker`` label of its metrics (``worker_entry`` gives the program's name when unset).
    The process's health (:class:`~.worker_health.WorkerHealth`, under
    :data:`WORKER_HEALTH_KEY`) is served once ``worker_entry`` gave it an address: its
    listener starts first, the service's ``on_startup`` runs next (an outbox relay it starts
    joins the worker's health), then the consumer; at shutdown the consumer stops, then the
    service's ``on_shutdown``, the listener and tracing (its last spans sent).
    """
    event_settings = events or EventSettings()
    block_s = event_settings.read_block_ms / 1000
    health = WorkerHealth(worker_name)

    async def startup(ctx: dict[Any, Any]) -> None:
        try:
            await open_health_listener(health)  # arq's CLI; a StreamWorker opened it already
        except HealthListenerError:
            raise SystemExit(1) from None  # logged: arq's CLI would add a traceback
        if on_startup is not None:
            with starting(health):
                await on_startup(ctx)
        redis = create_redis(redis_url, socket_timeout_s=event_settings.redis_timeout_s + block_s)
        consumer = StreamConsumer(
            redis,
            group=group,
            handlers=handlers,
            settings=event_settings,
            name=consumer_name,
            worker=health.name,
        )
        health.add("stream_consumer", consumer.check_health, consumer.state)
        await consumer.start(ctx)
        ctx[CONSUMER_CTX_KEY] = consumer
        health.started = True

    async def shutdown(ctx: dict[Any, Any]) -> None:
        try:
            consumer: StreamConsumer | None = ctx.pop(CONSUMER_CTX_KEY, None)
            if consumer is not None:
                await consumer.stop()
                await consumer.redis.aclose()
            if on_shutdown is not None:
                await on_shutdown(ctx)
        finally:
            await health.stop_listener()
            await asyncio.to_thread(shutdown_tracing)

    return {
        "functions": [*functions, xtyl_ping],
        "cron_jobs": list(cron_jobs),
        "redis_settings": RedisSettings.from_dsn(redis_url),
        # read by StreamWorker (run_stream_worker); arq's own CLI leaves them out
        "redis_url": redis_url,
        "redis_timeout_s": event_settings.redis_timeout_s,
        "on_startup": startup,
        "on_shutdown": shutdown,
        WORKER_HEALTH_KEY: health,
        "job_serializer": serialize_job,
        "job_deserializer": deserialize_job,
        **worker_options,
    }
