"""``rag-worker``: arq worker fed by the ``files`` and ``users`` streams (and the API's inline
documents).

    python -m xtyl_rag.worker          # or the script xtyl-rag-worker
    arq xtyl_rag.worker.WorkerSettings # arq's CLI: the same, but arq's own Worker, which
                                       # exits when Redis is down (see run_stream_worker)

Each handler and job is one call into :class:`~xtyl_rag.service.RagService`, which the start-up
opens (:func:`~xtyl_rag.service.open_service`, with the outbox relay):

* ``file.uploaded`` of a type extraction reads: fetch from storage, extract, chunk, embed,
  write (``service/indexing.py``); ``file.deleted``: drop the file's document. While storage
  is not ready (a worker started ahead of it, a storage restart) a file job waits for it before
  it claims the document, for up to ``STORAGE_READY_WAIT_S``, spending no try. A document held
  by a dead run is taken over once its lease runs out; one held by a live run is retried later;
* ``user.deleted``: erase everything held for the user (``service/account.py``): in batches,
  resumable (a worker killed half-way finishes on redelivery), a no-op once complete; from its
  start nothing more is written for the user;
* ``index_document`` jobs (the API enqueues inline texts) on the queue
  ``<EVENTS_STREAM_PREFIX>:rag:jobs``;
* the outbox relay publishes ``document.indexed`` / ``document.failed``;
* every 5 minutes the reconciler re-emits ``file.uploaded`` for file documents stuck in a
  working state (``STUCK_AFTER_S``) and re-enqueues stuck inline documents.
"""

from __future__ import annotations

import uuid
from contextlib import AsyncExitStack
from typing import Any

import asyncpg
import msgspec
import structlog
from arq.cron import cron
from arq.worker import Retry, func

from xtyl_common.errors import DependencyError
from xtyl_common.events import (
    EventSettings,
    FileDeleted,
    FileUploaded,
    UserDeleted,
    reconciler_cron,
    stream_worker_settings,
    worker_entry,
)
from xtyl_common.retry import retry_after_of
from xtyl_rag.adapters.jobs import INDEX_DOCUMENT, queue_name
from xtyl_rag.adapters.postgres.documents import OUTBOX_SCHEMA
from xtyl_rag.service import RagService, open_service, stuck_file_finder
from xtyl_rag.settings import RagSettings

log = structlog.stdlib.get_logger("xtyl.rag.worker")

GROUP = "rag"
#: The inline job's deferred retries, the one retry layer of an inline document's run (a file's
#: is its stream entry's): 5 tries, 2 s doubling to 60 s, or the wait a dependency asked for.
INLINE_JOB_TRIES = 5
INLINE_JOB_BACKOFF_S = 2.0
INLINE_JOB_BACKOFF_MAX_S = 60.0
RECONCILE_MINUTES = set(range(0, 60, 5))
#: Where the start-up keeps the service in arq's ctx.
SERVICE_KEY = "rag"
_TRANSIENT = (DependencyError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


def service_of(ctx: dict[Any, Any]) -> RagService:
    service: RagService = ctx[SERVICE_KEY]
    return service


async def on_file_uploaded(event: FileUploaded, ctx: dict[Any, Any]) -> None:
    await service_of(ctx).on_file_uploaded(event.payload)


async def on_file_deleted(event: FileDeleted, ctx: dict[Any, Any]) -> None:
    await service_of(ctx).on_file_deleted(event.payload)


async def on_user_deleted(event: UserDeleted, ctx: dict[Any, Any]) -> None:
    await service_of(ctx).erase_user(event.payload.user_id, event.occurred_at)


def inline_retry_delay(tries: int, exc: BaseException) -> float:
    """How long the inline job waits before try ``tries + 1``."""
    asked = retry_after_of(exc)
    if asked is not None:
        return asked
    return min(INLINE_JOB_BACKOFF_MAX_S, INLINE_JOB_BACKOFF_S * 2 ** (tries - 1))


async def index_document(ctx: dict[Any, Any], document_id: str) -> str:
    """arq job: index one (inline) document; a run that failed in passing is deferred and run
    again (:data:`INLINE_JOB_TRIES`)."""
    try:
        report = await service_of(ctx).index_document(uuid.UUID(document_id))
    except _TRANSIENT as exc:
        tries: int = ctx.get("job_try", 1)
        if tries >= INLINE_JOB_TRIES:
            raise
        delay = inline_retry_delay(tries, exc)
        log.info(
            "index_retry",
            document_id=document_id,
            tries=tries,
            error=type(exc).__name__,
            delay_s=round(delay, 3),
        )
        raise Retry(defer=delay) from exc
    return report.outcome


async def requeue_stuck_inline(ctx: dict[Any, Any]) -> int:
    """Cron: inline documents stuck in a working state get a new job (one per attempt)."""
    return await service_of(ctx).requeue_stuck_inline()


def worker_settings(
    settings: RagSettings,
    events: EventSettings | None = None,
    *,
    consumer_name: str | None = None,
    run_relay: bool = True,
) -> dict[str, Any]:
    """arq ``WorkerSettings`` (a dict) for one rag-worker process."""
    events = msgspec.structs.replace(events or EventSettings(), max_jobs=settings.index_concurrency)

    async def startup(ctx: dict[Any, Any]) -> None:
        stack = AsyncExitStack()
        ctx["rag_stack"] = stack
        try:
            service = await stack.enter_async_context(
                open_service(settings, events, relay=run_relay)
            )
            await service.prepare_indexing()
        except BaseException:
            await stack.aclose()
            raise
        ctx.update({"db": service.pool, SERVICE_KEY: service})  # "db": the reconciler's pool
        log.info(
            "rag_worker_started",
            model=service.model_status.active.model,
            concurrency=settings.index_concurrency,
        )

    async def shutdown(ctx: dict[Any, Any]) -> None:
        stack: AsyncExitStack | None = ctx.pop("rag_stack", None)
        if stack is not None:
            await stack.aclose()

    return stream_worker_settings(
        redis_url=settings.redis_url,
        group=GROUP,
        handlers={
            FileUploaded: on_file_uploaded,
            FileDeleted: on_file_deleted,
            UserDeleted: on_user_deleted,
        },
        events=events,
        functions=[func(index_document, name=INDEX_DOCUMENT, max_tries=INLINE_JOB_TRIES)],
        cron_jobs=[
            reconciler_cron(
                stuck_file_finder(settings.stuck_after_s),
                schema=OUTBOX_SCHEMA,
                pool_key="db",
                minute=RECONCILE_MINUTES,
            ),
            cron(requeue_stuck_inline, name="rag_requeue_stuck_inline", minute=RECONCILE_MINUTES),
        ],
        on_startup=startup,
        on_shutdown=shutdown,
        consumer_name=consumer_name,
        queue_name=queue_name(events.stream_prefix),
        max_jobs=settings.index_concurrency,
        job_timeout=events.handler_timeout_s,
        poll_delay=0.2,
        keep_result=3600,
        handle_signals=True,
    )


__getattr__, main = worker_entry(RagSettings, worker_settings, program="xtyl-rag-worker")


if __name__ == "__main__":
    main()
