"""``RagService``: what the rag service does, whatever calls it.

``routes/`` call the document, search and status use cases; ``worker.py`` calls the indexing
ones (stream handlers, the inline job, the reconciler's requeue); ``xtyl-rag-reembed`` calls
:meth:`RagService.reembed`. Each use case is a few lines over the collaborators beside this
module (:mod:`.indexing`, :mod:`.retrieval`, :mod:`.reembed`) and the adapters; nothing here
speaks HTTP or knows arq.

Every use case that reads a user's rows takes the owner's id, and a document of another user
answers exactly like one that does not exist (404 ``document_not_found``).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import asyncpg
import structlog

from xtyl_common.db import check_postgres
from xtyl_common.erasure import ErasureState
from xtyl_common.errors import NotFound, PayloadTooLarge
from xtyl_common.events import FileDeletedPayload, FileUploadedPayload
from xtyl_common.pagination import Page, keyset_page
from xtyl_common.quotas import QuotaUse
from xtyl_common.retry import RetryPolicy
from xtyl_rag.adapters.jobs import JobQueue
from xtyl_rag.adapters.postgres import (
    ChunkSearch,
    DocumentRepository,
    EmbeddingModel,
    ModelRegistry,
    ModelStatus,
)
from xtyl_rag.adapters.storage import PASSING_FAILURES as STORAGE_PASSING_FAILURES
from xtyl_rag.adapters.storage import StorageClient
from xtyl_rag.adapters.vector_spaces import Embedders
from xtyl_rag.domain.answers import Passage
from xtyl_rag.domain.documents import Document, clip_title, sha256_text, title_from_filename
from xtyl_rag.domain.search import SearchFilters, SearchMode
from xtyl_rag.service.account import Accounts, ExportedDocument
from xtyl_rag.service.indexing import Indexer, IndexReport
from xtyl_rag.service.reembed import reembed
from xtyl_rag.service.retrieval import AnswerEvent, Retriever, SearchResult
from xtyl_rag.settings import RagSettings

log = structlog.stdlib.get_logger("xtyl.rag")

#: ``POST /v1/documents {file_id}``: storage's metadata of the file, while the client waits.
#: Unreachable, timed out or 502/503/504: 3 tries, 50 ms doubling to 1 s (the only retry of
#: this call; each try has STORAGE_TIMEOUT_S).
STORAGE_LOOKUPS = RetryPolicy(attempts=3, timeout_s=None, wait_initial_s=0.05, wait_max_s=1.0)


def document_not_found() -> NotFound:
    return NotFound("no such document", code="document_not_found")


@dataclass(frozen=True, slots=True)
class IndexingStatus:
    """``GET /v1/status``: which model search reads, which one is configured, and the
    caller's documents by status."""

    active: EmbeddingModel | None
    configured_model: str
    configured_dimension: int
    documents: dict[str, int]

    @property
    def reembed_needed(self) -> bool:
        return self.active is None or self.active.model != self.configured_model


