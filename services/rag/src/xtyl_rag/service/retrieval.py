"""Search and answers over one user's chunks.

Search embeds the query with the *active* model (the one whose vectors are complete; during a
change of model that may not be the configured one), chooses the semantic plan from the
caller's chunk count (``domain/planning.py``), runs the semantic and full-text (BM25)
rankings concurrently and fuses them (a weighted combination of their min-max scaled scores,
``domain/fusion.py``) in hybrid mode (each search timed by mode and plan:
``xtyl_rag_search_duration_seconds``). Recent query vectors are cached. Every statement carries
the caller's id, so a result can only be one of the caller's chunks.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

import asyncpg
import numpy as np
import structlog

from xtyl_common.errors import DependencyError, Unavailable
from xtyl_rag.adapters.embedders import Embedder
from xtyl_rag.adapters.llm import ChatClient
from xtyl_rag.adapters.metrics import SEARCH_DURATION, SEARCH_LABELS
from xtyl_rag.adapters.postgres import ChunkSearch, EmbeddingModel, ModelRegistry
from xtyl_rag.adapters.postgres.chunks import to_hit
from xtyl_rag.adapters.vector_spaces import Embedders
from xtyl_rag.domain.answers import (
    Passage,
    build_messages,
    cited_numbers,
    extractive_answer,
    number_passages,
)
from xtyl_rag.domain.fusion import hybrid_fusion
from xtyl_rag.domain.planning import SearchTuning, SemanticPlan, candidate_depth, plan_semantic
from xtyl_rag.domain.search import ChunkHit, RankedChunk, SearchFilters, SearchMode
from xtyl_rag.domain.snippets import make_snippet, query_terms

log = structlog.stdlib.get_logger("xtyl.rag.search")

T = TypeVar("T")

ACTIVE_MODEL_TTL_S = 5.0
TOTAL_VECTORS_TTL_S = 60.0
#: Recent query vectors kept per process (least recently used out): a repeated query (paging,
#: a retried request, an answer after a search) skips the model. 384 floats: 1.5 kB each.
QUERY_VECTORS_CACHED = 1024


@dataclass(frozen=True, slots=True)
class SearchResult:
    hits: list[ChunkHit]
    mode: SearchMode
    plan: Literal["exact", "hnsw"] | None
    model: str | None


@dataclass(frozen=True, slots=True)
class AnswerEvent:
    """One server-sent event of an answer: ``citations``, ``delta``, ``error`` or ``done``."""

    event: str
    data: dict[str, Any]


class _Cached(Generic[T]):
    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self.value: T | None = None
        self.at = 0.0

    def fresh(self) -> T | None:
        return self.value if time.monotonic() - self.at < self.ttl_s else None

    def put(self, value: T) -> T:
        self.value, self.at = value, time.monotonic()
        return value


class Retriever:
    def __init__(
        self,
        *,
        chunks: ChunkSearch,
        models: ModelRegistry,
        embedders: Embedders,
        tuning: SearchTuning,
        llm: ChatClient | None,
    ) -> None:
        self.chunks = chunks
        self.models = models
        self.embedders = embedders
        self.tuning = tuning
        self.llm = llm
        self._active: _Cached[EmbeddingModel] = _Cached(ACTIVE_MODEL_TTL_S)
        self._total: _Cached[int] = _Cached(TOTAL_VECTORS_TTL_S)
        self._vectors: OrderedDict[tuple[str, str], np.ndarray[Any, Any]] = OrderedDict()
        for mode, plan in SEARCH_LABELS:  # every series from the start
            SEARCH_DURATION.labels(mode, plan)

    async def active_model(self) -> EmbeddingModel:
        cached = self._active.fresh()
        if cached is not None:
            return cached
        active = await self.models.active()
        if active is None:
            raise Unavailable("no embedding model is active yet", code="no_embedding_model")
        return self._active.put(active)

    def forget_active_model(self) -> None:
        """The next search reads which model is active again (this process switched it)."""
        self._active = _Cached(ACTIVE_MODEL_TTL_S)

    async def prewarm(self) -> None:
        """Read the active model's HNSW index ahead of the first searches (at start-up, in
        the background); a failure is logged, never raised: searches work without it."""
        started = time.perf_counter()
        try:
            model = await self.active_model()
            done = await self.chunks.prewarm(model.model)
        except (DependencyError, asyncpg.PostgresError, OSError) as exc:
            log.warning("hnsw_prewarm_failed", error=str(exc))
            return
        if done is None:
            log.info("hnsw_prewarm_skipped", reason="no index or no pg_prewarm")
            return
        blocks, mode = done
        log.info(
            "hnsw_prewarmed",
            model=model.model,
            blocks=blocks,
            mode=mode,
            ms=round((time.perf_counter() - started) * 1000),
        )

    async def _query_embedder(self) -> tuple[EmbeddingModel, Embedder]:
        model = await self.active_model()
        embedder = await self.embedders.for_model(model.model, model.dimension)
        if embedder is None:
            raise Unavailable(
                f"this process cannot embed queries for the active model {model.model}",
                code="embedder_unavailable",
            )
        return model, embedder

    async def query_vector(self, embedder: Embedder, query: str) -> np.ndarray[Any, Any]:
        """The query's vector: from the cache of recent queries, else embedded (5-10 ms with
        the local model, a network call with a remote one) and kept."""
        key = (embedder.model, query)
        vector = self._vectors.get(key)
        if vector is not None:
            self._vectors.move_to_end(key)
            return vector
        vector = (await embedder.embed([query]))[0]
        self._vectors[key] = vector
        if len(self._vectors) > QUERY_VECTORS_CACHED:
            self._vectors.popitem(last=False)
        return vector

    async def _rankings(
        self,
        owner_id: uuid.UUID,
        query: str,
        *,
        depth: int,
        mode: SearchMode,
        filters: SearchFilters,
    ) -> tuple[list[RankedChunk], list[RankedChunk], SemanticPlan | None, EmbeddingModel | None]:
        """The semantic and full-text rankings the mode asks for, run concurrently; the
        query's vector is computed while the database counts the caller's candidates."""
        model: EmbeddingModel | None = None
        vector_task: asyncio.Future[np.ndarray[Any, Any]] | None = None
        if mode in ("semantic", "hybrid"):
            model, embedder = await self._query_embedder()
            vector_task = asyncio.ensure_future(self.query_vector(embedder, query))
        try:
            candidates = await self.chunks.candidate_count(owner_id, filters)
        finally:
            vector = await vector_task if vector_task is not None else None
        plan = None
        if model is not None:
            total = self._total.fresh()
            if total is None:
                total = self._total.put(await self.chunks.total_vectors())
            plan = plan_semantic(candidates, depth, self.tuning, total_chunks=total)
        if not candidates:
            return [], [], plan, model
        async with asyncio.TaskGroup() as group:
            semantic = fulltext = None
            if model is not None and plan is not None and vector is not None:
                semantic = group.create_task(
                    self.chunks.semantic(
                        owner_id,
                        vector,
                        model=model.model,
                        dimension=model.dimension,
                        plan=plan,
                        filters=filters,
                    )
                )
            if mode in ("fulltext", "hybrid"):
                fulltext = group.create_task(
                    self.chunks.fulltext(
                        owner_id,
                        query,
                        limit=depth,
                        filters=filters,
                        scan_owner=candidates <= self.tuning.fulltext_scan_max_chunks,
                    )
                )
        return (
            semantic.result() if semantic else [],
            fulltext.result() if fulltext else [],
            plan,
            model,
        )

    async def search(
        self,
        owner_id: uuid.UUID,
        query: str,
        *,
        k: int,
        mode: SearchMode,
        filters: SearchFilters,
    ) -> SearchResult:
        started = time.perf_counter()
        semantic, fulltext, plan, model = await self._rankings(
            owner_id,
            query,
            depth=candidate_depth(k, fused=mode == "hybrid"),
            mode=mode,
            filters=filters,
        )
        sem_rank = {r.chunk_id: n for n, r in enumerate(semantic, start=1)}
        ft_rank = {r.chunk_id: n for n, r in enumerate(fulltext, start=1)}
        if mode == "semantic":
            ranked = [(r.chunk_id, r.score) for r in semantic[:k]]
        elif mode == "fulltext":
            ranked = [(r.chunk_id, r.score) for r in fulltext[:k]]
        else:
            ranked = hybrid_fusion(
                [(r.chunk_id, r.score) for r in semantic],
                [(r.chunk_id, r.score) for r in fulltext],
                limit=k,
            )
        rows = await self.chunks.hits(owner_id, [chunk_id for chunk_id, _ in ranked])
        hits = [
            to_hit(
                rows[chunk_id],
                score,
                semantic=sem_rank.get(chunk_id),
                fulltext=ft_rank.get(chunk_id),
            )
            for chunk_id, score in ranked
            if chunk_id in rows  # a chunk deleted between the two statements
        ]
        kind = plan.kind if plan else None
        SEARCH_DURATION.labels(mode, kind or "none").observe(time.perf_counter() - started)
        return SearchResult(hits, mode, kind, model.model if model else None)

    async def answer(
        self,
        owner_id: uuid.UUID,
        question: str,
        *,
        k: int,
        mode: SearchMode,
        filters: SearchFilters,
    ) -> tuple[list[Passage], AsyncIterator[AnswerEvent]]:
        """Retrieve first (errors surface before the stream starts), then stream the answer."""
        result = await self.search(owner_id, question, k=k, mode=mode, filters=filters)
        passages = number_passages(result.hits)
        return passages, self._stream(question, passages)

    async def _stream(self, question: str, passages: list[Passage]) -> AsyncIterator[AnswerEvent]:
        answer_mode = "llm" if self.llm is not None and passages else "extractive"
        yield AnswerEvent(
            "citations", {"mode": answer_mode, "citations": citations(passages, question)}
        )
        text = ""
        warning: str | None = None
        if answer_mode == "llm":
            assert self.llm is not None
            try:
                async for piece in self.llm.stream(build_messages(question, passages)):
                    text += piece
                    yield AnswerEvent("delta", {"text": piece})
            except DependencyError as exc:
                log.warning("llm_failed", code=exc.code, detail=exc.detail)
                if text:
                    yield AnswerEvent("error", {"code": exc.code, "detail": exc.detail})
                    yield AnswerEvent("done", _done(answer_mode, text, passages, "error"))
                    return
                warning = f"the language model failed ({exc.code}); extractive answer instead"
                answer_mode = "extractive"
        if answer_mode == "extractive":
            text = extractive_answer(question, passages)
            if not text:
                text = "Your documents do not contain anything about this."
            yield AnswerEvent("delta", {"text": text})
        done = _done(answer_mode, text, passages, "stop")
        if warning:
            done["warning"] = warning
        yield AnswerEvent("done", done)


def citations(passages: list[Passage], question: str = "") -> list[dict[str, Any]]:
    terms = query_terms(question)
    return [
        {
            "number": p.number,
            "chunk_id": str(p.hit.chunk_id),
            "document_id": str(p.hit.document_id),
            "title": p.hit.title,
            "ordinal": p.hit.ordinal,
            "page": p.hit.metadata.get("page"),
            "snippet": make_snippet(p.hit.content, terms),
        }
        for p in passages
    ]


def _done(mode: str, text: str, passages: list[Passage], finish: str) -> dict[str, Any]:
    cited = cited_numbers(text, len(passages))
    return {
        "mode": mode,
        "finish_reason": finish,
        "cited": [{"number": n, "chunk_id": str(passages[n - 1].hit.chunk_id)} for n in cited],
    }
