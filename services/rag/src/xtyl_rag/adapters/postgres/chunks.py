"""Reading chunks for search: every statement is scoped to one owner.

Semantic search runs one of the two plans of ``domain/planning.py``:

* exact: ``order by e.embedding <=> $q`` over the owner's rows (btree ``(owner_id, model)``).
  The per-model HNSW index is on the expression ``(embedding::vector(d))``, which this query
  does not use, so the planner cannot pick the index and lose the owner's rows;
* hnsw: ``order by (e.embedding::vector(d)) <=> $q::vector(d)`` with the model as a literal
  (a partial index only matches a constant, and a generic plan of a prepared statement would
  not see a parameter's value), ``hnsw.iterative_scan = relaxed_order``, sorts turned off for
  the statement (else the planner reads a large owner's rows through the btree and sorts
  them: measured 666 ms p50 for an owner of 125,000 chunks), then a re-sort in Python.

Full-text search ranks chunks that have all the query's lexemes first, then (when those are
too few) chunks with any of them (``'a' | 'b'``; the ``english`` configuration drops stop
words and stems), with ``ts_rank`` normalised by length, so a question in plain words finds
chunks that share only some of its words. For a large owner the chunks sharing any word are
many, so those holding the query's rarer words (per-owner counts in ``owner_lexemes``) are
ranked first, and the frequent words only score.
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import numpy as np

from xtyl_rag.adapters.postgres.models import sql_literal
from xtyl_rag.domain.planning import SemanticPlan
from xtyl_rag.domain.search import (
    CANDIDATE_BUDGET,
    ChunkHit,
    RankedChunk,
    SearchFilters,
    candidate_lexemes,
)

#: Chunks ranked at most by one full-text query over the GIN index (a large owner's chunks
#: that share a common word with the query can be tens of thousands).
MAX_RANKED = 10_000
#: The query's lexemes joined with ``&`` (``plainto_tsquery``).
_ALL_LEXEMES = "plainto_tsquery('english'::regconfig, $2::text)"
#: The query's lexemes joined with ``|`` (NULL when it has none: nothing matches).
_QUERY_LEXEMES = "tsvector_to_array(to_tsvector('english'::regconfig, $2::text))"


def _or_query(lexemes: str) -> str:
    """A tsquery of the text[] ``lexemes`` (an SQL expression of this module, never input)
    joined with ``|`` (NULL when empty: nothing matches)."""
    return (
        "(select string_agg('''' || replace(replace(l, '\\', '\\\\'), '''', '''''') || '''',"  # noqa: S608
        f" ' | ') from unnest({lexemes}) as l)::tsquery"
    )


_ANY_LEXEME = _or_query(_QUERY_LEXEMES)
#: Every full-text statement starts with the query's two tsqueries, as ``q``.
_LEXEMES_CTE = f"with q as (select {_ANY_LEXEME} as any_lexeme, {_ALL_LEXEMES} as all_lexemes),"
#: ``ts_rank`` (normalised by length), plus 1 for a chunk holding every lexeme.
_SCORE = (
    "ts_rank(m.tsv, q.any_lexeme, 1) + case when m.tsv @@ q.all_lexemes then 1 else 0 end as score"
)


def _ranked_matches(match: str, filters_sql: str) -> str:
    """The owner's chunks for which ``tsv @@ match`` holds, read through the GIN index on
    ``(owner_id, tsv)``, at most ``MAX_RANKED`` ($4) of them ranked, the best $3 returned."""
    return (
        f"{_LEXEMES_CTE} m as materialized (select c.id, c.tsv"  # noqa: S608
        f" from xtyl_rag.chunks c, q where c.owner_id = $1 and c.tsv @@ {match}{filters_sql}"
        f" limit $4) select m.id, {_SCORE} from m, q order by score desc, m.id limit $3"
    )


def _filters(
    filters: SearchFilters, first_param: int, *, alias: str, document_column: str = "document_id"
) -> tuple[str, list[Any]]:
    """SQL conditions and their parameters for the request's filters ($1 is the owner)."""
    sql: list[str] = []
    params: list[Any] = []
    column = f"{alias}.{document_column}"
    if filters.document_ids is not None:
        params.append(list(filters.document_ids))
        sql.append(f" and {column} = any(${first_param + len(params) - 1}::uuid[])")
    if filters.metadata:
        params.append(filters.metadata)
        sql.append(
            f" and {column} in (select d.id from xtyl_rag.documents d where d.owner_id = $1"  # noqa: S608
            f" and d.metadata @> ${first_param + len(params) - 1}::jsonb)"
        )
    return "".join(sql), params


