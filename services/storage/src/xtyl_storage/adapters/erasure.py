"""The Postgres side of erasing a deleted user: the ledger (``xtyl_storage.erasures``), the
erasure's running totals (``xtyl_storage.erasure_progress``) and the user's rows, deleted in
batches of short transactions.

Every step is idempotent, so a run killed anywhere is finished by the next one: a batch and
the count of what it deleted commit together; objects are counted after S3 confirmed them (a
run killed between the two undercounts that one batch, never more).
"""

from __future__ import annotations

import uuid
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any

import asyncpg

from xtyl_common.db import connection
from xtyl_common.erasure import ErasureLedger, ErasureState
from xtyl_storage.adapters.outbox import OUTBOX_SCHEMA

#: What an erasure counts, in ``erasures.erased``.
COUNTED = ("files", "objects", "multipart_uploads")

_DELETE_KEYS = """
delete from xtyl_storage.idempotency_keys where (owner_id, key) in (
    select owner_id, key from xtyl_storage.idempotency_keys where owner_id = $1 limit $2
)
"""
_DELETE_FILES = """
delete from xtyl_storage.files where id in (
    select id from xtyl_storage.files where owner_id = $1 limit $2
)
"""
_DELETE_PUBLISHED = f"""
delete from {OUTBOX_SCHEMA}.outbox where seq in (
    select seq from {OUTBOX_SCHEMA}.outbox
    where payload ->> 'owner_id' = $1 and published_at is not null
    limit $2
)
"""  # noqa: S608 - a constant schema
_COUNT = """
insert into xtyl_storage.erasure_progress as p (user_id, {column}) values ($1, $2)
on conflict (user_id) do update set {column} = p.{column} + excluded.{column}
"""


class ErasureRepository:
    def __init__(self, pool: asyncpg.Pool, ledger: ErasureLedger, *, timeout_s: float = 30.0):
        self._pool = pool
        self.ledger = ledger
        self._timeout = timeout_s

    def _connection(self) -> AbstractAsyncContextManager[Any]:
        return connection(
            self._pool,
            timeout_s=self._timeout,
            unavailable="the file catalogue is unavailable, try again later",
        )

    async def begin(
        self,
        user_id: uuid.UUID,
        *,
        requested_at: datetime,
        presign_window_s: float,
    ) -> bool:
        """Mark the user erased (their writes in flight finish first, later ones are refused)
        and note until when presigned PUT URLs handed out to them may still write; False when
        their erasure already completed."""
        async with self._connection() as conn, conn.transaction():
            if not await self.ledger.begin(conn, user_id, requested_at=requested_at):
                return False
            await conn.execute(
                """
                insert into xtyl_storage.erasure_progress as p (user_id, wait_until)
                select $1, max(created_at) + make_interval(secs => $2)
                from xtyl_storage.files where owner_id = $1 and status = 'pending'
                on conflict (user_id) do update
                    set wait_until = greatest(p.wait_until, excluded.wait_until)
                """,
                user_id,
                presign_window_s,
                timeout=self._timeout,
            )
        return True

    async def count(self, user_id: uuid.UUID, what: str, n: int) -> None:
        """Add ``n`` to the erasure's total of ``what`` (objects, multipart uploads)."""
        if n <= 0:
            return
        async with self._connection() as conn:
            await self._count(conn, user_id, what, n)

    async def _count(self, conn: asyncpg.Connection, user_id: uuid.UUID, what: str, n: int) -> None:
        if what not in COUNTED:
            raise ValueError(f"an erasure does not count {what!r}")
        await conn.execute(_COUNT.format(column=what), user_id, n, timeout=self._timeout)

    async def delete_usage(self, user_id: uuid.UUID) -> None:
        """The user's usage row and reservations (no upload of theirs can take any now)."""
        async with self._connection() as conn, conn.transaction():
            await conn.execute(
                "delete from xtyl_storage.reservations where owner_id = $1",
                user_id,
                timeout=self._timeout,
            )
            await conn.execute(
                "delete from xtyl_storage.usage where owner_id = $1",
                user_id,
                timeout=self._timeout,
            )

    async def delete_keys_batch(self, user_id: uuid.UUID, limit: int) -> int:
        """Up to ``limit`` of the user's Idempotency-Keys; how many."""
        async with self._connection() as conn:
            status = await conn.execute(_DELETE_KEYS, user_id, limit, timeout=self._timeout)
        return _affected(status)

    async def delete_files_batch(self, user_id: uuid.UUID, limit: int) -> int:
        """Up to ``limit`` of the user's file rows (any status), counted in the same
        transaction; how many."""
        async with self._connection() as conn, conn.transaction():
            deleted = _affected(
                await conn.execute(_DELETE_FILES, user_id, limit, timeout=self._timeout)
            )
            if deleted:
                await self._count(conn, user_id, "files", deleted)
        return deleted

    async def delete_published_batch(self, user_id: uuid.UUID, limit: int) -> int:
        """Up to ``limit`` of the user's published outbox rows; unpublished ones go out."""
        async with self._connection() as conn:
            status = await conn.execute(
                _DELETE_PUBLISHED, str(user_id), limit, timeout=self._timeout
            )
        return _affected(status)

    async def wait_until(self, user_id: uuid.UUID) -> datetime | None:
        """Until when a presigned PUT URL handed out to the user may still write (or None)."""
        async with self._connection() as conn:
            found: datetime | None = await conn.fetchval(
                "select wait_until from xtyl_storage.erasure_progress where user_id = $1",
                user_id,
                timeout=self._timeout,
            )
        return found

    async def complete(self, user_id: uuid.UUID) -> dict[str, int]:
        """Record the erasure as finished with its totals (and drop the running ones)."""
        async with self._connection() as conn, conn.transaction():
            row = await conn.fetchrow(
                "delete from xtyl_storage.erasure_progress where user_id = $1"
                " returning files, objects, multipart_uploads",
                user_id,
                timeout=self._timeout,
            )
            counts = {what: 0 if row is None else int(row[what]) for what in COUNTED}
            await self.ledger.complete(conn, user_id, counts)
        return counts

    async def state(self, user_id: uuid.UUID) -> ErasureState:
        async with self._connection() as conn:
            return await self.ledger.state(conn, user_id)

    async def is_erased(self, user_id: uuid.UUID) -> bool:
        async with self._connection() as conn:
            return await self.ledger.is_erased(conn, user_id)


def _affected(status: str) -> int:
    """The row count of a command status (``DELETE 42``)."""
    return int(status.rsplit(" ", 1)[-1])
