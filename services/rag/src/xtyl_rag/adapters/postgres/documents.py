"""``xtyl_rag.documents`` and what belongs to one: its inline text, chunks and vectors.

Indexing holds a document through a *lease* (``lease_id``, ``lease_until``): a run claims it,
renews it (:meth:`DocumentRepository.renew`, a heartbeat while the run lives), moves its status
along, and writes the result only while its lease is still the document's. So two deliveries
of one event never index one document twice at once, a run whose worker died is taken over
once its short lease runs out, and a document deleted meanwhile is not brought back. The
result (chunks, vectors, owner counts, ``ready`` and the ``document.indexed`` event) is written
in one transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import asyncpg
import msgspec
from asyncpg.pool import PoolConnectionProxy

from xtyl_common.erasure import ErasureLedger
from xtyl_common.events import (
    DocumentFailed,
    DocumentFailedPayload,
    DocumentIndexed,
    DocumentIndexedPayload,
    add_event,
)
from xtyl_common.pagination import Cursor, keyset_sql
from xtyl_common.quotas import QuotaExceeded
from xtyl_rag.adapters.embedders import Vectors
from xtyl_rag.adapters.postgres.usage import (
    chunks_used,
    documents_used,
    lock_owner_quotas,
)
from xtyl_rag.domain.chunking import Chunk
from xtyl_rag.domain.documents import Document, DocumentStatus, FileSource
from xtyl_rag.domain.quotas import (
    DOCUMENTS_REFUSED,
    UserLimits,
    chunks_exceeded,
    documents_exceeded,
)

#: The schema whose outbox holds our events (migration 0003).
OUTBOX_SCHEMA = "xtyl_rag"
PRODUCER = "rag"
#: Documents of users whose erasure has begun are not worked on (their rows are going).
_NOT_ERASED = "not exists (select 1 from xtyl_rag.erasures e where e.user_id = {owner})"

_COLUMNS = (
    "id, owner_id, source, title, status, content_sha256, chunk_count, attempts, created_at,"
    " updated_at, metadata, file_id, file_key, file_name, content_type, size_bytes, error_code,"
    " error, indexed_sha256, embedding_model, indexed_at"
)
_metadata_encoder = msgspec.json.Encoder()


def _document(row: asyncpg.Record) -> Document:
    return Document(**{key: row[key] for key in _KEYS})


_KEYS = tuple(name.strip() for name in _COLUMNS.split(","))


@dataclass(frozen=True, slots=True)
class Claim:
    """A document held by one indexing run."""

    document: Document
    lease_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class NewChunks:
    chunks: Sequence[Chunk]
    #: model name -> one unit vector per chunk, in chunk order
    vectors: Mapping[str, Vectors]
    #: the model search reads now (recorded on the document)
    model: str


class DocumentRepository:
    """Every transaction that writes new data for a user (a document, its chunks, an event
    naming them) first takes the user's erasure lock and refuses an erased user
    (``ErasureLedger.refuse_if_erased``, ``403 account_deleted``), then, where it adds
    documents or chunks, the user's quota lock (:func:`lock_owner_quotas`) before counting."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        lease_s: float = 30.0,
        ledger: ErasureLedger | None = None,
        limits: UserLimits | None = None,
    ) -> None:
        self._pool = pool
        #: How long a claim or a renewal holds a document (``INDEX_LEASE_S``).
        self.lease_s = lease_s
        self._lease = timedelta(seconds=lease_s)
        self.ledger = ledger or ErasureLedger(OUTBOX_SCHEMA)
        self.limits = limits or UserLimits()

    # --- the API -------------------------------------------------------------------------

    async def create_inline(
        self, owner_id: uuid.UUID, *, title: str, text: str, sha256: str, metadata: dict[str, Any]
    ) -> Document:
        """A new ``pending`` inline document; ``QuotaExceeded`` (documents, or chunks already
        at their limit), ``AccountDeleted``."""
        async with self._pool.acquire() as conn, conn.transaction():
            await self.ledger.refuse_if_erased(conn, owner_id)
            await lock_owner_quotas(conn, owner_id)
            refusal = await self._new_document_refusal(conn, owner_id)
            if refusal is not None:
                raise refusal
            row = await conn.fetchrow(
                "insert into xtyl_rag.documents (owner_id, source, title, metadata,"  # noqa: S608
                " content_sha256, size_bytes) values ($1, 'inline', $2, $3::jsonb, $4, $5)"
                f" returning {_COLUMNS}",
                owner_id,
                title,
                metadata,
                sha256,
                len(text.encode("utf-8", "surrogatepass")),
            )
            assert row is not None
            await conn.execute(
                "insert into xtyl_rag.inline_sources (document_id, text) values ($1, $2)",
                row["id"],
                text,
            )
        return _document(row)

    async def upsert_file(
        self,
        source: FileSource,
        *,
        title: str,
        metadata: dict[str, Any] | None = None,
        retry_failed: bool = False,
        record_refusal: bool = False,
    ) -> Document:
        """The file's document, created ``pending`` if new. A known file keeps its row; it is
        queued again (``pending``, attempts reset) when its content changed, or when it had
        failed and ``retry_failed`` (an explicit ``POST /v1/documents``) asks for it.

        A new document past the user's quotas (documents; chunks already at their limit)
        raises ``QuotaExceeded``; with ``record_refusal`` (an upload's ``file.uploaded``: the
        user is not waiting on an answer) it is stored ``failed`` with the quota's code and
        ``document.failed`` instead, so they are told, and nothing retries it. A document the
        documents quota refused is not counted; it is admitted (``pending``) when there is
        room and its upload is asked again or changed. ``AccountDeleted`` for an erased user."""
        async with self._pool.acquire() as conn, conn.transaction():
            await self.ledger.refuse_if_erased(conn, source.owner_id)
            await lock_owner_quotas(conn, source.owner_id)
            known = await conn.fetchrow(
                "select status, error_code, chunk_count, content_sha256 from xtyl_rag.documents"
                " where owner_id = $1 and file_id = $2 for update",
                source.owner_id,
                source.file_id,
            )
            refused = known is not None and known["error_code"] == DOCUMENTS_REFUSED
            queued = (
                known is None
                or (known["status"] == "failed" and retry_failed)
                or known["content_sha256"] != source.sha256
            )
            refusal = None
            if known is None or (refused and queued):
                refusal = await self._new_document_refusal(conn, source.owner_id)
            elif queued and not record_refusal and int(known["chunk_count"]) == 0:
                refusal = chunks_exceeded(await chunks_used(conn, source.owner_id), 1, self.limits)
            if refusal is not None and not record_refusal:
                raise refusal
            if refusal is not None:
                return await self._refused_file(conn, source, title, metadata, refusal)
            return await self._upsert_file(
                conn, source, title, metadata, retry_failed=retry_failed, admit=refused and queued
            )

    async def _new_document_refusal(self, conn: Any, owner_id: uuid.UUID) -> QuotaExceeded | None:
        """Why one more document of the owner is refused (under their quota lock), or None."""
        documents = await documents_used(conn, owner_id)
        chunks = await chunks_used(conn, owner_id)
        return documents_exceeded(documents, self.limits) or chunks_exceeded(chunks, 1, self.limits)

    async def _refused_file(
        self,
        conn: Any,
        source: FileSource,
        title: str,
        metadata: dict[str, Any] | None,
        refusal: QuotaExceeded,
    ) -> Document:
        """The file's document ``failed`` with the quota's code, and ``document.failed`` when
        the row is new; a known one (refused before) stays as it is."""
        row = await conn.fetchrow(
            "insert into xtyl_rag.documents (owner_id, source, file_id, file_key, file_name,"  # noqa: S608
            " content_type, size_bytes, title, metadata, content_sha256, status, error_code,"
            " error) values ($1, 'file', $2, $3, $4, $5, $6, $7,"
            " coalesce($8::jsonb, '{}'::jsonb), $9, 'failed', $10, $11)"
            " on conflict (owner_id, file_id) where file_id is not null do nothing"
            f" returning {_COLUMNS}",
            source.owner_id,
            source.file_id,
            source.key,
            source.name,
            source.content_type,
            source.size,
            title,
            metadata,
            source.sha256,
            refusal.code,
            (refusal.detail or refusal.code)[:2000],
        )
        if row is None:
            row = await conn.fetchrow(
                f"select {_COLUMNS} from xtyl_rag.documents"  # noqa: S608
                " where owner_id = $1 and file_id = $2",
                source.owner_id,
                source.file_id,
            )
            assert row is not None
            return _document(row)
        document = _document(row)
        await add_event(
            conn,
            DocumentFailed(
                producer=PRODUCER,
                payload=DocumentFailedPayload(
                    document_id=document.id,
                    owner_id=document.owner_id,
                    reason=refusal.code,
                    file_id=document.file_id,
                ),
            ),
            schema=OUTBOX_SCHEMA,
        )
        return document

    async def _upsert_file(
        self,
        conn: Any,
        source: FileSource,
        title: str,
        metadata: dict[str, Any] | None,
        *,
        retry_failed: bool,
        admit: bool,
    ) -> Document:
        row = await conn.fetchrow(
            "insert into xtyl_rag.documents as d (owner_id, source, file_id, file_key, file_name,"  # noqa: S608
            " content_type, size_bytes, title, metadata, content_sha256)"
            " values ($1, 'file', $2, $3, $4, $5, $6, $7, coalesce($8::jsonb, '{}'::jsonb), $9)"
            " on conflict (owner_id, file_id) where file_id is not null do update set"
            " file_key = excluded.file_key, file_name = excluded.file_name,"
            " content_type = excluded.content_type, size_bytes = excluded.size_bytes,"
            " metadata = case when $8::jsonb is null then d.metadata else excluded.metadata end,"
            " content_sha256 = excluded.content_sha256,"
            " status = case when d.content_sha256 <> excluded.content_sha256"
            "   or ($10 and d.status = 'failed') or $11::boolean then 'pending' else d.status end,"
            " attempts = case when d.content_sha256 <> excluded.content_sha256"
            "   or ($10 and d.status = 'failed') or $11::boolean then 0 else d.attempts end,"
            " error_code = case when ($10 and d.status = 'failed') or $11::boolean then null"
            "   else d.error_code end,"
            " error = case when ($10 and d.status = 'failed') or $11::boolean then null"
            "   else d.error end,"
            # a repeated event changes nothing, so it must not look like progress (the
            # reconciler finds stuck documents by an old updated_at)
            " updated_at = case when ($10 and d.status = 'failed') or $11::boolean"
            "   or (d.file_key, d.file_name, d.content_type, d.size_bytes, d.content_sha256)"
            "   is distinct from (excluded.file_key, excluded.file_name, excluded.content_type,"
            "   excluded.size_bytes, excluded.content_sha256)"
            "   or ($8::jsonb is not null and d.metadata <> excluded.metadata)"
            "   then now() else d.updated_at end"
            f" returning {_COLUMNS}",
            source.owner_id,
            source.file_id,
            source.key,
            source.name,
            source.content_type,
            source.size,
            title,
            metadata,
            source.sha256,
            retry_failed,
            admit,
        )
        assert row is not None
        return _document(row)

    async def get(self, owner_id: uuid.UUID, document_id: uuid.UUID) -> Document | None:
        row = await self._pool.fetchrow(
            f"select {_COLUMNS} from xtyl_rag.documents where owner_id = $1 and id = $2",  # noqa: S608
            owner_id,
            document_id,
        )
        return None if row is None else _document(row)

    async def list(
        self, owner_id: uuid.UUID, *, limit: int, after: Cursor | None
    ) -> list[Document]:
        """Up to ``limit`` of the owner's documents after ``after``, newest first."""
        rows = await self._pool.fetch(
            f"select {_COLUMNS} from xtyl_rag.documents"  # noqa: S608
            f" where owner_id = $1 and {keyset_sql(2)} limit $4",
            owner_id,
            after.created_at if after else None,
            after.id if after else None,
            limit,
        )
        return [_document(row) for row in rows]

    async def delete(self, owner_id: uuid.UUID, document_id: uuid.UUID) -> bool:
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "delete from xtyl_rag.documents where owner_id = $1 and id = $2"
                " returning owner_id, chunk_count",
                owner_id,
                document_id,
            )
            await _forget_chunks(conn, rows)
        return bool(rows)

    async def delete_file(self, owner_id: uuid.UUID, file_id: uuid.UUID) -> int:
        """``file.deleted``: the file's document, chunks and vectors; documents deleted."""
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "delete from xtyl_rag.documents where owner_id = $1 and file_id = $2"
                " returning owner_id, chunk_count",
                owner_id,
                file_id,
            )
            await _forget_chunks(conn, rows)
        return len(rows)

    async def status_counts(self, owner_id: uuid.UUID) -> dict[str, int]:
        rows = await self._pool.fetch(
            "select status, count(*) as n from xtyl_rag.documents where owner_id = $1"
            " group by status",
            owner_id,
        )
        return {row["status"]: int(row["n"]) for row in rows}

    # --- indexing ------------------------------------------------------------------------

    async def find(self, document_id: uuid.UUID) -> Document | None:
        row = await self._pool.fetchrow(
            f"select {_COLUMNS} from xtyl_rag.documents where id = $1",  # noqa: S608
            document_id,
        )
        return None if row is None else _document(row)

    async def claim(self, document_id: uuid.UUID) -> Claim | None:
        """Hold a document that waits for indexing (``pending``, or a run whose lease ran
        out): status ``extracting``, one more attempt. None: final, held, or gone (see
        :meth:`lease_left`)."""
        lease_id = uuid.uuid4()
        row = await self._pool.fetchrow(
            "update xtyl_rag.documents set status = 'extracting', attempts = attempts + 1,"  # noqa: S608
            " lease_id = $2, lease_until = now() + $3, updated_at = now()"
            " where id = $1 and status not in ('ready', 'failed')"
            " and (lease_until is null or lease_until < now())"
            f" and {_NOT_ERASED.format(owner='documents.owner_id')}"
            f" returning {_COLUMNS}",
            document_id,
            lease_id,
            self._lease,
        )
        return None if row is None else Claim(_document(row), lease_id)

    async def lease_left(self, document_id: uuid.UUID) -> float | None:
        """Seconds until another run's lease on the document runs out (0 when nobody holds
        it); None when the document is final or gone."""
        left: float | None = await self._pool.fetchval(
            "select greatest(coalesce(extract(epoch from lease_until - now()), 0), 0)::float8"
            " from xtyl_rag.documents where id = $1 and status not in ('ready', 'failed')",
            document_id,
        )
        return left

    async def renew(self, claim: Claim, *, timeout_s: float) -> bool:
        """The run's heartbeat: hold the document one more lease period; False when the run
        lost it (taken over after its lease ran out, finished, or deleted). Not progress, so
        ``updated_at`` stays."""
        result = await self._pool.execute(
            "update xtyl_rag.documents set lease_until = now() + $3"
            " where id = $1 and lease_id = $2",
            claim.document.id,
            claim.lease_id,
            self._lease,
            timeout=timeout_s,
        )
        return result.endswith(" 1")

    async def set_status(self, claim: Claim, status: DocumentStatus) -> bool:
        """Move the document on (and renew the lease); False if the run lost it."""
        result = await self._pool.execute(
            "update xtyl_rag.documents set status = $3, updated_at = now(),"
            " lease_until = now() + $4 where id = $1 and lease_id = $2",
            claim.document.id,
            claim.lease_id,
            status,
            self._lease,
        )
        return result.endswith(" 1")

    async def release(self, claim: Claim, error: str) -> None:
        """A run stops on a passing failure (a dependency was down): the lease is given back
        and the error kept; the retry (or the reconciler) claims it again. Should this fail
        too (Postgres down), the lease runs out by itself within one lease period."""
        await self._pool.execute(
            "update xtyl_rag.documents set lease_id = null, lease_until = null, error = $3,"
            " updated_at = now() where id = $1 and lease_id = $2",
            claim.document.id,
            claim.lease_id,
            error[:2000],
        )

    async def inline_text(self, document_id: uuid.UUID) -> str | None:
        text: str | None = await self._pool.fetchval(
            "select text from xtyl_rag.inline_sources where document_id = $1", document_id
        )
        return text

    async def fail(
        self, document: Document, *, code: str, error: str, lease_id: uuid.UUID | None
    ) -> bool:
        """``failed`` with the reason, and ``document.failed``, in one transaction. With a
        ``lease_id`` only while the run still holds the document. ``AccountDeleted`` once the
        owner's erasure began (no event names them any more)."""
        async with self._pool.acquire() as conn, conn.transaction():
            await self.ledger.refuse_if_erased(conn, document.owner_id)
            row = await conn.fetchrow(
                "update xtyl_rag.documents set status = 'failed', error_code = $2, error = $3,"
                " lease_id = null, lease_until = null, updated_at = now()"
                " where id = $1 and ($4::uuid is null or lease_id = $4) returning id",
                document.id,
                code,
                error[:2000],
                lease_id,
            )
            if row is None:
                return False
            await add_event(
                conn,
                DocumentFailed(
                    producer=PRODUCER,
                    payload=DocumentFailedPayload(
                        document_id=document.id,
                        owner_id=document.owner_id,
                        reason=code,
                        file_id=document.file_id,
                    ),
                ),
                schema=OUTBOX_SCHEMA,
            )
        return True

    async def complete(self, claim: Claim, new: NewChunks, *, title: str | None = None) -> bool:
        """Replace the document's chunks and vectors, mark it ``ready`` and emit
        ``document.indexed``, in one transaction; False if the run no longer holds it.
        ``AccountDeleted`` once the owner's erasure began (a run finishing meanwhile writes
        nothing: it either committed before the erasure started, which then removes it, or
        is refused); ``QuotaExceeded`` when the chunks would take the owner past the quota
        (counted under the owner's quota lock, so runs finishing together cannot both)."""
        document = claim.document
        async with self._pool.acquire() as conn, conn.transaction():
            await self.ledger.refuse_if_erased(conn, document.owner_id)
            await lock_owner_quotas(conn, document.owner_id)
            held = await conn.fetchrow(
                "select chunk_count from xtyl_rag.documents where id = $1 and lease_id = $2"
                " for update",
                document.id,
                claim.lease_id,
            )
            if held is None:
                return False
            others = await chunks_used(conn, document.owner_id) - int(held["chunk_count"])
            refusal = chunks_exceeded(others, len(new.chunks), self.limits)
            if refusal is not None:
                raise refusal
            writable = {
                row["model"]
                for row in await conn.fetch(
                    "select model from xtyl_rag.embedding_models"
                    " where state in ('active', 'building') for share"
                )
            }
            await conn.execute("delete from xtyl_rag.chunks where document_id = $1", document.id)
            ids = [uuid.uuid4() for _ in new.chunks]
            await conn.execute(
                "insert into xtyl_rag.chunks (id, document_id, owner_id, ordinal, content,"
                " token_count, metadata) select u.id, $2, $3, u.ordinal, u.content, u.tokens,"
                " u.metadata::jsonb from unnest($1::uuid[], $4::int[], $5::text[], $6::int[],"
                " $7::text[]) as u(id, ordinal, content, tokens, metadata)",
                ids,
                document.id,
                document.owner_id,
                [chunk.ordinal for chunk in new.chunks],
                [chunk.content for chunk in new.chunks],
                [chunk.token_count for chunk in new.chunks],
                [
                    _metadata_encoder.encode(chunk.stored_metadata()).decode()
                    for chunk in new.chunks
                ],
            )
            for model, vectors in new.vectors.items():
                if model not in writable:
                    continue
                await conn.copy_records_to_table(
                    "chunk_embeddings",
                    schema_name="xtyl_rag",
                    columns=["chunk_id", "model", "owner_id", "document_id", "embedding"],
                    records=[
                        (chunk_id, model, document.owner_id, document.id, vector)
                        for chunk_id, vector in zip(ids, vectors, strict=True)
                    ],
                )
            delta = len(ids) - int(held["chunk_count"])
            await _add_owner_chunks(conn, document.owner_id, delta)
            await conn.execute(
                "update xtyl_rag.documents set status = 'ready', chunk_count = $2,"
                " indexed_sha256 = content_sha256, embedding_model = $3, indexed_at = now(),"
                " title = coalesce($4, title), error_code = null, error = null,"
                " lease_id = null, lease_until = null, updated_at = now() where id = $1",
                document.id,
                len(ids),
                new.model,
                title,
            )
            await conn.execute(
                "delete from xtyl_rag.inline_sources where document_id = $1", document.id
            )
            await add_event(
                conn,
                DocumentIndexed(
                    producer=PRODUCER,
                    payload=DocumentIndexedPayload(
                        document_id=document.id,
                        owner_id=document.owner_id,
                        title=title or document.title,
                        chunk_count=len(ids),
                        file_id=document.file_id,
                    ),
                ),
                schema=OUTBOX_SCHEMA,
            )
        return True

    async def stuck(self, *, older_than_s: float, limit: int = 500) -> list[Document]:
        """Documents not in a final state, untouched for ``older_than_s`` and not held."""
        rows = await self._pool.fetch(
            f"select {_COLUMNS} from xtyl_rag.documents"  # noqa: S608
            " where status not in ('ready', 'failed') and updated_at < now() - $1::interval"
            " and (lease_until is null or lease_until < now())"
            f" and {_NOT_ERASED.format(owner='documents.owner_id')}"
            " order by updated_at limit $2",
            timedelta(seconds=older_than_s),
            limit,
        )
        return [_document(row) for row in rows]

    async def chunk_room_refusal(self, document: Document, adding: int) -> QuotaExceeded | None:
        """Whether ``adding`` chunks in place of the document's own would take its owner past
        the chunks quota (a check ahead of the work; :meth:`complete` checks again)."""
        used = await chunks_used(self._pool, document.owner_id)
        return chunks_exceeded(used - document.chunk_count, adding, self.limits)


