"""A stored file as the service knows it: who owns it, where its bytes are, what they are."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime

import msgspec

from xtyl_common.errors import PayloadTooLarge


class FileStatus(enum.StrEnum):
    #: A presigned upload was handed out; the object may not exist yet.
    PENDING = "pending"
    READY = "ready"
    #: Object removed; the row stays as a tombstone so a repeated DELETE is still 204.
    DELETED = "deleted"


class StoredFile(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    owner_id: uuid.UUID
    key: str
    name: str
    content_type: str
    size: int
    sha256: str | None
    status: FileStatus
    created_at: datetime
    updated_at: datetime


class StoredObject(msgspec.Struct, frozen=True, kw_only=True):
    """What an upload wrote to S3, measured while streaming."""

    size: int
    sha256: str


def too_large(max_bytes: int) -> PayloadTooLarge:
    """413 ``file_too_large``: more than ``max_bytes`` (counted as the bytes arrive)."""
    return PayloadTooLarge(
        f"the file is larger than the {max_bytes} bytes allowed",
        code="file_too_large",
        extra={"max_bytes": max_bytes},
    )
