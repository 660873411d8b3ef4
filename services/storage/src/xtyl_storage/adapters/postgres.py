"""``xtyl_storage.files``: who owns which object. Every query is scoped by owner.

A state change and its event (``file.uploaded``, ``file.deleted``, made by the caller: see
:mod:`xtyl_storage.domain.events`) commit in one transaction. Postgres failures become
:class:`~xtyl_common.errors.Unavailable` (``database_unavailable``).

Every transaction that records a file for a user (a ready upload, a presigned upload started
or completed) first refuses a deleted user (``ErasureLedger.refuse_if_erased``: 403
``account_deleted``, and the user's lock taken shared, so it either commits before their
erasure starts or is refused), then checks their quota with the file's size and drops or takes
the upload's reservation (:mod:`xtyl_storage.adapters.usage`). The user's usage row follows
the file rows by trigger (migration 0005).
"""

from __future__ import annotations

import uuid
from contextlib import AbstractAsyncContextManager
from typing import Any

import asyncpg
import structlog

from xtyl_common.db import check_postgres, connection
from xtyl_common.erasure import ErasureLedger
from xtyl_common.events.contracts import FileDeleted, FileUploaded
from xtyl_common.pagination import Cursor, keyset_sql
from xtyl_storage.adapters.idempotency import complete_claim
from xtyl_storage.adapters.outbox import record_event
from xtyl_storage.adapters.usage import drop_hold, hold_room, settle_room
from xtyl_storage.domain.files import FileStatus, StoredFile
from xtyl_storage.domain.idempotency import KeyClaim
from xtyl_storage.domain.quotas import StorageLimits

log = structlog.stdlib.get_logger("xtyl.storage.db")

_COLUMNS = "id, owner_id, key, name, content_type, size, sha256, status, created_at, updated_at"


def _to_file(row: asyncpg.Record) -> StoredFile:
    values: dict[str, Any] = dict(row.items())
    values["status"] = FileStatus(values["status"])
    return StoredFile(**values)


class FileRepository:
    def __init__(
        self,
        pool: asyncpg.Pool,
        ledger: ErasureLedger,
        limits: StorageLimits,
        *,
        timeout_s: float = 10.0,
    ) -> None:
        self._pool = pool
        self._ledger = ledger
        self._limits = limits
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
        """Insert a file whose object is in the bucket, and its ``event``, settling the
        upload's reservation (its id is the file's); with a ``claim``, its Idempotency-Key is
        completed with this file in the same transaction. 403 ``account_deleted`` /
        ``quota_*`` roll it all back."""
        async with self._connection() as conn, conn.transaction():
            await self._ledger.refuse_if_erased(conn, file.owner_id)
            await settle_room(
                conn, file.owner_id, file.id, self._limits, size=file.size, timeout_s=self._timeout
            )
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

    async def add_pending(self, file: StoredFile, *, hold_s: float) -> StoredFile:
        """Insert a presigned upload not completed yet (no event), holding room for its size
        for ``hold_s`` seconds."""
        async with self._connection() as conn, conn.transaction():
            await self._ledger.refuse_if_erased(conn, file.owner_id)
            await hold_room(
                conn,
                file.owner_id,
                file.id,
                self._limits,
                need=file.size,
                want=file.size,
                lease_s=hold_s,
                timeout_s=self._timeout,
            )
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
        """Pending → ready, with ``event``, settling its reservation (403 ``account_deleted`` /
        ``quota_*`` change nothing); safe against a race: a file already ready is returned as
        it is, without a second event."""
        async with self._connection() as conn, conn.transaction():
            await self._ledger.refuse_if_erased(conn, owner_id)
            size = await conn.fetchval(
                "select size from xtyl_storage.files"
                " where id = $1 and owner_id = $2 and status = 'pending' for update",
                file_id,
                owner_id,
                timeout=self._timeout,
            )
            if size is None:
                current = await self._get(conn, owner_id, file_id)
                assert current is not None
                return current
            await settle_room(
                conn, owner_id, file_id, self._limits, size=size, timeout_s=self._timeout
            )
            row = await conn.fetchrow(
                "update xtyl_storage.files set status = 'ready', sha256 = $2, updated_at = now()"  # noqa: S608 - constant columns
                f" where id = $1 returning {_COLUMNS}",
                file_id,
                sha256,
                timeout=self._timeout,
            )
            assert row is not None
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
            else:
                await drop_hold(conn, file_id, timeout_s=self._timeout)
        return True

    async def remove_pending(self, owner_id: uuid.UUID, file_id: uuid.UUID) -> None:
        """Forget a pending upload whose object failed its checks, and its reservation."""
        async with self._connection() as conn, conn.transaction():
            await drop_hold(conn, file_id, timeout_s=self._timeout)
            await conn.execute(
                "delete from xtyl_storage.files where id = $1 and owner_id = $2"
                " and status = 'pending'",
                file_id,
                owner_id,
                timeout=self._timeout,
            )
