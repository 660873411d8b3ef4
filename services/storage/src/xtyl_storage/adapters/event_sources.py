"""What storage announces again when Redis lost events its outbox no longer holds.

The relay's recovery (:mod:`xtyl_common.events.recovery`) and ``make replay`` call
:data:`FILES_SOURCE` with a moment: every file that became ready since then gets its
``file.uploaded`` again, every ready file deleted since then its ``file.deleted``. Consumers
are idempotent (rag keeps one document per file), so announcing a file twice is harmless.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg

from xtyl_common.events.contracts import FILES, Event
from xtyl_common.events.recovery import EventSource
from xtyl_storage.adapters.outbox import OUTBOX_SCHEMA
from xtyl_storage.domain.events import file_deleted, file_uploaded
from xtyl_storage.domain.files import FileStatus, StoredFile

_CHANGED_SINCE = (
    "select id, owner_id, key, name, content_type, size, sha256, status, created_at,"
    " updated_at from xtyl_storage.files where (status = 'ready' and updated_at >= $1)"
    " or (status = 'deleted' and sha256 is not null and deleted_at >= $1)"
    " order by updated_at, id"
)


_TIMEOUT_S = 60.0


async def files_changed_since(conn: asyncpg.Connection, since: datetime) -> list[Event]:
    """``file.uploaded`` for files ready since ``since``, ``file.deleted`` for ready files
    deleted since then (a deleted file has a sha256 only if its upload had completed)."""
    rows = await conn.fetch(_CHANGED_SINCE, since, timeout=_TIMEOUT_S)
    events: list[Event] = []
    for row in rows:
        file = StoredFile(
            id=row["id"],
            owner_id=row["owner_id"],
            key=row["key"],
            name=row["name"],
            content_type=row["content_type"],
            size=row["size"],
            sha256=row["sha256"],
            status=FileStatus(row["status"]),
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        )
        deleted = file.status is FileStatus.DELETED
        events.append(file_deleted(file) if deleted else file_uploaded(file))
    return events


FILES_SOURCE = EventSource(
    name="storage.files", schema=OUTBOX_SCHEMA, domain=FILES, scan=files_changed_since
)
#: Every source of this service (given to its relay, and to ``make replay``).
EVENT_SOURCES: tuple[EventSource, ...] = (FILES_SOURCE,)