class ChunkSearch:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def candidate_count(self, owner_id: uuid.UUID, filters: SearchFilters) -> int:
        """Chunks a search may return: the owner's, or those of the filtered documents."""
        if filters.empty:
            count = await self._pool.fetchval(
                "select chunk_count from xtyl_rag.owner_stats where owner_id = $1", owner_id
            )
            return int(count or 0)
        sql, params = _filters(filters, 2, alias="d", document_column="id")
        count = await self._pool.fetchval(
            "select coalesce(sum(d.chunk_count), 0) from xtyl_rag.documents d"  # noqa: S608
            f" where d.owner_id = $1{sql}",
            owner_id,
            *params,
        )
        return int(count or 0)

    async def total_vectors(self) -> int:
        """The planner's estimate of all vectors (every owner and model): cheap, approximate."""
        estimate = await self._pool.fetchval(
            "select reltuples::bigint from pg_catalog.pg_class"
            " where oid = 'xtyl_rag.chunk_embeddings'::regclass"
        )
        return max(0, int(estimate or 0))

    async def semantic(
        self,
        owner_id: uuid.UUID,
        vector: np.ndarray[Any, Any],
        *,
        model: str,
        dimension: int,
        plan: SemanticPlan,
        filters: SearchFilters,
    ) -> list[RankedChunk]:
        """The owner's chunks nearest to ``vector`` (score: cosine similarity)."""
        if plan.kind == "exact":
            sql, params = _filters(filters, 5, alias="e")
            rows = await self._pool.fetch(
                "select e.chunk_id, 1 - (e.embedding <=> $2) as score"  # noqa: S608
                " from xtyl_rag.chunk_embeddings e"
                f" where e.owner_id = $1 and e.model = $3{sql}"
                " order by e.embedding <=> $2 limit $4",
                owner_id,
                vector,
                model,
                plan.limit,
                *params,
            )
            return [RankedChunk(row["chunk_id"], float(row["score"])) for row in rows]
        typed = f"vector({int(dimension)})"
        sql, params = _filters(filters, 4, alias="e")
        query = (
            f"select e.chunk_id, (e.embedding::{typed}) <=> $2::{typed} as distance"  # noqa: S608
            " from xtyl_rag.chunk_embeddings e"
            f" where e.model = {sql_literal(model)} and e.owner_id = $1{sql}"
            f" order by (e.embedding::{typed}) <=> $2::{typed} limit $3"
        )
        async with self._pool.acquire() as conn, conn.transaction():
            # Sorts, sequential and bitmap scans off for this statement: the owner's btree
            # plus a sort (what the planner prefers for a large owner, reading every one of
            # its vectors) is then costed as disabled and the HNSW scan is chosen.
            await conn.execute(
                "select set_config('hnsw.ef_search', $1, true),"
                " set_config('hnsw.iterative_scan', 'relaxed_order', true),"
                " set_config('hnsw.max_scan_tuples', $2, true),"
                " set_config('enable_sort', 'off', true),"
                " set_config('enable_seqscan', 'off', true),"
                " set_config('enable_bitmapscan', 'off', true)",
                str(plan.ef_search),
                str(plan.max_scan_tuples),
            )
            rows = await conn.fetch(query, owner_id, vector, plan.limit, *params)
        # relaxed_order may return rows slightly out of order: sort by the exact distance
        ordered = sorted(rows, key=_distance)
        return [RankedChunk(row["chunk_id"], 1.0 - float(row["distance"])) for row in ordered]

    async def fulltext(
        self,
        owner_id: uuid.UUID,
        query: str,
        *,
        limit: int,
        filters: SearchFilters,
        scan_owner: bool,
    ) -> list[RankedChunk]:
        """The owner's chunks sharing lexemes with ``query``: those with every lexeme first,
        then by ``ts_rank`` (normalised by length).

        ``scan_owner`` (an owner with few chunks): read the owner's rows and test each, in a
        materialised CTE the planner cannot turn into a scan of the GIN index. Otherwise the
        GIN index on ``(owner_id, tsv)`` (migration 0004): first the chunks with every lexeme;
        when they are fewer than ``limit``, the chunks holding the query's rarer lexemes
        (``candidate_lexemes``: within ``CANDIDATE_BUDGET`` chunks); when those are too few
        as well, all the chunks sharing any lexeme. Each step ranks at most ``MAX_RANKED``.
        """
        sql, params = _filters(filters, 5, alias="c")
        args = (owner_id, query, limit, MAX_RANKED, *params)
        if scan_owner:
            rows = await self._pool.fetch(
                f"{_LEXEMES_CTE} mine as materialized (select c.id, c.tsv"  # noqa: S608
                f" from xtyl_rag.chunks c where c.owner_id = $1{sql} and $4::int > 0)"
                f" select m.id, {_SCORE} from mine m, q where m.tsv @@ q.any_lexeme"
                " order by score desc, m.id limit $3",
                *args,
            )
            return _ranked(rows)
        async with self._pool.acquire() as conn, conn.transaction():
            # a generic plan (after five runs of a prepared statement) does not know the
            # owner is large and reads all of its rows through the btree: 0.5 s measured
            await conn.execute("select set_config('plan_cache_mode', 'force_custom_plan', true)")
            # Chunks with every lexeme outrank any chunk without (+1), so when there are at
            # least `limit` of them they are the whole answer, and the (GIN-intersected, small)
            # set of all-lexeme matches is ranked instead of every chunk sharing one word.
            rows = await conn.fetch(_ranked_matches("q.all_lexemes", sql), *args)
            if len(rows) >= limit:
                return _ranked(rows)
            # Then the chunks holding the query's rarer lexemes (owner_lexemes, migration
            # 0005): all of a big owner's chunks that share some common word would be
            # thousands to rank. Only if those are too few, every chunk sharing any lexeme.
            frequencies = await conn.fetch(
                f"select l.lexeme, coalesce(o.chunks, 0) as chunks from unnest({_QUERY_LEXEMES})"  # noqa: S608
                " as l(lexeme) left join xtyl_rag.owner_lexemes o"
                " on o.owner_id = $1 and o.lexeme = l.lexeme",
                owner_id,
                query,
            )
            chosen, complete = candidate_lexemes(
                {row["lexeme"]: int(row["chunks"]) for row in frequencies}, CANDIDATE_BUDGET
            )
            rows = []
            if chosen and not complete:
                rarer_sql, rarer_params = _filters(filters, 6, alias="c")
                rows = await conn.fetch(
                    _ranked_matches(_or_query("$5::text[]"), rarer_sql),
                    owner_id,
                    query,
                    limit,
                    MAX_RANKED,
                    chosen,
                    *rarer_params,
                )
            if len(rows) < limit:
                rows = await conn.fetch(_ranked_matches("q.any_lexeme", sql), *args)
        return _ranked(rows)

    async def hits(self, owner_id: uuid.UUID, chunk_ids: list[uuid.UUID]) -> dict[uuid.UUID, Any]:
        """The owner's chunks by id, with their documents' titles (ids of others are absent).
        Driven by the ids (primary keys), never by the owner's rows."""
        rows = await self._pool.fetch(
            # the ids are looked up first (primary key), the owner checked after: with the
            # owner inside, a generic plan read a large owner's rows by its btree (0.5 s)
            "with wanted as materialized (select c.id, c.document_id, c.owner_id, c.ordinal,"
            " c.content, c.metadata from xtyl_rag.chunks c where c.id = any($2::uuid[]))"
            " select w.id, w.document_id, d.title, w.ordinal, w.content, w.metadata"
            " from wanted w join xtyl_rag.documents d on d.id = w.document_id"
            " where w.owner_id = $1 and d.owner_id = $1",
            owner_id,
            chunk_ids,
        )
        return {row["id"]: row for row in rows}


def _ranked(rows: list[asyncpg.Record]) -> list[RankedChunk]:
    return [RankedChunk(row["id"], float(row["score"])) for row in rows]


def _distance(row: asyncpg.Record) -> float:
    return float(row["distance"])


def to_hit(row: Any, score: float, *, semantic: int | None, fulltext: int | None) -> ChunkHit:
    return ChunkHit(
        chunk_id=row["id"],
        document_id=row["document_id"],
        title=row["title"],
        ordinal=row["ordinal"],
        content=row["content"],
        metadata=dict(row["metadata"] or {}),
        score=score,
        semantic_rank=semantic,
        fulltext_rank=fulltext,
    )
