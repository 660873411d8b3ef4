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

and runs it with ``arq xtyl_notify.worker.WorkerSettings`` (arq takes a dict). The consumer
starts after the service's ``on_startup`` (handlers see its ctx) and stops, with the grace
period, before its ``on_shutdown``. Every arq payload is msgpack, never pickle.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from arq.connections import RedisSettings
from arq.cron import CronJob
from arq.typing import StartupShutdown, WorkerCoroutine
from arq.worker import Function

from xtyl_common.events.consumer import StreamConsumer
from xtyl_common.events.contracts import Event
from xtyl_common.events.handling import Handler
from xtyl_common.events.serialization import deserialize_job, serialize_job
from xtyl_common.events.settings import EventSettings
from xtyl_common.redis_client import create_redis

#: Where the running consumer is kept in arq's ctx.
CONSUMER_CTX_KEY = "stream_consumer"


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
        "on_startup": startup,
        "on_shutdown": shutdown,
        "job_serializer": serialize_job,
        "job_deserializer": deserialize_job,
        **worker_options,
    }
