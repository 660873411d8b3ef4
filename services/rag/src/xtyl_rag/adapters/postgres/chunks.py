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

Full-text search scores chunks by BM25 (``domain/bm25.py``) with the owner's own statistics:
its chunk count and average chunk length in tokens (``owner_text_stats``) and how many of its chunks
hold each lexeme (``owner_lexemes``), kept by statement triggers in the transactions that
write chunks (migrations 0005, 0006) and read by the statement that scores, so one search sees
one committed state. A chunk is a candidate when it shares a lexeme with the query (the
``english`` configuration drops stop words and stems). For a large owner the candidates are
the chunks of the query's rarer lexemes (``CANDIDATE_BUDGET``); the frequent ones only score.
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import numpy as np

from xtyl_rag.adapters.postgres.models import index_name, sql_literal
from xtyl_rag.domain.bm25 import K1, B
from xtyl_rag.domain.planning import SemanticPlan
from xtyl_rag.domain.search import CANDIDATE_BUDGET, ChunkHit, RankedChunk, SearchFilters

#: Candidates scored at most by one full-text statement over the GIN index (the chunks of the
#: rarer lexemes can still be many when even the rarest is common).
MAX_RANKED = 10_000


def _quoted_or(lexemes: str) -> str:
    """A tsquery joining the text lexemes of column ``lexemes`` (this module's SQL, never
    input) with ``|``; NULL when there are none, which matches nothing. An aggregate."""
    return (
        "string_agg('''' || replace(replace("
        f"{lexemes}, '\\', '\\\\'), '''', '''''') || '''', ' | ')"
    )


#: The statistics every full-text statement starts with ($1 owner, $2 query text): the query's
#: lexemes (q), the owner's chunk count and average length (s), each query lexeme the owner
#: holds with its chunk count, idf and ``reach``: the chunks of it and every rarer one (w);
#: then (g) those lexemes and idfs as two arrays, the tsquery of them all (``any_lexeme``) and
#: that of the rarest (``rarer``): taken while their chunks fit the budget ($5), and always
#: until they reach the rows asked ($3).
_STATS = (
    "with q as (select coalesce(tsvector_to_array(to_tsvector('english'::regconfig, $2::text)),"  # noqa: S608
    " '{}'::text[]) as lexemes),"
    " s as (select t.chunks::float8 as n, greatest(t.tokens::float8 / greatest(t.chunks, 1), 1)"
    " as avgdl from xtyl_rag.owner_text_stats t where t.owner_id = $1),"
    " w as (select o.lexeme, o.chunks, ln(1 + (s.n - o.chunks + 0.5) / (o.chunks + 0.5)) as idf,"
    " sum(o.chunks) over (order by o.chunks, o.lexeme rows unbounded preceding) as reach"
    " from xtyl_rag.owner_lexemes o, q, s where o.owner_id = $1 and o.lexeme = any(q.lexemes)),"
    " g as (select coalesce(array_agg(w.lexeme), '{}'::text[]) as lexemes,"
    " array_agg(w.idf) as idf,"
    f" {_quoted_or('w.lexeme')}::tsquery as any_lexeme,"
    f" {_quoted_or('w.lexeme')} filter (where w.reach - w.chunks < $3 or w.reach <= $5)"
    "::tsquery as rarer from w),"
)
#: BM25 of candidate ``m`` (``domain/bm25.py``): its tsvector cut down to the query's lexemes
#: (``setweight`` marks them, ``ts_filter`` keeps them), each one's positions counted, its idf
#: looked up in g's arrays; its length is its ``token_count``.
_TF = "greatest(cardinality(u.positions), 1)"
_BM25 = (
    f"(select sum(g.idf[array_position(g.lexemes, u.lexeme)] * {_TF} * {K1 + 1.0!r}"  # noqa: S608
    f" / ({_TF} + {K1!r} * ({1.0 - B!r} + {B!r} * m.tokens / s.avgdl)))"
    " from unnest(ts_filter(setweight(m.tsv, 'A', g.lexemes), '{a}')) as u)"
)


def _scored(candidates: str) -> str:
    """The best $3 of ``candidates`` (a CTE ``m`` of id, tsv and tokens) by BM25."""
    return (
        f"{_STATS} {candidates} select m.id, {_BM25} as score from m, g, s"  # noqa: S608
        " order by score desc, m.id limit $3"
    )


def _index_candidates(filters_sql: str) -> str:
    """The owner's chunks of the rarer lexemes, through the GIN index on ``(owner_id, tsv)``
    (migration 0004), at most ``MAX_RANKED`` ($4)."""
    return (
        "m as materialized (select c.id, c.tsv, c.token_count as tokens"  # noqa: S608
        f" from xtyl_rag.chunks c, g where c.owner_id = $1 and c.tsv @@ g.rarer{filters_sql}"
        " limit $4)"
    )


