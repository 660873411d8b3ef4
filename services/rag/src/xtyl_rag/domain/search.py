"""What a search asks and what it finds."""

from __future__ import annotations

import uuid
from typing import Any, Literal

import msgspec

SearchMode = Literal["semantic", "fulltext", "hybrid"]
MAX_K = 50


class SearchFilters(msgspec.Struct, frozen=True, kw_only=True):
    document_ids: tuple[uuid.UUID, ...] | None = None
    #: documents whose metadata contains this object (jsonb ``@>``)
    metadata: dict[str, Any] | None = None

    @property
    def empty(self) -> bool:
        return self.document_ids is None and not self.metadata


class RankedChunk(msgspec.Struct, frozen=True):
    """One row of one ranking: the chunk and its score in that ranking."""

    chunk_id: uuid.UUID
    score: float


class ChunkHit(msgspec.Struct, frozen=True, kw_only=True):
    chunk_id: uuid.UUID
    document_id: uuid.UUID
    title: str
    ordinal: int
    content: str
    metadata: dict[str, Any]
    score: float
    semantic_rank: int | None = None
    fulltext_rank: int | None = None
