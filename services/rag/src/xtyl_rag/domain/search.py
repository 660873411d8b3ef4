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


#: How many chunks the lexemes that choose a large owner's full-text candidates may bring. A
#: query in plain words shares some word with most of a big owner's chunks; scoring a
#: candidate (BM25 over its tsvector plus its heap read) costs ~5 microseconds (1,000 of
#: them: 4-5 ms, 3,000: 15 ms for an owner of 125,000 chunks, with 0.98-1.0 of the exhaustive
#: BM25 top 10 either way; bench/bench_rag.py), so the
#: candidates are the chunks of the query's rarest lexemes: taken rarest first while their
#: chunk counts add up to at most this budget, and always until they add up to the number of
#: rows asked. Every lexeme of the query still scores the candidates; the frequent ones only
#: stop deciding which chunks are candidates. When the whole query fits, the ranking is
#: exactly BM25 over every chunk sharing a lexeme with the query.
CANDIDATE_BUDGET = 1_000
