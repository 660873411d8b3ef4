"""The arq ``WorkerSettings`` pieces of a worker that consumes streams.

A worker service declares its group and handlers once::

    # services/notify/src/xtyl_notify/worker.py
    async def startup(ctx): ctx["db"] = await create_pool(...)       # the service's own wiring
    async def shutdown(ctx): await ctx["db"].close()

    WorkerSettings = stream_worker_settings(
        redis_url=settings.redis_url,
        group="notify",
        handlers={UserCreated: send_welcome_email, DocumentIndexed: notify_document_ready},
        events=load_settings(EventSettings, prefix="EVENTS_"),
        on_startup=startup,
        on_shutdown=shutdown,
        cron_jobs=[reconciler_cron(find_unsent_welcomes, schema="notify", pool_key="db")],
    )

and runs it with ``run_stream_worker(WorkerSettings)``. The consumer starts after the service's
``on_startup`` (handlers see its ctx) and stops, with the grace period, before its
``on_shutdown``. Every arq payload is msgpack, never pickle.

``run_stream_worker`` runs a :class:`StreamWorker`: arq's ``Worker`` that outlives Redis being
down or restarted. Plain arq ends the process when one poll of its queue fails
(``_poll_iteration`` raises ``ConnectionError``); this one logs ``worker_redis_failed``, waits
(doubling from ``poll_delay`` up to ``redis_retry_max_s``) and polls again, waits for Redis at
start instead of giving up after arq's five connection tries, gives every command of its pool a
timeout (arq's own pool has none), and still runs the service's ``on_shutdown`` when Redis is
down at exit. arq's CLI (``arq xtyl_notify.worker.WorkerSettings``) also takes the dict, but
runs arq's own ``Worker``, without any of that.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Mapping, Sequence
from typing import Any

import structlog
from arq.connections import ArqRedis, RedisSettings
from arq.cron import CronJob
from arq.typing import StartupShutdown, WorkerCoroutine
from arq.worker import Function, Worker

from xtyl_common.events.consumer import StreamConsumer
from xtyl_common.events.contracts import Event
from xtyl_common.events.handling import TRANSIENT, Handler, describe
from xtyl_common.events.serialization import deserialize_job, serialize_job
from xtyl_common.events.settings import EventSettings
from xtyl_common.redis_client import create_redis

log = structlog.stdlib.get_logger("xtyl.events.worker")

#: Where the running consumer is kept in arq's ctx.
CONSUMER_CTX_KEY = "stream_consumer"
#: The longest wait between two polls (or connection attempts) while Redis fails.
REDIS_RETRY_MAX_S = 5.0


class StreamWorker(Worker):
    """arq's ``Worker``, made to survive Redis being down, stalled or restarted empty.

    ``redis_url`` (with ``redis_timeout_s`` on every command) replaces ``redis_settings``
    when given. Only the two places where arq lets a Redis error end the process are changed:
    the connection at start and each poll of the queue (which also starts due jobs, prunes
    finished ones and enqueues cron jobs). A failed poll is logged and tried again after a
    pause; a cron run that could not be enqueued meanwhile is skipped (the next one runs).
    """

    def __init__(
        self,
        *args: Any,
        redis_url: str | None = None,
        redis_timeout_s: float = 5.0,
        redis_retry_max_s: float = REDIS_RETRY_MAX_S,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.redis_url = redis_url
        self.redis_timeout_s = redis_timeout_s
        self.redis_retry_max_s = redis_retry_max_s
        self._redis_failures = 0

    async def main(self) -> None:
        if self._pool is None:
            self._pool = await self._connect()
        await super().main()

    async def _connect(self) -> ArqRedis:
        """A pool whose commands time out; waits (logged, with backoff) until Redis answers."""
        if self.redis_url is not None:
            pool: ArqRedis = ArqRedis.from_url(
                self.redis_url,
                socket_timeout=self.redis_timeout_s,
                socket_connect_timeout=self.redis_timeout_s,
                health_check_interval=30,
            )
        else:
            s = self.redis_settings or RedisSettings()
            pool = ArqRedis(
                host=s.host,
                port=s.port,
                db=s.database,
                username=s.username,
                password=s.password,
                ssl=s.ssl,
                socket_timeout=self.redis_timeout_s,
                socket_connect_timeout=self.redis_timeout_s,
            )
        pool.job_serializer = self.job_serializer
        pool.job_deserializer = self.job_deserializer
        pool.default_queue_name = self.queue_name
        pool.expires_extra_ms = self.expires_extra_ms
        failures = 0
        while True:
            try:
                async with asyncio.timeout(self.redis_timeout_s):
                    await pool.ping()  # pyright: ignore[reportUnknownMemberType]
            except TRANSIENT as exc:
                failures += 1
                delay = self._backoff(failures)
                log.warning("worker_redis_unavailable", error=describe(exc), retry_in_s=delay)
                await asyncio.sleep(delay)
                continue
            if failures:
                log.info("worker_redis_available", after_failures=failures)
            return pool

    async def _poll_iteration(self) -> None:
        try:
            await super()._poll_iteration()
        except TRANSIENT as exc:
            self._redis_failures += 1
            delay = self._backoff(self._redis_failures)
            log.warning(
                "worker_redis_failed",
                error=describe(exc),
                failures=self._redis_failures,
                retry_in_s=delay,
            )
            await asyncio.sleep(delay)
            return
        if self._redis_failures:
            log.info("worker_redis_recovered", after_failures=self._redis_failures)
            self._redis_failures = 0

    def _backoff(self, failures: int) -> float:
        return round(
            min(max(self.poll_delay_s, 0.1) * 2 ** (failures - 1), self.redis_retry_max_s), 2
        )

    async def close(self) -> None:
        """arq's ``close``, except that a Redis that is down does not skip ``on_shutdown``."""
        if not self._handle_signals:
            self.handle_sig(signal.SIGUSR1)
        if self._pool is None:
            return
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        try:
            async with asyncio.timeout(self.redis_timeout_s):
                await self.pool.delete(self.health_check_key)
        except TRANSIENT as exc:
            log.warning("worker_health_key_not_removed", error=describe(exc))
        if self.on_shutdown is not None:
            await self.on_shutdown(self.ctx)
        with contextlib.suppress(*TRANSIENT):
            await self.pool.close(close_connection_pool=True)
        self._pool = None


