"""``rag-worker``: arq worker fed by the ``files`` stream (and the API's inline documents).

    python -m xtyl_rag.worker          # or the script xtyl-rag-worker
    arq xtyl_rag.worker.WorkerSettings # arq's CLI: the same, but arq's own Worker, which
                                       # exits when Redis is down (see run_stream_worker)

* ``file.uploaded`` of a type extraction reads: fetch from storage, extract, chunk, embed,
  write (see ``indexing.py``); ``file.deleted``: drop the file's document. While storage is
  not ready (a worker started ahead of it, a storage restart) a file job waits for it before
  it claims the document, for up to ``STORAGE_READY_WAIT_S``, spending no try. A document held
  by a dead run is taken over once its lease runs out; one held by a live run is retried later;
* ``index_document`` jobs (the API enqueues inline texts) on the queue
  ``<EVENTS_STREAM_PREFIX>:rag:jobs``;
* the outbox relay publishes ``document.indexed`` / ``document.failed``;
* every 5 minutes the reconciler re-emits ``file.uploaded`` for file documents stuck in a
  working state (``STUCK_AFTER_S``) and re-enqueues stuck inline documents.
"""

from __future__ import annotations

import asyncio
import uuid
from contextlib import AsyncExitStack
from datetime import timedelta
from typing import Any

import asyncpg
import msgspec
import structlog
from arq.cron import cron
from arq.worker import Retry, func

from xtyl_common.errors import DependencyError
from xtyl_common.events import (
    Event,
    EventSettings,
    FileDeleted,
    FileUploaded,
    FileUploadedPayload,
    reconciler_cron,
    run_stream_worker,
    stream_worker_settings,
)
from xtyl_common.events.relay import OutboxRelay
from xtyl_common.events.settings import ENV_PREFIX
from xtyl_common.logging import configure_logging
from xtyl_common.redis_client import create_redis
from xtyl_common.settings import load_settings, load_settings_or_exit
from xtyl_rag.adapters.embedders import MiniLMTokenCounter
from xtyl_rag.adapters.extraction import ExtractorPool
from xtyl_rag.adapters.jobs import INDEX_DOCUMENT, JobQueue, queue_name
from xtyl_rag.adapters.postgres.documents import OUTBOX_SCHEMA, PRODUCER
from xtyl_rag.bootstrap import open_core
from xtyl_rag.indexing import Indexer
from xtyl_rag.settings import RagSettings

log = structlog.stdlib.get_logger("xtyl.rag.worker")

GROUP = "rag"
INLINE_JOB_TRIES = 5
RECONCILE_MINUTES = set(range(0, 60, 5))
_TRANSIENT = (DependencyError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


def indexer_of(ctx: dict[Any, Any]) -> Indexer:
    indexer: Indexer = ctx["indexer"]
    return indexer


async def on_file_uploaded(event: FileUploaded, ctx: dict[Any, Any]) -> None:
    await indexer_of(ctx).on_file_uploaded(event.payload)


async def on_file_deleted(event: FileDeleted, ctx: dict[Any, Any]) -> None:
    await indexer_of(ctx).on_file_deleted(event.payload)


async def index_document(ctx: dict[Any, Any], document_id: str) -> str:
    """arq job: index one (inline) document; passing failures are retried with backoff."""
    try:
        report = await indexer_of(ctx).index(uuid.UUID(document_id))
    except _TRANSIENT as exc:
        tries: int = ctx.get("job_try", 1)
        if tries >= INLINE_JOB_TRIES:
            raise
        log.info("index_retry", document_id=document_id, tries=tries, error=type(exc).__name__)
        raise Retry(defer=min(60.0, 2.0**tries)) from exc
    return report.outcome


def stuck_file_finder(stuck_after_s: float) -> Any:
    """The reconciler's query: ``file.uploaded`` again for file documents stuck in a working
    state (the key is ``""`` for documents added through the API, which storage does not say)."""

    async def find_stuck(conn: asyncpg.Connection) -> list[Event]:
        rows = await conn.fetch(
            "select owner_id, file_id, file_key, file_name, content_type, size_bytes,"
            " content_sha256 from xtyl_rag.documents where source = 'file'"
            " and status not in ('ready', 'failed') and updated_at < now() - $1::interval"
            " and (lease_until is null or lease_until < now()) order by updated_at limit 500",
            timedelta(seconds=stuck_after_s),
        )
        return [
            FileUploaded(
                producer=PRODUCER,
                payload=FileUploadedPayload(
                    file_id=row["file_id"],
                    owner_id=row["owner_id"],
                    key=row["file_key"] or "",
                    name=row["file_name"] or "",
                    content_type=row["content_type"] or "",
                    size=row["size_bytes"] or 0,
                    sha256=row["content_sha256"],
                ),
            )
            for row in rows
        ]

    return find_stuck


async def requeue_stuck_inline(ctx: dict[Any, Any]) -> int:
    """Cron: inline documents stuck in a working state get a new job (one per attempt)."""
    indexer = indexer_of(ctx)
    jobs: JobQueue = ctx["jobs"]
    settings: RagSettings = ctx["settings"]
    stuck = await indexer.documents.stuck(older_than_s=settings.stuck_after_s)
    inline = [d for d in stuck if d.source == "inline"]
    for document in inline:
        await jobs.index_document(document.id, key=f"attempt-{document.attempts}")
    if inline:
        log.info("inline_documents_requeued", count=len(inline))
    return len(inline)


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
            core = await stack.enter_async_context(open_core(settings, events))
            extractor = ExtractorPool(
                settings.extraction_limits(), size=settings.extraction_workers
            )
            stack.push_async_callback(extractor.aclose)
            counter = await asyncio.to_thread(MiniLMTokenCounter.load)
            active = core.model_status.active
            await core.models.ensure_index(active.model, active.dimension)
            redis = create_redis(settings.redis_url)
            stack.push_async_callback(redis.aclose)
            if run_relay:
                relay = OutboxRelay(core.pool, redis, schemas=[OUTBOX_SCHEMA], settings=events)
                relay.start()
                stack.push_async_callback(relay.stop)
                ctx["outbox_relay"] = relay  # relay.state()/healthy() for a health listener
            ctx.update(
                db=core.pool,
                core=core,
                settings=settings,
                indexer=core.indexer(extractor, counter),
                jobs=JobQueue(ctx["redis"], queue=queue_name(events.stream_prefix)),
            )
        except BaseException:
            await stack.aclose()
            raise
        log.info("rag_worker_started", model=active.model, concurrency=settings.index_concurrency)

    async def shutdown(ctx: dict[Any, Any]) -> None:
        stack: AsyncExitStack | None = ctx.pop("rag_stack", None)
        if stack is not None:
            await stack.aclose()

    return stream_worker_settings(
        redis_url=settings.redis_url,
        group=GROUP,
        handlers={FileUploaded: on_file_uploaded, FileDeleted: on_file_deleted},
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


def settings_from_env() -> dict[str, Any]:
    settings = load_settings_or_exit(RagSettings, program="xtyl-rag-worker")
    configure_logging(settings.log_level, json_logs=settings.log_json)
    return worker_settings(settings, load_settings(EventSettings, prefix=ENV_PREFIX))


def __getattr__(name: str) -> Any:
    """``WorkerSettings`` for arq's CLI, read from the environment when first asked for."""
    if name == "WorkerSettings":
        return settings_from_env()
    raise AttributeError(name)


def main() -> None:
    run_stream_worker(settings_from_env())


if __name__ == "__main__":
    main()
