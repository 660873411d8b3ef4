"""Reading one user's documents' text for their export (``GET /internal/me/export``): one
document at a time, each read by one statement (one consistent state of its chunks)."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg


class ExportReader:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def chunks(
        self, owner_id: uuid.UUID, document_id: uuid.UUID
    ) -> list[tuple[str, dict[str, Any]]]:
        """The document's chunks in order: ``(content, metadata)``."""
        rows = await self._pool.fetch(
            "select content, metadata from xtyl_rag.chunks"
            " where document_id = $1 and owner_id = $2 order by ordinal",
            document_id,
            owner_id,
        )
        return [(row["content"], dict(row["metadata"] or {})) for row in rows]

    async def inline_text(self, owner_id: uuid.UUID, document_id: uuid.UUID) -> str | None:
        """The text an inline document was given, until it is indexed (None after)."""
        text: str | None = await self._pool.fetchval(
            "select s.text from xtyl_rag.inline_sources s join xtyl_rag.documents d"
            " on d.id = s.document_id where s.document_id = $1 and d.owner_id = $2",
            document_id,
            owner_id,
        )
        return text
