"""The Postgres side of erasing a deleted user: the ledger (``xtyl_rag.erasures``), the running
totals (``xtyl_rag.erasure_progress``) and the user's rows, deleted in batches of short
transactions.

What a user has here, and how each goes:

* chunks, ``limit`` a statement; their vectors (``chunk_embeddings``) go with them (on delete
  cascade), and the statement triggers of migrations 0005/0006 take their words out of
  ``owner_lexemes`` and ``owner_text_stats`` in the same transaction;
* documents (with ``inline_sources``), once their chunks are gone, so no cascade is large;
* whatever per-owner statistics are left (``owner_lexemes`` rows, ``owner_text_stats``,
  ``owner_stats``, which the application keeps at 0 rather than deleting) and the answers
  counter: no row names the user afterwards;
* the user's published events in the outbox (``payload.owner_id``).

Every step is idempotent, and a batch commits with the count of what it deleted, so a run killed
anywhere is finished by the next one and the totals stay right.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

import asyncpg

from xtyl_common.erasure import ErasureLedger, ErasureState
from xtyl_rag.adapters.postgres.documents import OUTBOX_SCHEMA

Counted = Literal["documents", "chunks"]

_DELETE_CHUNKS = """
delete from xtyl_rag.chunks where id in (
    select id from xtyl_rag.chunks where owner_id = $1 limit $2
)
"""
_DELETE_DOCUMENTS = """
delete from xtyl_rag.documents where id in (
    select id from xtyl_rag.documents where owner_id = $1 limit $2
)
"""
_DELETE_LEXEMES = """
delete from xtyl_rag.owner_lexemes where (owner_id, lexeme) in (
    select owner_id, lexeme from xtyl_rag.owner_lexemes where owner_id = $1 limit $2
)
"""
_DELETE_PUBLISHED = f"""
delete from {OUTBOX_SCHEMA}.outbox where seq in (
    select seq from {OUTBOX_SCHEMA}.outbox
    where payload ->> 'owner_id' = $1 and published_at is not null
    limit $2
)
"""  # noqa: S608 - a constant schema
_UNPUBLISHED = f"""
select count(*) from {OUTBOX_SCHEMA}.outbox
where payload ->> 'owner_id' = $1 and published_at is null
"""  # noqa: S608 - a constant schema
_COUNT = """
insert into xtyl_rag.erasure_progress as p (user_id, {column}) values ($1, $2)
on conflict (user_id) do update set {column} = p.{column} + excluded.{column}
"""


def _affected(status: str) -> int:
    """Rows of a ``DELETE n`` command status."""
    return int(status.rsplit(" ", 1)[-1])


class ErasureRepository:
    def __init__(self, pool: asyncpg.Pool, ledger: ErasureLedger) -> None:
        self._pool = pool
        self.ledger = ledger

    async def begin(self, user_id: uuid.UUID, *, requested_at: datetime) -> bool:
        """Mark the user erased, in a transaction of its own (their writes in flight finish
        first, later ones are refused); False when their erasure already completed."""
        async with self._pool.acquire() as conn, conn.transaction():
            return await self.ledger.begin(conn, user_id, requested_at=requested_at)

    async def delete_chunks(self, user_id: uuid.UUID, limit: int) -> int:
        """Up to ``limit`` of the user's chunks (their vectors and word counts with them),
        counted in the same transaction; how many."""
        return await self._delete_counted(_DELETE_CHUNKS, "chunks", user_id, limit)

    async def delete_documents(self, user_id: uuid.UUID, limit: int) -> int:
        """Up to ``limit`` of the user's documents (and inline texts), counted; how many."""
        return await self._delete_counted(_DELETE_DOCUMENTS, "documents", user_id, limit)

    async def _delete_counted(
        self, statement: str, counted: Counted, user_id: uuid.UUID, limit: int
    ) -> int:
        async with self._pool.acquire() as conn, conn.transaction():
            deleted = _affected(await conn.execute(statement, user_id, limit))
            if deleted:
                await conn.execute(_COUNT.format(column=counted), user_id, deleted)
        return deleted

    async def delete_lexemes(self, user_id: uuid.UUID, limit: int) -> int:
        """Up to ``limit`` of the user's word counts left over (the chunk triggers remove
        those that reach 0; none should be left); how many."""
        return _affected(await self._pool.execute(_DELETE_LEXEMES, user_id, limit))

    async def delete_owner_rows(self, user_id: uuid.UUID) -> None:
        """The user's one-row statistics and counters."""
        async with self._pool.acquire() as conn, conn.transaction():
            for table in ("owner_text_stats", "owner_stats", "answer_counts"):
                await conn.execute(
                    f"delete from xtyl_rag.{table} where owner_id = $1",  # noqa: S608 (constant)
                    user_id,
                )

    async def delete_published_events(self, user_id: uuid.UUID, limit: int) -> int:
        """Up to ``limit`` of the user's published outbox rows; unpublished ones go out."""
        return _affected(await self._pool.execute(_DELETE_PUBLISHED, str(user_id), limit))

    async def unpublished_events(self, user_id: uuid.UUID) -> int:
        """The user's outbox rows the relay has not published yet."""
        found = await self._pool.fetchval(_UNPUBLISHED, str(user_id))
        return int(found or 0)

    async def complete(self, user_id: uuid.UUID) -> dict[str, int]:
        """Record the erasure as finished with its totals (and drop the running ones)."""
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "delete from xtyl_rag.erasure_progress where user_id = $1"
                " returning documents, chunks",
                user_id,
            )
            counts = {
                "documents": int(row["documents"]) if row else 0,
                "chunks": int(row["chunks"]) if row else 0,
            }
            await self.ledger.complete(conn, user_id, counts)
        return counts

    async def state(self, user_id: uuid.UUID) -> ErasureState:
        async with self._pool.acquire() as conn:
            return await self.ledger.state(conn, user_id)
