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


#: How many chunks the lexemes that generate full-text candidates may bring (see
#: ``candidate_lexemes``). Ranking a chunk costs ~1-2 µs of ``ts_rank`` plus its heap read.
CANDIDATE_BUDGET = 3_000


def candidate_lexemes(frequencies: dict[str, int], budget: int) -> tuple[list[str], bool]:
    """The query lexemes whose chunks are ranked, rarest first, and whether that is all of
    them.

    ``frequencies`` maps each of the query's lexemes to how many of the owner's chunks hold
    it. Lexemes are taken from the rarest up while their chunks fit in ``budget`` (the rarest
    always, even alone over it); absent ones (0) bring nothing. The frequent words left out
    still count when the candidates are ranked: they only stop deciding which chunks are.
    """
    present = sorted((count, lexeme) for lexeme, count in frequencies.items() if count > 0)
    chosen: list[str] = []
    total = 0
    for count, lexeme in present:
        if chosen and total + count > budget:
            break
        chosen.append(lexeme)
        total += count
    return chosen, len(chosen) == len(present)
