"""``open_service``: the one place that builds the rag service and its adapters.

The app's lifespan, the worker's start-up and ``xtyl-rag-reembed`` all open the service here
and close it on the way out: the Postgres pool, the process's shared HTTP session (or the
caller's), the embedders, storage, the job queue, the extraction pool, the LLM client when one
is configured, and (for the worker) the outbox relay.

Opening it registers the configured embedding model; when it differs from the active one the
change is logged (``embedding_model_changed``), shown by ``GET /v1/status``, and search stays
on the active model until ``xtyl-rag-reembed`` has rebuilt the vectors.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from contextlib import AsyncExitStack, asynccontextmanager

import aiohttp
import structlog

from xtyl_common.db import DatabaseConfig, create_pool
from xtyl_common.erasure import ErasureBacklog, ErasureLedger
from xtyl_common.events import EventSettings, OutboxRelay
from xtyl_common.http import create_session
from xtyl_common.redis_client import create_redis
from xtyl_rag.adapters.embedders import MiniLMTokenCounter
from xtyl_rag.adapters.extraction import ExtractorPool
from xtyl_rag.adapters.jobs import open_job_queue, queue_name
from xtyl_rag.adapters.llm import ChatClient
from xtyl_rag.adapters.postgres import ChunkSearch, DocumentRepository, ModelRegistry, ModelStatus
from xtyl_rag.adapters.postgres.documents import OUTBOX_SCHEMA
from xtyl_rag.adapters.postgres.erasure import ErasureRepository
from xtyl_rag.adapters.postgres.export import ExportReader
from xtyl_rag.adapters.postgres.usage import UsageRepository
from xtyl_rag.adapters.storage import StorageClient
from xtyl_rag.adapters.vector_spaces import Embedders
from xtyl_rag.service.account import Accounts
from xtyl_rag.service.indexing import Indexer
from xtyl_rag.service.rag import RagService
from xtyl_rag.service.retrieval import Retriever
from xtyl_rag.settings import RagSettings

log = structlog.stdlib.get_logger("xtyl.rag")


def log_model_status(status: ModelStatus) -> None:
    if status.state == "changed":
        log.warning(
            "embedding_model_changed",
            active=status.active.model,
            active_dimension=status.active.dimension,
            configured=status.configured.model,
            configured_dimension=status.configured.dimension,
            action="search stays on the active model; run `make reembed` to switch",
        )
    else:
        log.info("embedding_model", model=status.active.model, state=status.state)


def chat_client(settings: RagSettings, session: aiohttp.ClientSession) -> ChatClient | None:
    """The LLM of ``/v1/answer``, or None: answers are extractive."""
    if not settings.llm_enabled:
        return None
    assert settings.llm_model is not None
    return ChatClient(
        session,
        base_url=settings.llm_url,
        model=settings.llm_model,
        api_key=settings.openrouter_api_key,
        timeout_s=settings.llm_timeout_s,
        max_tokens=settings.llm_max_tokens,
    )


@asynccontextmanager
async def open_service(
    settings: RagSettings,
    events: EventSettings,
    *,
    session: aiohttp.ClientSession | None = None,
    relay: bool = False,
) -> AsyncGenerator[RagService]:
    """The rag service, open until the block ends. ``session``: the process's shared HTTP
    session when the caller has one (it stays the caller's to close); ``relay``: publish the
    outbox (``document.indexed`` / ``document.failed``) from this process (the worker)."""
    async with AsyncExitStack() as stack:
        pool = await create_pool(
            DatabaseConfig(url=settings.database_url, max_size=settings.db_pool_max, vector=True)
        )
        stack.push_async_callback(pool.close)
        if session is None:
            session = create_session()
            stack.push_async_callback(session.close)
        embedders = await Embedders.load(settings.embedder_config(), session)
        stack.push_async_callback(embedders.aclose)
        models = ModelRegistry(pool)
        configured = embedders.configured
        status = await models.register(configured.model, configured.dimension)
        log_model_status(status)
        jobs = open_job_queue(settings.redis_url, queue=queue_name(events.stream_prefix))
        stack.push_async_callback(jobs.aclose)
        extractor = ExtractorPool(settings.extraction_limits(), size=settings.extraction_workers)
        stack.push_async_callback(extractor.aclose)
        ledger = ErasureLedger(OUTBOX_SCHEMA)
        backlog = ErasureBacklog(pool, ledger)
        backlog.start()
        stack.push_async_callback(backlog.stop)
        limits = settings.user_limits()
        documents = DocumentRepository(
            pool, lease_s=settings.index_lease_s, ledger=ledger, limits=limits
        )
        accounts = Accounts(
            documents=documents,
            erasures=ErasureRepository(pool, ledger),
            usage=UsageRepository(pool, ledger=ledger, limits=limits),
            reader=ExportReader(pool),
            batch_size=settings.erasure_batch_size,
            pause_s=settings.erasure_batch_pause_s,
        )
        chunks = ChunkSearch(pool)
        storage = StorageClient(
            session,
            settings.storage_url,
            internal_secret=settings.internal_jwt_secret,
            timeout_s=settings.storage_timeout_s,
        )
        indexer = Indexer(
            documents=documents,
            models=models,
            embedders=embedders,
            storage=storage,
            extractor=extractor,
            counter=await asyncio.to_thread(MiniLMTokenCounter.load),
            max_document_bytes=settings.max_document_bytes,
            max_attempts=settings.max_index_attempts,
            storage_wait_s=settings.storage_ready_wait_s,
        )
        retriever = Retriever(
            chunks=chunks,
            models=models,
            embedders=embedders,
            tuning=settings.search_tuning(),
            llm=chat_client(settings, session),
        )
        if relay:
            redis = create_redis(settings.redis_url)
            stack.push_async_callback(redis.aclose)
            outbox = OutboxRelay(pool, redis, schemas=[OUTBOX_SCHEMA], settings=events)
            outbox.start()
            stack.push_async_callback(outbox.stop)
        yield RagService(
            settings=settings,
            pool=pool,
            documents=documents,
            chunks=chunks,
            models=models,
            model_status=status,
            embedders=embedders,
            storage=storage,
            jobs=jobs,
            indexer=indexer,
            retriever=retriever,
            accounts=accounts,
        )