async def stuck_files(
    conn: asyncpg.Connection | PoolConnectionProxy, *, older_than_s: float, limit: int = 500
) -> list[FileSource]:
    """File documents not in a final state, untouched for ``older_than_s`` and not held: what
    their ``file.uploaded`` said (the key is None for documents added through the API, whose
    storage metadata does not give it). On the caller's connection (the reconciler's
    transaction)."""
    rows = await conn.fetch(
        "select owner_id, file_id, file_key, file_name, content_type, size_bytes,"  # noqa: S608
        " content_sha256 from xtyl_rag.documents where source = 'file'"
        " and status not in ('ready', 'failed') and updated_at < now() - $1::interval"
        " and (lease_until is null or lease_until < now())"
        f" and {_NOT_ERASED.format(owner='documents.owner_id')} order by updated_at limit $2",
        timedelta(seconds=older_than_s),
        limit,
    )
    return [
        FileSource(
            file_id=row["file_id"],
            owner_id=row["owner_id"],
            key=row["file_key"],
            name=row["file_name"] or "",
            content_type=row["content_type"] or "",
            size=row["size_bytes"] or 0,
            sha256=row["content_sha256"],
        )
        for row in rows
    ]


async def _forget_chunks(conn: Any, rows: Sequence[asyncpg.Record]) -> None:
    for row in rows:
        await _add_owner_chunks(conn, row["owner_id"], -int(row["chunk_count"]))


async def _add_owner_chunks(conn: Any, owner_id: uuid.UUID, delta: int) -> None:
    """The owner's chunk count moved by ``delta``: chunks removed only lower a row there is
    (a delete racing an erasure must not bring back the row the erasure removed)."""
    if delta == 0:
        return
    if delta < 0:
        await conn.execute(
            "update xtyl_rag.owner_stats set chunk_count = greatest(chunk_count + $2, 0)"
            " where owner_id = $1",
            owner_id,
            delta,
        )
        return
    await conn.execute(
        "insert into xtyl_rag.owner_stats as s (owner_id, chunk_count) values ($1, greatest($2, 0))"
        " on conflict (owner_id) do update set chunk_count = greatest(s.chunk_count + $2, 0)",
        owner_id,
        delta,
    )
