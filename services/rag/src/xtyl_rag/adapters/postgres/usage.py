"""What a user spent of their quotas (``domain/quotas.py``), read and counted in Postgres.

Documents and chunks are counted from the rows themselves (documents but those the documents
quota refused; the owner's chunk count that the chunk triggers keep, migration 0006), checked
under the owner's quota lock (:func:`lock_owner_quotas`) in the transaction that adds them,
so two requests racing at the limit cannot both pass. Answers are counted per UTC day in
``answer_counts`` (migration 0008) by one guarded upsert: Postgres rather than a Redis
``INCR``, because the count then lives (and is erased, and reported) with the user's other
rows, survives a Redis that loses its data (which would hand out a second day's worth), and
the statement is atomic: concurrent upserts of one row queue on its lock and each sees the
count the one before it left, so at the limit exactly the allowed number pass.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import Any

import asyncpg

from xtyl_common.erasure import ErasureLedger
from xtyl_rag.domain.quotas import DOCUMENTS_REFUSED, Usage, UserLimits, answers_exceeded

_QUOTA_LOCK = (
    "select pg_catalog.pg_advisory_xact_lock("
    "pg_catalog.hashtextextended('xtyl:rag:quota:' || $1::uuid::text, 0))"
)
_TODAY = "(pg_catalog.now() at time zone 'UTC')::date"
_COUNT_ANSWER = f"""
insert into xtyl_rag.answer_counts as a (owner_id, day, answers) values ($1, {_TODAY}, 1)
on conflict (owner_id) do update
    set day = excluded.day,
        answers = case when a.day = excluded.day then a.answers + 1 else 1 end
    where a.day <> excluded.day or a.answers < $2
returning day
"""  # noqa: S608 - constants


async def lock_owner_quotas(conn: Any, owner_id: uuid.UUID) -> None:
    """The owner's quota lock until the transaction ends: whoever adds documents or chunks for
    the owner takes it before counting, after the erasure's lock (``refuse_if_erased``) and
    before any row lock."""
    await conn.execute(_QUOTA_LOCK, owner_id)


async def documents_used(conn: Any, owner_id: uuid.UUID) -> int:
    """The owner's documents, but those the documents quota refused (they hold nothing)."""
    used = await conn.fetchval(
        "select count(*) from xtyl_rag.documents"
        " where owner_id = $1 and error_code is distinct from $2",
        owner_id,
        DOCUMENTS_REFUSED,
    )
    return int(used or 0)


async def chunks_used(conn: Any, owner_id: uuid.UUID) -> int:
    """The owner's chunks (kept by the chunk triggers in the transactions that write them)."""
    used = await conn.fetchval(
        "select chunks from xtyl_rag.owner_text_stats where owner_id = $1", owner_id
    )
    return int(used or 0)


class UsageRepository:
    def __init__(self, pool: asyncpg.Pool, *, ledger: ErasureLedger, limits: UserLimits) -> None:
        self._pool = pool
        self._ledger = ledger
        self.limits = limits

    async def usage(self, owner_id: uuid.UUID) -> Usage:
        async with self._pool.acquire() as conn:
            documents = await documents_used(conn, owner_id)
            chunks = await chunks_used(conn, owner_id)
            answers = await conn.fetchval(
                "select answers from xtyl_rag.answer_counts"  # noqa: S608 (a constant)
                f" where owner_id = $1 and day = {_TODAY}",
                owner_id,
            )
        return Usage(documents=documents, chunks=chunks, answers_today=int(answers or 0))

    async def count_answer(self, owner_id: uuid.UUID) -> date:
        """One more answer today (UTC) for the owner; the day it counted on. Raises
        ``DailyQuotaExceeded`` at the limit, ``AccountDeleted`` for an erased user (whose
        counter row the erasure removed and nothing may bring back)."""
        limit = self.limits.answers_per_day
        async with self._pool.acquire() as conn, conn.transaction():
            await self._ledger.refuse_if_erased(conn, owner_id)
            day: date | None = None
            if limit > 0:
                day = await conn.fetchval(_COUNT_ANSWER, owner_id, limit)
            if day is None:
                used = await conn.fetchval(
                    "select answers from xtyl_rag.answer_counts"  # noqa: S608
                    f" where owner_id = $1 and day = {_TODAY}",
                    owner_id,
                )
                raise answers_exceeded(int(used or 0), self.limits, now=datetime.now(UTC))
        return day

    async def refund_answer(self, owner_id: uuid.UUID, day: date) -> None:
        """An answer that failed before it began (retrieval refused or could not run) is not
        counted (only on the day it counted on)."""
        await self._pool.execute(
            "update xtyl_rag.answer_counts set answers = answers - 1"
            " where owner_id = $1 and day = $2 and answers > 0",
            owner_id,
            day,
        )
