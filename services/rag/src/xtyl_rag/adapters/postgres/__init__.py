"""Postgres repositories of the rag service (schema ``xtyl_rag``); every query that reads a
user's rows takes the owner's id."""

from xtyl_rag.adapters.postgres.chunks import ChunkSearch
from xtyl_rag.adapters.postgres.documents import Claim, DocumentRepository, NewChunks
from xtyl_rag.adapters.postgres.models import EmbeddingModel, ModelRegistry, ModelStatus

__all__ = [
    "ChunkSearch",
    "Claim",
    "DocumentRepository",
    "EmbeddingModel",
    "ModelRegistry",
    "ModelStatus",
    "NewChunks",
]