class RagService:
    def __init__(
        self,
        *,
        settings: RagSettings,
        pool: asyncpg.Pool,
        documents: DocumentRepository,
        chunks: ChunkSearch,
        models: ModelRegistry,
        model_status: ModelStatus,
        embedders: Embedders,
        storage: StorageClient,
        jobs: JobQueue,
        indexer: Indexer,
        retriever: Retriever,
        accounts: Accounts,
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.documents = documents
        self.chunks = chunks
        self.models = models
        #: What this process found at start-up (``current``, ``first`` or ``changed``).
        self.model_status = model_status
        self.embedders = embedders
        self.storage = storage
        self.jobs = jobs
        self.indexer = indexer
        self.retriever = retriever
        self.accounts = accounts

    # --- health ---------------------------------------------------------------------------

    async def check_postgres(self) -> None:
        await check_postgres(self.pool)

    async def check_redis(self) -> None:
        await self.jobs.ping()

    # --- documents ------------------------------------------------------------------------

    async def add_text(
        self, owner_id: uuid.UUID, *, title: str, text: str, metadata: dict[str, Any]
    ) -> Document:
        """A document of inline text, ``pending`` and queued for indexing (403
        ``quota_documents`` / ``quota_chunks`` past the user's quotas, 403
        ``account_deleted`` for a deleted user)."""
        limit = self.settings.max_document_bytes
        if len(text.encode("utf-8", "surrogatepass")) > limit:
            raise PayloadTooLarge(
                f"the text is longer than {limit} bytes", code="document_too_large"
            )
        document = await self.documents.create_inline(
            owner_id,
            title=clip_title(title),
            text=text,
            sha256=sha256_text(text),
            metadata=metadata,
        )
        await self.jobs.index_document(document.id)
        return document

    async def add_file(
        self,
        owner_id: uuid.UUID,
        file_id: uuid.UUID,
        *,
        title: str | None,
        metadata: dict[str, Any] | None,
    ) -> Document:
        """The document of one of the owner's files in storage (the one its upload created, if
        any), queued for indexing unless it is final; a failed one is tried again. NotFound
        when storage has no such file of the owner's (:data:`STORAGE_LOOKUPS` retries storage
        failing in passing)."""
        source = await STORAGE_LOOKUPS.call(
            STORAGE_PASSING_FAILURES, self.storage.file_info, file_id, owner_id
        )
        document = await self.documents.upsert_file(
            source,
            title=clip_title(title) if title else title_from_filename(source.name),
            metadata=metadata,
            retry_failed=True,
        )
        if not document.final:
            await self.jobs.index_document(document.id)
        return document

    async def list_documents(
        self, owner_id: uuid.UUID, *, limit: int, cursor: str | None
    ) -> Page[Document]:
        """The owner's documents, newest first (``invalid_cursor`` for a cursor not ours)."""
        return await keyset_page(
            lambda n, after: self.documents.list(owner_id, limit=n, after=after),
            limit=limit,
            cursor=cursor,
        )

    async def get_document(self, owner_id: uuid.UUID, document_id: uuid.UUID) -> Document:
        document = await self.documents.get(owner_id, document_id)
        if document is None:
            raise document_not_found()
        return document

    async def delete_document(self, owner_id: uuid.UUID, document_id: uuid.UUID) -> None:
        """The document, its chunks and vectors (the file in storage stays)."""
        if not await self.documents.delete(owner_id, document_id):
            raise document_not_found()

    async def status(self, owner_id: uuid.UUID) -> IndexingStatus:
        configured = self.embedders.configured
        return IndexingStatus(
            active=await self.models.active(),
            configured_model=configured.model,
            configured_dimension=configured.dimension,
            documents=await self.documents.status_counts(owner_id),
        )

    # --- search and answers ---------------------------------------------------------------

    async def search(
        self,
        owner_id: uuid.UUID,
        query: str,
        *,
        k: int,
        mode: SearchMode,
        filters: SearchFilters,
    ) -> SearchResult:
        return await self.retriever.search(owner_id, query, k=k, mode=mode, filters=filters)

    async def answer(
        self,
        owner_id: uuid.UUID,
        question: str,
        *,
        k: int,
        mode: SearchMode,
        filters: SearchFilters,
    ) -> tuple[list[Passage], AsyncIterator[AnswerEvent]]:
        """Retrieval first (its errors come before the stream starts), then the answer's
        events. Counted against the user's answers of the day (429 ``quota_answers_per_day``
        past it) before anything is spent; an answer that fails before it starts is not."""
        day = await self.accounts.usage.count_answer(owner_id)
        try:
            return await self.retriever.answer(owner_id, question, k=k, mode=mode, filters=filters)
        except BaseException:
            await asyncio.shield(self._refund_answer(owner_id, day))
            raise

    async def _refund_answer(self, owner_id: uuid.UUID, day: date) -> None:
        try:
            await self.accounts.usage.refund_answer(owner_id, day)
        except Exception as exc:  # logged: the answer's own error is the one to report
            log.warning("answer_refund_failed", error=type(exc).__name__, detail=str(exc)[:300])

    async def prewarm(self) -> None:
        """Read the active model's HNSW index ahead of the first searches (logged, never raised)."""
        await self.retriever.prewarm()

    # --- indexing (rag-worker) ------------------------------------------------------------

    async def prepare_indexing(self) -> None:
        """The active model's HNSW index, built if missing (a worker's start-up)."""
        active = self.model_status.active
        await self.models.ensure_index(active.model, active.dimension)

    async def on_file_uploaded(self, payload: FileUploadedPayload) -> IndexReport:
        return await self.indexer.on_file_uploaded(payload)

    async def on_file_deleted(self, payload: FileDeletedPayload) -> int:
        return await self.indexer.on_file_deleted(payload)

    async def index_document(self, document_id: uuid.UUID) -> IndexReport:
        return await self.indexer.index(document_id)

    async def requeue_stuck_inline(self) -> int:
        """Inline documents stuck in a working state get a new job (one per attempt)."""
        stuck = await self.documents.stuck(older_than_s=self.settings.stuck_after_s)
        inline = [d for d in stuck if d.source == "inline"]
        for document in inline:
            await self.jobs.index_document(document.id, key=f"attempt-{document.attempts}")
        if inline:
            log.info("inline_documents_requeued", count=len(inline))
        return len(inline)

    # --- the user's account: erasure, quotas, export ---------------------------------------

    async def erase_user(self, user_id: uuid.UUID, requested_at: datetime) -> dict[str, int] | None:
        """``user.deleted``: everything held for the user, in batches (see
        :mod:`.account`); the totals, or None when an earlier run finished it."""
        return await self.accounts.erase(user_id, requested_at=requested_at)

    async def erasure_state(self, user_id: uuid.UUID) -> ErasureState:
        return await self.accounts.erasure_state(user_id)

    async def usage(self, owner_id: uuid.UUID) -> dict[str, QuotaUse]:
        return await self.accounts.usage_of(owner_id)

    def export(self, owner_id: uuid.UUID) -> AsyncIterator[ExportedDocument]:
        return self.accounts.export(owner_id)

    # --- a change of embedding model ------------------------------------------------------

    async def reembed(self, *, batch: int = 256, keep_old: bool = False) -> str:
        """Vectors of the configured model for every chunk, then search switches to it (see
        :mod:`.reembed`); ``nothing to do: ...`` or ``switched from ... to ...``."""
        outcome = await reembed(self.models, self.embedders, batch=batch, keep_old=keep_old)
        self.retriever.forget_active_model()
        return outcome
