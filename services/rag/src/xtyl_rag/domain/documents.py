"""Documents and their life:
``pending -> extracting -> chunking -> embedding -> ready | failed``."""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime
from pathlib import PurePosixPath
from typing import Any, Literal

import msgspec

DocumentStatus = Literal["pending", "extracting", "chunking", "embedding", "ready", "failed"]
DocumentSource = Literal["file", "inline"]
FINAL_STATUSES: frozenset[str] = frozenset({"ready", "failed"})
WORKING_STATUSES: tuple[DocumentStatus, ...] = ("extracting", "chunking", "embedding")
MAX_TITLE_CHARS = 300


class Document(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    owner_id: uuid.UUID
    source: DocumentSource
    title: str
    status: DocumentStatus
    content_sha256: str
    chunk_count: int
    attempts: int
    created_at: datetime
    updated_at: datetime
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)
    file_id: uuid.UUID | None = None
    file_key: str | None = None
    file_name: str | None = None
    content_type: str | None = None
    size_bytes: int | None = None
    error_code: str | None = None
    error: str | None = None
    indexed_sha256: str | None = None
    embedding_model: str | None = None
    indexed_at: datetime | None = None

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES


class FileSource(msgspec.Struct, frozen=True, kw_only=True):
    """What indexing needs to know about an uploaded file (from file.uploaded or storage)."""

    file_id: uuid.UUID
    owner_id: uuid.UUID
    name: str
    content_type: str
    size: int
    sha256: str
    #: storage's object key (file.uploaded carries it; storage's metadata route does not)
    key: str | None = None


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def title_from_filename(name: str) -> str:
    """``"Quarterly report.final.pdf"`` -> ``"Quarterly report.final"``."""
    stem = PurePosixPath(name.replace("\\", "/")).name
    suffix = PurePosixPath(stem).suffix
    title = stem[: -len(suffix)] if suffix and len(suffix) < len(stem) else stem
    return clip_title(title or name or "untitled")


def clip_title(title: str) -> str:
    title = " ".join(title.split())
    return title[:MAX_TITLE_CHARS] or "untitled"


def should_index(document: Document, model: str) -> bool:
    """False when the chunks are already those of this content and model (a repeated event)."""
    return not (
        document.status == "ready"
        and document.indexed_sha256 == document.content_sha256
        and document.embedding_model == model
    )
