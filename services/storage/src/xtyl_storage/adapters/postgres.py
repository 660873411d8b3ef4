"""``xtyl_storage.files``: who owns which object. Every query is scoped by owner.

A state change and its event (``file.uploaded``, ``file.deleted``, made by the caller: see
:mod:`xtyl_storage.domain.events`) commit in one transaction. Postgres failures become
:class:`~xtyl_common.errors.Unavailable` (``database_unavailable``).
"""

from __future__ import annotations

import uuid
from contextlib import AbstractAsyncContextManager
from typing import Any

import asyncpg
import structlog

from xtyl_common.db import check_postgres, connection
from xtyl_common.events.contracts import FileDeleted, FileUploaded
from xtyl_common.pagination import Cursor, keyset_sql
from xtyl_storage.adapters.idempotency import complete_claim
from xtyl_storage.adapters.outbox import record_event
from xtyl_storage.domain.files import FileStatus, StoredFile
from xtyl_storage.domain.idempotency import KeyClaim

log = structlog.stdlib.get_logger("xtyl.storage.db")

_COLUMNS = "id, owner_id, key, name, content_type, size, sha256, status, created_at, updated_at"


def _to_file(row: asyncpg.Record) -> StoredFile:
    values: dict[str, Any] = dict(row.items())
    values["status"] = FileStatus(values["status"])
    return StoredFile(**values)


class FileRepository:
    def __init__(self, pool: asyncpg.Pool, *, timeout_s: float = 10.0) -> None:
        self._pool = pool
        self._timeout = timeout_s

    def _connection(self) -> AbstractAsyncContextManager[Any]:
        return connection(
            self._pool,
            timeout_s=self._timeout,
            unavailable="the file catalogue is unavailable, try again later",
        )

    async def check(self) -> None:
        """Readiness: the database answers."""
        await check_postgres(self._pool)

    async def add_ready(
        self, file: StoredFile, *, event: FileUploaded, claim: KeyClaim | None = None
    ) -> StoredFile:
        """Insert a file whose object is in the bucket, and its ``event``; with a ``claim``,
        its Idempotency-Key is completed with this file in the same transaction."""
        async with self._connection() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"insert into xtyl_storage.files ({_COLUMNS})"  # noqa: S608 - constant columns
                " values ($1, $2, $3, $4, $5, $6, $7, 'ready', now(), now())"
                f" returning {_COLUMNS}",
                file.id,
                file.owner_id,
                file.key,
                file.name,
                file.content_type,
                file.size,
                file.sha256,
                timeout=self._timeout,
            )
            assert row is not None
            stored = _to_file(row)
            if claim is not None:
                await complete_claim(conn, claim, stored, timeout_s=self._timeout)
            await record_event(conn, event)
        return stored

    async def add_pending(self, file: StoredFile) -> StoredFile:
        """Insert a presigned upload not completed yet (no event)."""
        async with self._connection() as conn:
            row = await conn.fetchrow(
                f"insert into xtyl_storage.files ({_COLUMNS})"  # noqa: S608 - constant columns
                " values ($1, $2, $3, $4, $5, $6, null, 'pending', now(), now())"
                f" returning {_COLUMNS}",
                file.id,
                file.owner_id,
                file.key,
                file.name,
                file.content_type,
                file.size,
                timeout=self._timeout,
            )
        assert row is not None
        return _to_file(row)

    async def mark_ready(
        self, owner_id: uuid.UUID, file_id: uuid.UUID, sha256: str, *, event: FileUploaded
    ) -> StoredFile:
        """Pending → ready, with ``event``; safe against a race: a file already ready is
        returned as it is, without a second event."""
        async with self._connection() as conn, conn.transaction():
            row = await conn.fetchrow(
                "update xtyl_storage.files set status = 'ready', sha256 = $3, updated_at = now()"  # noqa: S608 - constant columns
                " where id = $1 and owner_id = $2 and status = 'pending'"
                f" returning {_COLUMNS}",
                file_id,
                owner_id,
                sha256,
                timeout=self._timeout,
            )
            if row is None:
                current = await self._get(conn, owner_id, file_id)
                assert current is not None
                return current
            stored = _to_file(row)
            await record_event(conn, event)
        return stored

    async def _get(
        self, conn: asyncpg.Connection, owner_id: uuid.UUID | None, file_id: uuid.UUID
    ) -> StoredFile | None:
        row = await conn.fetchrow(
            f"select {_COLUMNS} from xtyl_storage.files"  # noqa: S608 - constant columns
            " where id = $1 and ($2::uuid is null or owner_id = $2)",
            file_id,
            owner_id,
            timeout=self._timeout,
        )
        return None if row is None else _to_file(row)

    async def get(self, owner_id: uuid.UUID, file_id: uuid.UUID) -> StoredFile | None:
        """The owner's file in any status (tombstones included), else None."""
        async with self._connection() as conn:
            return await self._get(conn, owner_id, file_id)

    async def key_is_recorded(self, key: str) -> bool:
        """Whether any row (in any status) points at the object ``key``."""
        async with self._connection() as conn:
            found = await conn.fetchval(
                "select true from xtyl_storage.files where key = $1", key, timeout=self._timeout
            )
        return bool(found)

    async def get_any_owner(self, file_id: uuid.UUID) -> StoredFile | None:
        """For internal callers (service tokens) only."""
        async with self._connection() as conn:
            return await self._get(conn, None, file_id)

    async def list_ready(
        self, owner_id: uuid.UUID, *, limit: int, after: Cursor | None
    ) -> list[StoredFile]:
        """Newest first, ``limit`` rows after ``after`` (:func:`keyset_sql`)."""
        async with self._connection() as conn:
            rows = await conn.fetch(
                f"select {_COLUMNS} from xtyl_storage.files"  # noqa: S608 - constant columns
                f" where owner_id = $1 and status = 'ready' and {keyset_sql(2)} limit $4",
                owner_id,
                after.created_at if after else None,
                after.id if after else None,
                limit,
                timeout=self._timeout,
            )
        return [_to_file(row) for row in rows]

    async def mark_deleted(
        self, owner_id: uuid.UUID, file_id: uuid.UUID, *, event: FileDeleted
    ) -> bool:
        """Ready/pending → deleted, with ``event`` when it was ready (a pending upload was never
        announced). False when it was deleted already (a repeated or concurrent DELETE)."""
        async with self._connection() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"select {_COLUMNS} from xtyl_storage.files"  # noqa: S608 - constant columns
                " where id = $1 and owner_id = $2 and status <> 'deleted' for update",
                file_id,
                owner_id,
                timeout=self._timeout,
            )
            if row is None:
                return False
            await conn.execute(
                "update xtyl_storage.files set status = 'deleted', deleted_at = now(),"
                " updated_at = now() where id = $1",
                file_id,
                timeout=self._timeout,
            )
            if FileStatus(row["status"]) is FileStatus.READY:
                await record_event(conn, event)
        return True

    async def remove_pending(self, owner_id: uuid.UUID, file_id: uuid.UUID) -> None:
        """Forget a pending upload whose object failed its checks."""
        async with self._connection() as conn:
            await conn.execute(
                "delete from xtyl_storage.files where id = $1 and owner_id = $2"
                " and status = 'pending'",
                file_id,
                owner_id,
                timeout=self._timeout,
            )
