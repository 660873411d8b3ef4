"""The storage service's events, written to its outbox in the caller's transaction.

The relay in the app's lifespan publishes them to the ``files`` stream.
"""

from __future__ import annotations

import asyncpg

from xtyl_common.events.contracts import (
    FileDeleted,
    FileDeletedPayload,
    FileUploaded,
    FileUploadedPayload,
)
from xtyl_common.events.outbox import add_event
from xtyl_storage.domain.files import StoredFile

#: The schema whose outbox holds our events (migration 0003).
OUTBOX_SCHEMA = "xtyl_storage"
PRODUCER = "storage"


def file_uploaded(file: StoredFile) -> FileUploaded:
    if file.sha256 is None:
        raise ValueError("a ready file always has a sha256")
    return FileUploaded(
        producer=PRODUCER,
        payload=FileUploadedPayload(
            file_id=file.id,
            owner_id=file.owner_id,
            key=file.key,
            name=file.name,
            content_type=file.content_type,
            size=file.size,
            sha256=file.sha256,
        ),
    )


def file_deleted(file: StoredFile) -> FileDeleted:
    return FileDeleted(
        producer=PRODUCER, payload=FileDeletedPayload(file_id=file.id, owner_id=file.owner_id)
    )


async def record_event(conn: asyncpg.Connection, event: FileUploaded | FileDeleted) -> None:
    """Append ``event`` to our outbox on ``conn`` (inside the transaction of the change)."""
    await add_event(conn, event, schema=OUTBOX_SCHEMA)
