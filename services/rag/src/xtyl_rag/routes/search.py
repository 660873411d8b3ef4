"""``POST /v1/search`` and ``POST /v1/answer``: over the caller's chunks only."""

from __future__ import annotations

from collections.abc import AsyncIterator

import msgspec
from litestar import Controller, post
from litestar.di import NamedDependency
from litestar.response import Stream
from litestar.status_codes import HTTP_200_OK

from xtyl_common.auth import UserPrincipal
from xtyl_common.errors import InvalidInput
from xtyl_common.identity import USER
from xtyl_rag.domain.snippets import make_snippet, query_terms
from xtyl_rag.routes import RAG
from xtyl_rag.routes.schemas import (
    AnswerIn,
    SearchHitOut,
    SearchIn,
    SearchOut,
    normalise_query,
)
from xtyl_rag.service import AnswerEvent, RagService

_encoder = msgspec.json.Encoder()
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def format_sse(event: AnswerEvent) -> bytes:
    """One server-sent event: ``event: <name>`` and one ``data:`` line of JSON."""
    return b"event: " + event.event.encode() + b"\ndata: " + _encoder.encode(event.data) + b"\n\n"


def _query(text: str) -> str:
    query = normalise_query(text)
    if not query:
        raise InvalidInput("the query is blank", code="blank_query")
    return query


class SearchController(Controller):
    path = "/v1"
    tags = ["search"]
    dependencies = {**USER, **RAG}

    @post(
        "/search",
        status_code=HTTP_200_OK,
        summary="Search your documents",
        description="`mode`: `semantic` (embeddings), `fulltext` (Postgres full-text search"
        " ranked by BM25) or `hybrid` (both, their scores combined; the default, and the best"
        " ranking of the three on both evaluation sets of bench/bench_quality.py). At most"
        " `k` ≤ 50 chunks of your own documents, optionally only of `document_ids` or of"
        " documents whose metadata contains `metadata`. What `score` means depends on the"
        " mode: `semantic`, the cosine similarity of the query's and the chunk's embeddings"
        " (-1 to 1); `fulltext`, the chunk's BM25 score among your own chunks (0 and up;"
        " comparable within one query only); `hybrid`, 0.6 times the semantic score plus 0.4"
        " times the BM25 score, each scaled to 0-1 by the lowest and highest of its ranking"
        " for this query (0 to 1; comparable within one query only). `semantic_rank` and"
        " `fulltext_rank` say where each ranking placed the chunk.",
    )
    async def search(
        self, rag: NamedDependency[RagService], user: NamedDependency[UserPrincipal], data: SearchIn
    ) -> SearchOut:
        query = _query(data.query)
        result = await rag.search(
            user.user_id, query, k=data.k, mode=data.mode, filters=data.filters()
        )
        terms = query_terms(query)
        return SearchOut(
            mode=result.mode,
            plan=result.plan,
            model=result.model,
            results=[
                SearchHitOut(
                    document_id=hit.document_id,
                    title=hit.title,
                    chunk_id=hit.chunk_id,
                    ordinal=hit.ordinal,
                    score=hit.score,
                    snippet=make_snippet(hit.content, terms),
                    page=hit.metadata.get("page"),
                    semantic_rank=hit.semantic_rank,
                    fulltext_rank=hit.fulltext_rank,
                )
                for hit in result.hits
            ],
        )

    @post(
        "/answer",
        status_code=HTTP_200_OK,
        media_type="text/event-stream",
        summary="Ask your documents",
        description="Retrieves like `/v1/search`, then streams `text/event-stream`: one"
        " `citations` event (the numbered passages, all yours, and `mode`: `llm` or"
        " `extractive`), `delta` events with the answer's text citing passages as `[n]`,"
        " and a `done` event listing the passages cited. Without an LLM configured the"
        " answer is the passages' best sentences (`mode: extractive`).",
    )
    async def answer(
        self, rag: NamedDependency[RagService], user: NamedDependency[UserPrincipal], data: AnswerIn
    ) -> Stream:
        query = _query(data.query)
        _passages, events = await rag.answer(
            user.user_id, query, k=data.k, mode=data.mode, filters=data.filters()
        )

        async def body() -> AsyncIterator[bytes]:
            async for event in events:
                yield format_sse(event)

        return Stream(body(), media_type="text/event-stream", headers=SSE_HEADERS)