def run_stream_worker(settings: Mapping[str, Any]) -> StreamWorker:
    """Run a :class:`StreamWorker` built from :func:`stream_worker_settings` until a signal."""
    worker = StreamWorker(**settings)
    worker.run()
    return worker


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
    **worker_options: Any,
) -> dict[str, Any]:
    """arq ``WorkerSettings`` (a dict) whose process also consumes ``group``'s streams.

    ``worker_options`` go to arq's ``Worker`` as they are (``max_jobs`` there is for the
    service's own arq jobs; stream jobs use ``events.max_jobs``).
    """
    event_settings = events or EventSettings()
    block_s = event_settings.read_block_ms / 1000

    async def startup(ctx: dict[Any, Any]) -> None:
        if on_startup is not None:
            await on_startup(ctx)
        redis = create_redis(redis_url, socket_timeout_s=event_settings.redis_timeout_s + block_s)
        consumer = StreamConsumer(
            redis, group=group, handlers=handlers, settings=event_settings, name=consumer_name
        )
        await consumer.start(ctx)
        ctx[CONSUMER_CTX_KEY] = consumer

    async def shutdown(ctx: dict[Any, Any]) -> None:
        consumer: StreamConsumer | None = ctx.pop(CONSUMER_CTX_KEY, None)
        if consumer is not None:
            await consumer.stop()
            await consumer.redis.aclose()
        if on_shutdown is not None:
            await on_shutdown(ctx)

    return {
        "functions": [*functions, xtyl_ping],
        "cron_jobs": list(cron_jobs),
        "redis_settings": RedisSettings.from_dsn(redis_url),
        # read by StreamWorker (run_stream_worker); arq's own CLI leaves them out
        "redis_url": redis_url,
        "redis_timeout_s": event_settings.redis_timeout_s,
        "on_startup": startup,
        "on_shutdown": shutdown,
        "job_serializer": serialize_job,
        "job_deserializer": deserialize_job,
        **worker_options,
    }
