"""The JSON bodies of the rag API (msgspec Structs at the edge; unknown members are 422)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

import msgspec
from litestar.openapi.spec import OpenAPIFormat, OpenAPIType, Schema

from xtyl_rag.domain.documents import Document, DocumentSource, DocumentStatus
from xtyl_rag.domain.search import MAX_K, SearchFilters, SearchMode

MAX_QUERY_CHARS = 2_000
MAX_FILTER_DOCUMENTS = 100
MAX_ANSWER_K = 20

Title = Annotated[str, msgspec.Meta(min_length=1, max_length=300)]
#: One character that is not blank, as a JSON Schema pattern. Blank is what ``str.split()``
#: splits on plus U+FEFF, which is also exactly JSON Schema's (ECMA-262's) ``\s`` plus U+001C to
#: U+001F and U+0085: the document (read the ECMA way) and :func:`normalise_query` (the Python
#: way) agree on every character. A bare ``\S`` did not: a query of U+001F fit the document
#: and was refused as blank.
NOT_BLANK = r"[^\s\x1c-\x1f\x85\ufeff]"
#: A blank query is refused by the handler (``blank_query``); the document says so with a pattern.
Query = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=MAX_QUERY_CHARS,
        extra_json_schema={"extra": {"pattern": NOT_BLANK}},
    ),
]


def normalise_query(text: str) -> str:
    """The query with its blank runs made one space, trimmed; ``""`` when it is all blank."""
    return " ".join(text.replace("\ufeff", " ").split())


DocumentIds = Annotated[list[uuid.UUID], msgspec.Meta(max_length=MAX_FILTER_DOCUMENTS)]


class DocumentIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Either ``{title, text, metadata?}`` (inline text) or ``{file_id, title?, metadata?}``
    (a file uploaded to storage)."""

    title: Title | None = None
    text: Annotated[str, msgspec.Meta(min_length=1)] | None = None
    file_id: uuid.UUID | None = None
    metadata: dict[str, Any] | None = None

    #: The two shapes the handler accepts (else 422 ``text_or_file_id`` / ``title_required``),
    #: for the OpenAPI document (``xtyl_common.openapi``).
    openapi_one_of: ClassVar[tuple[Schema, ...]] = (
        Schema(
            title="inline text",
            required=["title", "text"],
            properties={
                "title": Schema(type=OpenAPIType.STRING),
                "text": Schema(type=OpenAPIType.STRING),
                "file_id": Schema(type=OpenAPIType.NULL),
            },
        ),
        Schema(
            title="an uploaded file",
            required=["file_id"],
            properties={
                "file_id": Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.UUID),
                "text": Schema(type=OpenAPIType.NULL),
            },
        ),
    )


class DocumentError(msgspec.Struct, frozen=True, kw_only=True):
    code: str
    message: str | None


class DocumentOut(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    title: str
    source: DocumentSource
    file_id: uuid.UUID | None
    #: pending -> extracting -> chunking -> embedding -> ready | failed
    status: DocumentStatus
    #: why it failed (``failed``), or the last passing error of a run that will be retried
    error: DocumentError | None
    chunk_count: int
    attempts: int
    metadata: dict[str, Any]
    content_sha256: str
    embedding_model: str | None
    created_at: datetime
    updated_at: datetime
    indexed_at: datetime | None

    @classmethod
    def of(cls, document: Document) -> DocumentOut:
        error = None
        if document.error_code is not None or document.error is not None:
            error = DocumentError(code=document.error_code or "retrying", message=document.error)
        return cls(
            id=document.id,
            title=document.title,
            source=document.source,
            file_id=document.file_id,
            status=document.status,
            error=error,
            chunk_count=document.chunk_count,
            attempts=document.attempts,
            metadata=document.metadata,
            content_sha256=document.content_sha256,
            embedding_model=document.embedding_model,
            created_at=document.created_at,
            updated_at=document.updated_at,
            indexed_at=document.indexed_at,
        )


class DocumentListOut(msgspec.Struct, frozen=True, kw_only=True):
    items: list[DocumentOut]
    #: pass as ``cursor`` for the next page; None on the last page
    next_cursor: str | None


class SearchIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    query: Query
    k: Annotated[int, msgspec.Meta(ge=1, le=MAX_K)] = 10
    #: ``hybrid``: semantic and full-text (BM25) scores combined (``domain/fusion.py``)
    mode: SearchMode = "hybrid"
    document_ids: (
        Annotated[list[uuid.UUID], msgspec.Meta(max_length=MAX_FILTER_DOCUMENTS)] | None
    ) = None
    #: only documents whose metadata contains this object
    metadata: dict[str, Any] | None = None

    def filters(self) -> SearchFilters:
        return SearchFilters(
            document_ids=tuple(self.document_ids) if self.document_ids is not None else None,
            metadata=self.metadata or None,
        )


class AnswerIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    query: Query
    k: Annotated[int, msgspec.Meta(ge=1, le=MAX_ANSWER_K)] = 6
    mode: SearchMode = "hybrid"
    document_ids: (
        Annotated[list[uuid.UUID], msgspec.Meta(max_length=MAX_FILTER_DOCUMENTS)] | None
    ) = None
    metadata: dict[str, Any] | None = None

    def filters(self) -> SearchFilters:
        return SearchFilters(
            document_ids=tuple(self.document_ids) if self.document_ids is not None else None,
            metadata=self.metadata or None,
        )


class SearchHitOut(msgspec.Struct, frozen=True, kw_only=True):
    document_id: uuid.UUID
    title: str
    chunk_id: uuid.UUID
    ordinal: int
    #: semantic: cosine similarity (-1..1); fulltext: BM25 among the caller's chunks (>= 0,
    #: comparable within one query); hybrid: 0.6 x semantic + 0.4 x BM25, each min-max scaled
    #: within its ranking of this query (0..1)
    score: float
    snippet: str
    page: int | None
    semantic_rank: int | None
    fulltext_rank: int | None


class SearchOut(msgspec.Struct, frozen=True, kw_only=True):
    mode: SearchMode
    #: how the semantic part read the vectors: ``exact`` or ``hnsw`` (None: not semantic)
    plan: Literal["exact", "hnsw"] | None
    model: str | None
    results: list[SearchHitOut]


class ModelOut(msgspec.Struct, frozen=True, kw_only=True):
    model: str
    dimension: int


class EmbeddingStatusOut(msgspec.Struct, frozen=True, kw_only=True):
    #: the model whose vectors search reads
    active: ModelOut | None
    #: the model this process is configured with
    configured: ModelOut
    #: True while the configured model differs from the active one (run `make reembed`)
    reembed_needed: bool


class StatusOut(msgspec.Struct, frozen=True, kw_only=True):
    embedding: EmbeddingStatusOut
    #: the caller's documents by status
    documents: dict[str, int]
