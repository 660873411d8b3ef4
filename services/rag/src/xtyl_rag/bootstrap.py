"""The one place that wires the rag service: the app's lifespan, the worker's ``on_startup`` and
``reembed`` all open a :class:`RagCore` and build what they need on it.

Opening it registers the configured embedding model; when it differs from the active one the
change is logged (``embedding_model_changed``), shown by ``GET /v1/status``, and search stays
on the active model until ``python -m xtyl_rag.reembed`` has rebuilt the vectors.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import aiohttp
import asyncpg
import structlog

from xtyl_common.db import DatabaseConfig, create_pool
from xtyl_common.events import EventSettings
from xtyl_common.http import create_session
from xtyl_rag.adapters.embedders import MiniLMTokenCounter
from xtyl_rag.adapters.extraction import ExtractorPool
from xtyl_rag.adapters.llm import ChatClient
from xtyl_rag.adapters.postgres import ChunkSearch, DocumentRepository, ModelRegistry, ModelStatus
from xtyl_rag.adapters.storage import StorageClient
from xtyl_rag.adapters.vector_spaces import Embedders
from xtyl_rag.indexing import Indexer
from xtyl_rag.retrieval import Retriever
from xtyl_rag.settings import RagSettings

log = structlog.stdlib.get_logger("xtyl.rag")


@dataclass(frozen=True, slots=True)
class RagCore:
    settings: RagSettings
    events: EventSettings
    pool: asyncpg.Pool
    session: aiohttp.ClientSession
    embedders: Embedders
    models: ModelRegistry
    documents: DocumentRepository
    chunks: ChunkSearch
    storage: StorageClient
    model_status: ModelStatus

    def retriever(self) -> Retriever:
        settings = self.settings
        llm = None
        if settings.llm_enabled:
            assert settings.llm_model is not None
            llm = ChatClient(
                self.session,
                base_url=settings.llm_url,
                model=settings.llm_model,
                api_key=settings.openrouter_api_key,
                timeout_s=settings.llm_timeout_s,
                max_tokens=settings.llm_max_tokens,
            )
        return Retriever(
            chunks=self.chunks,
            models=self.models,
            embedders=self.embedders,
            tuning=settings.search_tuning(),
            llm=llm,
        )

    def indexer(self, extractor: ExtractorPool, counter: MiniLMTokenCounter) -> Indexer:
        return Indexer(
            documents=self.documents,
            models=self.models,
            embedders=self.embedders,
            storage=self.storage,
            extractor=extractor,
            counter=counter,
            max_document_bytes=self.settings.max_document_bytes,
            max_attempts=self.settings.max_index_attempts,
            storage_wait_s=self.settings.storage_ready_wait_s,
        )


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


@asynccontextmanager
async def open_core(settings: RagSettings, events: EventSettings) -> AsyncGenerator[RagCore]:
    async with AsyncExitStack() as stack:
        pool = await create_pool(
            DatabaseConfig(url=settings.database_url, max_size=settings.db_pool_max, vector=True)
        )
        stack.push_async_callback(pool.close)
        session = create_session()
        stack.push_async_callback(session.close)
        embedders = await Embedders.load(settings.embedder_config(), session)
        stack.push_async_callback(embedders.aclose)
        models = ModelRegistry(pool)
        configured = embedders.configured
        status = await models.register(configured.model, configured.dimension)
        log_model_status(status)
        yield RagCore(
            settings=settings,
            events=events,
            pool=pool,
            session=session,
            embedders=embedders,
            models=models,
            documents=DocumentRepository(pool, lease_s=settings.index_lease_s),
            chunks=ChunkSearch(pool),
            storage=StorageClient(
                session,
                settings.storage_url,
                internal_secret=settings.internal_jwt_secret,
                timeout_s=settings.storage_timeout_s,
            ),
            model_status=status,
        )
