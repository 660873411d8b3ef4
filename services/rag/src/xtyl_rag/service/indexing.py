r"""Indexing: a document's bytes or text to chunks and vectors, status visible at every step.

    pending -> extracting -> chunking -> embedding -> ready
                                                   \-> failed (error_code, error)

Failures are of two kinds. The document's fault (it cannot be read, is too large, has no
text; see ``adapters.extraction.REASONS``, plus ``file_not_found``, ``embedder_unavailable``,
``too_many_attempts`` and ``quota_chunks``: its chunks would take the owner past the quota) ends
``failed`` with ``document.failed`` at once: retrying cannot help. A dependency's fault
(storage, the embeddings endpoint or Postgres down) gives the lease back, keeps the error on
the document and raises, so the job is retried with backoff (storage that is not ready yet is
waited for before the document is claimed, up to ``STORAGE_READY_WAIT_S``, costing no try);
if every try fails, the reconciler re-emits the document later, and after
``max_index_attempts`` runs it fails with ``too_many_attempts`` instead of looping. Nothing
stays in a working state silently.

An owner whose erasure began (``user.deleted``) gets nothing more: a ``file.uploaded`` of
theirs is skipped, a run of theirs stops where it is and writes nothing (every transaction that
writes for them refuses them first, see ``DocumentRepository``), and the erasure removes the
rest.

Idempotent: a repeated ``file.uploaded`` for a file whose chunks already come from the same
content (sha256) and model changes nothing.

One run at a time holds a document, through a short lease (``INDEX_LEASE_S``) that a heartbeat
renews every third of its period while the run lives. A run that finds the document held waits
for the lease to run out, at most one lease period: a dead run's lease (its worker was killed,
or Postgres failed under it) runs out within that, and the waiting run takes the document over.
A lease that is renewed meanwhile belongs to a live run elsewhere: :class:`DocumentBusy` is
raised, so the job is retried later; it never counts as done while the work is unfinished.

:func:`stuck_file_finder` is the reconciler's query: ``file.uploaded`` again for file documents
left in a working state (``STUCK_AFTER_S``).

Each stage of a run (download, extract, chunk, embed, store) is timed
(``xtyl_rag_ingest_stage_duration_seconds``, failed stages included) and traced (a span per
stage under the run's ``rag.index``, itself under the job's); the chunks embedded are counted.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Generator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import asyncpg
import numpy as np
import structlog
from asyncpg.pool import PoolConnectionProxy
from structlog.stdlib import BoundLogger

from xtyl_common.erasure import AccountDeleted
from xtyl_common.errors import NotFound, Unavailable
from xtyl_common.events import FileDeletedPayload, FileUploaded, FileUploadedPayload
from xtyl_common.quotas import QuotaExceeded
from xtyl_common.retry import RetryPolicy
from xtyl_common.tracing import tracer
from xtyl_rag.adapters.embedders import MiniLMTokenCounter, Vectors
from xtyl_rag.adapters.extraction import ExtractedText, ExtractionFailed, ExtractorPool
from xtyl_rag.adapters.extraction.detect import CONTENT_TYPES, EXTENSIONS, parse_content_type
from xtyl_rag.adapters.metrics import (
    CHUNKS_EMBEDDED,
    INGEST_STAGE_DURATION,
    INGEST_STAGES,
    IngestStage,
)
from xtyl_rag.adapters.postgres import (
    Claim,
    DocumentRepository,
    EmbeddingModel,
    ModelRegistry,
    NewChunks,
)
from xtyl_rag.adapters.postgres.documents import PRODUCER, stuck_files
from xtyl_rag.adapters.storage import FileTooLarge, StorageClient
from xtyl_rag.adapters.vector_spaces import Embedders
from xtyl_rag.domain.chunking import Chunk, ChunkingPolicy, chunk_text, normalize_text
from xtyl_rag.domain.documents import Document, FileSource, should_index, title_from_filename
from xtyl_rag.domain.quotas import DOCUMENTS_REFUSED

log = structlog.stdlib.get_logger("xtyl.rag.indexing")
_tracer = tracer("xtyl.rag.indexing")

Outcome = Literal["ready", "failed", "skipped", "gone"]
#: vectors computed per embedder call
EMBED_SLICE = 512
#: How much longer than one lease period a run waits for a held document before it calls
#: the holder alive (a live holder renews every third of the period).
LEASE_WAIT_SLACK = 0.2
#: A held document is claimed again this long after its lease runs out.
LEASE_EXPIRY_MARGIN_S = 0.05
#: Claims of a held document, each when the lease read last runs out: the clock (one lease
#: period and a fifth) ends the waiting; the tries only bound a lease that keeps being taken
#: by others just as it runs out.
LEASE_WAIT_TRIES = 20
_T = TypeVar("_T")


@contextmanager
def ingest_stage(stage: IngestStage, document: Document) -> Generator[None]:
    """One stage of a run: a span (``rag.ingest.<stage>``; its attributes the stage and the
    document's source, file or inline) and its time, whether it ends well or not."""
    started = time.perf_counter()
    try:
        with _tracer.start_as_current_span(
            f"rag.ingest.{stage}",
            attributes={"xtyl.rag.stage": stage, "xtyl.rag.source": document.source},
        ):
            yield
    finally:
        INGEST_STAGE_DURATION.labels(stage).observe(time.perf_counter() - started)


def is_supported(content_type: str, name: str) -> bool:
    """A type extraction reads (by content type, else by the name's extension)."""
    media, _ = parse_content_type(content_type)
    if media in CONTENT_TYPES:
        return True
    suffix = name.lower().rpartition(".")[2]
    return f".{suffix}" in EXTENSIONS and media in ("", "application/octet-stream")


class NoEmbedder(Exception):
    """This process has no embedder for the model search reads."""


class DocumentBusy(Unavailable):
    """A live run elsewhere holds the document (it kept renewing its lease): retry later. A
    transient failure (a ``DependencyError``), so the job is retried, never acknowledged."""

    default_code = "document_busy"


class DocumentHeld(DocumentBusy):
    """Another run holds the document until its lease runs out, in ``retry_after_s``."""


class LeaseLost(Exception):
    """The run no longer holds its document (taken over after its lease ran out, or deleted)."""


@dataclass(frozen=True, slots=True)
class IndexReport:
    outcome: Outcome
    chunks: int = 0
    seconds: float = 0.0
    error_code: str | None = None


class Indexer:
    def __init__(
        self,
        *,
        documents: DocumentRepository,
        models: ModelRegistry,
        embedders: Embedders,
        storage: StorageClient,
        extractor: ExtractorPool,
        counter: MiniLMTokenCounter,
        max_document_bytes: int,
        max_attempts: int,
        storage_wait_s: float = 0.0,
        policy: ChunkingPolicy | None = None,
    ) -> None:
        self.documents = documents
        self.models = models
        self.embedders = embedders
        self.storage = storage
        self.extractor = extractor
        self.counter = counter
        self.max_document_bytes = max_document_bytes
        self.max_attempts = max_attempts
        #: How long a file's run waits for storage to be ready before it claims the document.
        self.storage_wait_s = storage_wait_s
        self.policy = policy or ChunkingPolicy()
        lease_s = documents.lease_s
        #: Claims of a held document: each after the wait the lease says (its retry_after_s).
        #: Lease ids of runs inside complete(), whose own lease check is the one that counts.
        self._finishing: set[uuid.UUID] = set()
        self.lease_waits = RetryPolicy(
            attempts=LEASE_WAIT_TRIES,
            timeout_s=None,
            max_retry_after_s=lease_s * (1 + LEASE_WAIT_SLACK) + LEASE_EXPIRY_MARGIN_S,
        )
        for stage in INGEST_STAGES:  # every series from the start: increase() sees the first
            INGEST_STAGE_DURATION.labels(stage)

    # --- events ---------------------------------------------------------------------------

    async def on_file_uploaded(self, payload: FileUploadedPayload) -> IndexReport:
        if not is_supported(payload.content_type, payload.name):
            log.info("file_skipped", file_id=str(payload.file_id), type=payload.content_type)
            return IndexReport("skipped")
        source = FileSource(
            file_id=payload.file_id,
            owner_id=payload.owner_id,
            key=payload.key,
            name=payload.name,
            content_type=payload.content_type,
            size=payload.size,
            sha256=payload.sha256,
        )
        try:
            document = await self.documents.upsert_file(
                source, title=title_from_filename(source.name), record_refusal=True
            )
        except AccountDeleted:
            log.info("file_skipped", file_id=str(payload.file_id), reason="account_deleted")
            return IndexReport("skipped", error_code="account_deleted")
        if document.status == "failed" and document.error_code == DOCUMENTS_REFUSED:
            log.info("document_failed", document_id=str(document.id), reason=DOCUMENTS_REFUSED)
            return IndexReport("failed", error_code=DOCUMENTS_REFUSED)
        return await self.index(document.id)

    async def on_file_deleted(self, payload: FileDeletedPayload) -> int:
        deleted = await self.documents.delete_file(payload.owner_id, payload.file_id)
        log.info("file_documents_deleted", file_id=str(payload.file_id), documents=deleted)
        return deleted

    # --- one document -----------------------------------------------------------------------

    async def index(self, document_id: uuid.UUID, *, data: bytes | None = None) -> IndexReport:
        """Index one document. ``data``: the file's bytes when the caller has them already
        (tests, tools); otherwise they come from storage. Raises (for a later retry) when a
        dependency fails or a live run elsewhere holds the document (:class:`DocumentBusy`).
        A document whose owner's erasure began is ``gone``: nothing of the run is written."""
        try:
            return await self._index(document_id, data=data)
        except AccountDeleted:
            log.info("document_lost", document_id=str(document_id), reason="account_deleted")
            return IndexReport("gone")

    async def _index(self, document_id: uuid.UUID, *, data: bytes | None) -> IndexReport:
        started = time.perf_counter()
        document = await self.documents.find(document_id)
        if document is None:
            return IndexReport("gone")
        writable = await self.models.writable()
        active = next((m for m in writable if m.state == "active"), None)
        if active is None:
            raise RuntimeError("no active embedding model: the process did not register one")
        if not should_index(document, active.model):
            return IndexReport("skipped")
        if data is None and document.source == "file":
            # storage not ready yet (started after this worker, restarting): wait here, before
            # the claim, so the outage costs the document no attempt and the job no try
            await self.storage.wait_ready(within_s=self.storage_wait_s)
        claim = await self._take(document_id)
        if claim is None:  # finished (or failed for good) or deleted while this run waited
            gone = await self.documents.find(document_id) is None
            return IndexReport("gone" if gone else "skipped")
        log_ = log.bind(document_id=str(document_id), owner_id=str(document.owner_id))
        if claim.document.attempts > self.max_attempts:
            reason = f"gave up after {self.max_attempts} attempts"
            if document.error:
                reason += f"; last error: {document.error}"
            await self.documents.fail(
                claim.document, code="too_many_attempts", error=reason, lease_id=claim.lease_id
            )
            log_.warning("document_failed", reason="too_many_attempts")
            return IndexReport("failed", error_code="too_many_attempts")
        try:
            # the stages' spans under one of the run (itself under the job's, when traced)
            with _tracer.start_as_current_span(
                "rag.index", attributes={"xtyl.rag.source": document.source}
            ):
                return await self._while_held(
                    claim,
                    self._run(
                        claim,
                        data=data,
                        model=active.model,
                        writable=writable,
                        started=started,
                        log_=log_,
                    ),
                    log_,
                )
        except LeaseLost:
            log_.info("document_lost", reason="deleted or taken over while indexing")
            return IndexReport("gone", seconds=time.perf_counter() - started)

    async def _run(
        self,
        claim: Claim,
        *,
        data: bytes | None,
        model: str,
        writable: Sequence[EmbeddingModel],
        started: float,
        log_: BoundLogger,
    ) -> IndexReport:
        """Extract, chunk, embed and write one claimed document."""
        document = claim.document
        try:
            # an owner at the chunks quota: no extraction nor embedding is spent on it
            if refusal := await self.documents.chunk_room_refusal(document, 1):
                raise refusal
            extracted = await self._extract(claim, data)
            await self.documents.set_status(claim, "chunking")
            with ingest_stage("chunk", document):
                chunks = await asyncio.to_thread(
                    chunk_text,
                    extracted.text,
                    self.counter,
                    self.policy,
                    page_starts=extracted.pages if extracted.pages else None,
                )
            if not chunks:
                raise ExtractionFailed("no_text", "the document has no text to index")
            if refusal := await self.documents.chunk_room_refusal(document, len(chunks)):
                raise refusal
            await self.documents.set_status(claim, "embedding")
            with ingest_stage("embed", document):
                vectors = await self._embed(chunks, [(m.model, m.dimension) for m in writable])
            if model not in vectors:
                raise NoEmbedder(f"this worker cannot embed with the active model {model}")
            title = extracted.title if document.source == "file" and extracted.title else None
            with ingest_stage("store", document):
                # complete() checks the lease itself and clears it in the transaction that
                # makes the document final: from here the heartbeat's renewals prove nothing
                self._finishing.add(claim.lease_id)
                try:
                    done = await self.documents.complete(
                        claim, NewChunks(chunks=chunks, vectors=vectors, model=model), title=title
                    )
                finally:
                    self._finishing.discard(claim.lease_id)
        except ExtractionFailed as exc:
            await self.documents.fail(
                document, code=exc.reason, error=exc.detail or exc.reason, lease_id=claim.lease_id
            )
            log_.info("document_failed", reason=exc.reason, detail=exc.detail)
            return IndexReport(
                "failed", seconds=time.perf_counter() - started, error_code=exc.reason
            )
        except QuotaExceeded as exc:
            # the document's own fault, as far as retrying goes: it fails, the user is told
            await self.documents.fail(
                document, code=exc.code, error=exc.detail or exc.code, lease_id=claim.lease_id
            )
            log_.info("document_failed", reason=exc.code, detail=exc.detail)
            return IndexReport("failed", seconds=time.perf_counter() - started, error_code=exc.code)
        except AccountDeleted:
            raise  # the owner's erasure began: nothing more is written for them
        except (NotFound, NoEmbedder) as exc:
            code = "file_not_found" if isinstance(exc, NotFound) else "embedder_unavailable"
            await self.documents.fail(document, code=code, error=str(exc), lease_id=claim.lease_id)
            log_.info("document_failed", reason=code)
            return IndexReport("failed", seconds=time.perf_counter() - started, error_code=code)
        except BaseException as exc:
            # a dependency failed, or the job was cancelled: give the document back, retry
            log_.warning("document_retry", error=type(exc).__name__, detail=str(exc)[:300])
            await asyncio.shield(self._release(claim, exc, log_))
            raise
        seconds = time.perf_counter() - started
        if not done:
            raise LeaseLost
        log_.info("document_indexed", chunks=len(chunks), ms=round(seconds * 1000))
        return IndexReport("ready", chunks=len(chunks), seconds=seconds)

    # --- the lease ----------------------------------------------------------------------------

    async def _take(self, document_id: uuid.UUID) -> Claim | None:
        """Claim the document. While another run holds it, try again when its lease runs out
        (:meth:`lease_waits`), within one lease period and a fifth (a dead run's lease runs out
        within it); a lease renewed past that is a live run's: :class:`DocumentBusy`. None:
        final or gone meanwhile."""
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + self.documents.lease_s * (1 + LEASE_WAIT_SLACK)
        held = False

        async def claim() -> Claim | None:
            nonlocal held
            claim = await self.documents.claim(document_id)
            if claim is not None:
                if held:
                    log.info("document_taken_over", document_id=str(document_id))
                return claim
            left = await self.documents.lease_left(document_id)
            if left is None:
                return None
            if loop.time() + left > give_up_at:
                log.info("document_busy", document_id=str(document_id), lease_left_s=left)
                raise DocumentBusy(f"document {document_id} is being indexed by a live run")
            if not held:
                log.info("document_held", document_id=str(document_id), lease_left_s=left)
                held = True
            raise DocumentHeld(
                f"document {document_id} is held for {left:.1f} s more",
                retry_after_s=left + LEASE_EXPIRY_MARGIN_S,
            )

        return await self.lease_waits.call(DocumentHeld, claim)

    async def _while_held(
        self, claim: Claim, work: Coroutine[Any, Any, _T], log_: BoundLogger
    ) -> _T:
        """Run ``work`` while a heartbeat renews the claim's lease; LeaseLost (and ``work``
        cancelled) when the run no longer holds the document."""
        task = asyncio.ensure_future(work)
        beat = asyncio.ensure_future(self._heartbeat(claim, log_))
        try:
            await asyncio.wait((task, beat), return_when=asyncio.FIRST_COMPLETED)
            if not task.done():
                raise LeaseLost  # the run is cancelled on the way out
            return task.result()
        finally:
            for pending in (task, beat):
                pending.cancel()
            await asyncio.gather(task, beat, return_exceptions=True)

    async def _heartbeat(self, claim: Claim, log_: BoundLogger) -> None:
        """Renew the lease every third of its period; return when the run lost it."""
        every = self.documents.lease_s / 3
        while True:
            await asyncio.sleep(every)
            try:
                held = await self.documents.renew(claim, timeout_s=every)
            except Exception as exc:  # logged; complete() checks the lease
                log_.warning("lease_renew_failed", error=type(exc).__name__, detail=str(exc)[:300])
                continue
            if not held:
                if claim.lease_id in self._finishing:
                    continue  # complete() cleared the lease: the run says how it ended
                log_.warning("lease_lost")
                return

    async def _release(self, claim: Claim, exc: BaseException, log_: BoundLogger) -> None:
        try:
            await self.documents.release(claim, f"{type(exc).__name__}: {exc}")
        except Exception as failed:  # logged; the lease runs out by itself
            log_.warning(
                "lease_release_failed",
                error=type(failed).__name__,
                detail=str(failed)[:300],
                expires_in_s=self.documents.lease_s,
            )

    async def _extract(self, claim: Claim, data: bytes | None) -> ExtractedText:
        document = claim.document
        if document.source == "inline":
            with ingest_stage("extract", document):
                text = await self.documents.inline_text(document.id)
                if text is None:
                    raise ExtractionFailed("no_text", "the inline text is gone")
                return ExtractedText(text=await asyncio.to_thread(normalize_text, text))
        return await self._extract_file(document, data)

    async def _extract_file(self, document: Document, data: bytes | None) -> ExtractedText:
        assert document.file_id is not None
        limit = self.max_document_bytes
        if document.size_bytes is not None and document.size_bytes > limit:
            raise ExtractionFailed(
                "too_large", f"the file has {document.size_bytes} bytes, the limit is {limit}"
            )
        if data is None:
            try:
                with ingest_stage("download", document):
                    data = await self.storage.content(
                        document.file_id, document.owner_id, limit=limit
                    )
            except FileTooLarge as exc:
                raise ExtractionFailed("too_large", str(exc)) from None
        with ingest_stage("extract", document):
            return await self.extractor.extract_text(
                data, document.content_type or "", document.file_name or ""
            )

    async def _embed(
        self, chunks: Sequence[Chunk], models: Sequence[tuple[str, int]]
    ) -> dict[str, Vectors]:
        """Vectors of every model this process can embed, in slices."""
        texts = [chunk.content for chunk in chunks]
        out: dict[str, Vectors] = {}
        for model, dimension in models:
            embedder = await self.embedders.for_model(model, dimension)
            if embedder is None:
                continue
            parts: list[Vectors] = []
            for start in range(0, len(texts), EMBED_SLICE):
                parts.append(await embedder.embed(texts[start : start + EMBED_SLICE]))
            out[model] = np.concatenate(parts, axis=0)
            CHUNKS_EMBEDDED.inc(len(texts))
        return out


def stuck_file_finder(
    stuck_after_s: float,
) -> Callable[[asyncpg.Connection | PoolConnectionProxy], Awaitable[list[FileUploaded]]]:
    """The reconciler's query (``reconciler_cron``): ``file.uploaded`` again for file documents
    stuck in a working state for ``stuck_after_s`` (the key is ``""`` for documents added
    through the API, which storage does not say)."""

    async def find_stuck(conn: asyncpg.Connection | PoolConnectionProxy) -> list[FileUploaded]:
        return [
            FileUploaded(
                producer=PRODUCER,
                payload=FileUploadedPayload(
                    file_id=source.file_id,
                    owner_id=source.owner_id,
                    key=source.key or "",
                    name=source.name,
                    content_type=source.content_type,
                    size=source.size,
                    sha256=source.sha256,
                ),
            )
            for source in await stuck_files(conn, older_than_s=stuck_after_s)
        ]

    return find_stuck