def _scan_candidates(filters_sql: str) -> str:
    """The owner's rows read one by one (a materialised CTE the planner cannot turn into a
    GIN scan), those sharing a lexeme kept."""
    return (
        "mine as materialized (select c.id, c.tsv, c.token_count as tokens"  # noqa: S608
        f" from xtyl_rag.chunks c where c.owner_id = $1{filters_sql} and $4::int > 0"
        " and $5::int > 0), m as (select mine.id, mine.tsv, mine.tokens from mine, g"
        " where mine.tsv @@ g.any_lexeme)"
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
            # ordered by the output column: the distance is computed once a row, not twice
            # (for the sort and for the score; 7.5 against 6.3 ms for 10,000 chunks)
            rows = await self._pool.fetch(
                "select e.chunk_id, e.embedding <=> $2 as distance"  # noqa: S608
                " from xtyl_rag.chunk_embeddings e"
                f" where e.owner_id = $1 and e.model = $3{sql}"
                " order by distance limit $4",
                owner_id,
                vector,
                model,
                plan.limit,
                *params,
            )
            return [RankedChunk(row["chunk_id"], 1.0 - float(row["distance"])) for row in rows]
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
            rows = await conn.fetch(query, owner_id, vector, plan.rows, *params)
        # relaxed_order may return rows slightly out of order: sort by the exact distance
        ordered = sorted(rows, key=_distance)[: plan.limit]
        return [RankedChunk(row["chunk_id"], 1.0 - float(row["distance"])) for row in ordered]

    async def fulltext(
        self,
        owner_id: uuid.UUID,
        query: str,
        *,
        limit: int,
        filters: SearchFilters,
        scan_owner: bool,
        budget: int | None = None,
    ) -> list[RankedChunk]:
        """The owner's chunks sharing lexemes with ``query``, best BM25 first (score: BM25).

        ``scan_owner`` (an owner with few chunks): read the owner's rows and test each.
        Otherwise the GIN index on ``(owner_id, tsv)``, for the chunks of the query's rarer
        lexemes (within ``budget`` chunks, ``CANDIDATE_BUDGET`` by default).
        """
        sql, params = _filters(filters, 6, alias="c")
        args = (owner_id, query, limit, MAX_RANKED, CANDIDATE_BUDGET if budget is None else budget)
        if scan_owner:  # the materialised CTE fixes the plan, generic or not
            return _ranked(await self._pool.fetch(_scored(_scan_candidates(sql)), *args, *params))
        async with self._pool.acquire() as conn, conn.transaction():
            # a generic plan (after five runs of a prepared statement) does not know the
            # owner is large and reads all of its rows through the btree: 0.5 s measured
            await conn.execute("select set_config('plan_cache_mode', 'force_custom_plan', true)")
            rows = await conn.fetch(_scored(_index_candidates(sql)), *args, *params)
        return _ranked(rows)

    async def prewarm(self, model: str) -> tuple[int, str] | None:
        """Read ``model``'s HNSW index ahead of the first searches (pg_prewarm, migration
        0007): into shared buffers when it takes at most a quarter of them, else into the
        operating system's page cache (it would only evict other pages from the buffers).
        Returns (blocks read, mode), or None without the index or the extension."""
        row = await self._pool.fetchrow(
            "select c.oid::regclass::text as index, pg_catalog.pg_relation_size(c.oid) as bytes,"
            " (select s.setting::bigint * current_setting('block_size')::bigint"
            " from pg_catalog.pg_settings s where s.name = 'shared_buffers') as buffers,"
            " exists (select 1 from pg_catalog.pg_extension where extname = 'pg_prewarm')"
            " as available from pg_catalog.pg_class c"
            " where c.relname = $1 and c.relnamespace = 'xtyl_rag'::regnamespace",
            index_name(model),
        )
        if row is None or not row["available"]:
            return None
        mode = "buffer" if 4 * int(row["bytes"]) <= int(row["buffers"]) else "read"
        # the extension's schema (`extensions` on Supabase) is not always on the search_path
        schema = await self._pool.fetchval(
            "select n.nspname from pg_catalog.pg_extension e join pg_catalog.pg_namespace n"
            " on n.oid = e.extnamespace where e.extname = 'pg_prewarm'"
        )
        quoted = '"' + str(schema).replace('"', '""') + '"'
        blocks = await self._pool.fetchval(
            f"select {quoted}.pg_prewarm($1::regclass, $2)",
            row["index"],
            mode,
            timeout=None,
        )
        return int(blocks or 0), mode

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
