"""A user's account in the rag service: their erasure when they are deleted (GDPR Art. 17),
their use of the quotas, and the export of their documents (Art. 15 and 20).

Erasure (``user.deleted``, rag-worker): the ledger marks the user first, in a transaction of its
own (from then on every write for them is refused, ``403 account_deleted``), then their rows go
in batches of ``ERASURE_BATCH_SIZE``, each a short transaction, with ``ERASURE_BATCH_PAUSE_S``
between them: chunks (vectors and word counts with them), documents, leftover statistics, their
published events; the events written before the erasure began are left to the relay to publish
(up to :data:`OUTBOX_WAIT_S`), then deleted too. The ledger then records the totals. A run
killed anywhere is finished by the next delivery; a delivery after the end does nothing.

Export: the user's documents one at a time, each with its text: the chunks joined again
(``domain.chunking.rejoin``: the extracted, normalised text, each overlap once), or, for an
inline document not indexed yet, the text as it was given.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

import structlog

from xtyl_common.erasure import ErasureState
from xtyl_common.pagination import Cursor
from xtyl_common.quotas import QuotaUse
from xtyl_rag.adapters.postgres import DocumentRepository
from xtyl_rag.adapters.postgres.erasure import ErasureRepository
from xtyl_rag.adapters.postgres.export import ExportReader
from xtyl_rag.adapters.postgres.usage import UsageRepository
from xtyl_rag.domain.chunking import rejoin
from xtyl_rag.domain.documents import Document
from xtyl_rag.domain.quotas import usage_report

log = structlog.stdlib.get_logger("xtyl.rag.account")

#: How long an erasure waits for the relay to publish the user's events written before it
#: began (a run that finished just before), to delete them as well.
OUTBOX_WAIT_S = 10.0
OUTBOX_POLL_S = 0.2
#: Documents read per page of an export (their rows only; texts are read one at a time).
EXPORT_PAGE = 100


@dataclass(frozen=True, slots=True)
class ExportedDocument:
    document: Document
    #: The document's text in pieces (joined, it is the whole text); None when the service
    #: holds none for it (a file not indexed yet, or one that failed before chunking).
    text: list[str] | None


class Accounts:
    def __init__(
        self,
        *,
        documents: DocumentRepository,
        erasures: ErasureRepository,
        usage: UsageRepository,
        reader: ExportReader,
        batch_size: int,
        pause_s: float = 0.0,
        outbox_wait_s: float = OUTBOX_WAIT_S,
    ) -> None:
        self.documents = documents
        self.erasures = erasures
        self.usage = usage
        self.reader = reader
        self.batch_size = batch_size
        self.pause_s = pause_s
        self.outbox_wait_s = outbox_wait_s

    # --- erasure ----------------------------------------------------------------------------

    async def erase(self, user_id: uuid.UUID, *, requested_at: datetime) -> dict[str, int] | None:
        """Everything the service holds for the user; the totals, or None when an earlier run
        finished it already."""
        log_ = log.bind(user_id=str(user_id))
        if not await self.erasures.begin(user_id, requested_at=requested_at):
            log_.info("user_erasure_done_before")
            return None
        log_.info("user_erasure_started")
        await self._in_batches(self.erasures.delete_chunks, user_id)
        await self._in_batches(self.erasures.delete_documents, user_id)
        await self._in_batches(self.erasures.delete_lexemes, user_id)
        await self.erasures.delete_owner_rows(user_id)
        await self._in_batches(self.erasures.delete_published_events, user_id)
        if await self._events_published(user_id):
            await self._in_batches(self.erasures.delete_published_events, user_id)
        counts = await self.erasures.complete(user_id)
        log_.info("user_erased", **counts)
        return counts

    async def _in_batches(
        self, step: Callable[[uuid.UUID, int], Awaitable[int]], user_id: uuid.UUID
    ) -> int:
        total = 0
        while True:
            deleted = await step(user_id, self.batch_size)
            total += deleted
            if deleted < self.batch_size:
                return total
            if self.pause_s:
                await asyncio.sleep(self.pause_s)

    async def _events_published(self, user_id: uuid.UUID) -> bool:
        """Wait (up to ``outbox_wait_s``) for the relay to publish the user's events written
        before the erasure began; True when some were waiting and all went out."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.outbox_wait_s
        waited = False
        while unpublished := await self.erasures.unpublished_events(user_id):
            if loop.time() >= deadline:
                # they go out when the relay can; the outbox's pruning removes them later
                log.warning("erasure_events_unpublished", user_id=str(user_id), count=unpublished)
                return False
            waited = True
            await asyncio.sleep(OUTBOX_POLL_S)
        return waited

    async def erasure_state(self, user_id: uuid.UUID) -> ErasureState:
        return await self.erasures.state(user_id)

    # --- quotas -------------------------------------------------------------------------------

    async def usage_of(self, owner_id: uuid.UUID) -> dict[str, QuotaUse]:
        return usage_report(await self.usage.usage(owner_id), self.usage.limits)

    # --- export -------------------------------------------------------------------------------

    async def export(self, owner_id: uuid.UUID) -> AsyncIterator[ExportedDocument]:
        """The owner's documents, newest first, each with its text; one page of rows and one
        document's text in memory at a time."""
        after: Cursor | None = None
        while True:
            page = await self.documents.list(owner_id, limit=EXPORT_PAGE, after=after)
            for document in page:
                yield ExportedDocument(document, await self._text_of(document))
            if len(page) < EXPORT_PAGE:
                return
            after = Cursor(created_at=page[-1].created_at, id=page[-1].id)

    async def _text_of(self, document: Document) -> list[str] | None:
        chunks = await self.reader.chunks(document.owner_id, document.id)
        if chunks:
            return list(rejoin(chunks))
        if document.source == "inline":
            text = await self.reader.inline_text(document.owner_id, document.id)
            return None if text is None else [text]
        return None
