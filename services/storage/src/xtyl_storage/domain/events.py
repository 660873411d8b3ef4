"""What storage announces about a file (``xtyl_common.events`` contracts), made from the file
as it is: ``file.uploaded`` when it becomes ready, ``file.deleted`` when a ready file is
deleted. The use cases hand them to the repository, which writes them to the outbox in the
transaction of the row change; a replay (``adapters/event_sources.py``) makes them again."""

from __future__ import annotations

from xtyl_common.events.contracts import (
    FileDeleted,
    FileDeletedPayload,
    FileUploaded,
    FileUploadedPayload,
)
from xtyl_storage.domain.files import StoredFile

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
