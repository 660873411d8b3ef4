"""``xtyl_rag.embedding_models``: which embedding model search reads, which one is being built.

One model is ``active`` (search embeds queries with it and reads its vectors). When a process
starts with another model configured, :meth:`ModelRegistry.register` records the configured one
as ``building``: from then on the worker writes vectors of both, and ``xtyl-rag-reembed``
fills in the configured model's vectors for every older chunk, builds its HNSW index and
switches (``building`` -> ``active``, the old one -> ``retired``) in one transaction. Search
answers from the old vectors until that commit.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Literal

import asyncpg
import msgspec
import structlog

from xtyl_rag.adapters.embedders import Vectors

log = structlog.stdlib.get_logger("xtyl.rag.models")

ModelState = Literal["active", "building", "retired"]
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9:._/@+-]{0,199}$")
_LOCK_KEY = 7_291_006_001  # advisory lock: registering models and building their indexes
_COLUMNS = "model, dimension, state, created_at, activated_at"


class EmbeddingModel(msgspec.Struct, frozen=True, kw_only=True):
    model: str
    dimension: int
    state: ModelState
    created_at: datetime
    activated_at: datetime | None = None


class ModelStatus(msgspec.Struct, frozen=True, kw_only=True):
    """What this process found at start-up: ``current`` (configured = active), ``first``
    (nothing was active: the configured model now is), ``changed`` (configured differs from
    active: re-embedding is needed, search stays on the active model meanwhile)."""

    state: Literal["current", "first", "changed"]
    active: EmbeddingModel
    configured: EmbeddingModel


class ModelConflict(RuntimeError):
    """The database knows this model name with another dimension."""


def check_model_name(model: str) -> str:
    if not _MODEL_NAME.match(model):
        raise ValueError(f"embedding model name {model!r} has unexpected characters")
    return model


def sql_literal(model: str) -> str:
    """``model`` as an SQL string literal (names are checked; quotes doubled anyway)."""
    return "'" + check_model_name(model).replace("'", "''") + "'"


#: HNSW build parameters. pgvector's default ef_construction (64) left 1.75 % of 1,000,000
#: chunk vectors unreachable (not found even by their own vector; bench/bench_rag.py's data,
#: many near-duplicates), which capped semantic recall@10 at 0.975 for large owners whatever
#: ef_search; 128 cut that sixfold on a 125,000-vector sample (m = 24 did not) for a build
#: about 1.6 times as long. Indexes built before keep their parameters.
HNSW_BUILD = "m = 16, ef_construction = 128"


def index_name(model: str) -> str:
    return "chunk_embeddings_hnsw_" + hashlib.sha1(model.encode()).hexdigest()[:12]  # noqa: S324


def _model(row: asyncpg.Record) -> EmbeddingModel:
    return EmbeddingModel(**dict(row))


class ModelRegistry:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def all(self) -> list[EmbeddingModel]:
        rows = await self._pool.fetch(
            f"select {_COLUMNS} from xtyl_rag.embedding_models order by created_at"  # noqa: S608
        )
        return [_model(row) for row in rows]

    async def active(self) -> EmbeddingModel | None:
        row = await self._pool.fetchrow(
            f"select {_COLUMNS} from xtyl_rag.embedding_models where state = 'active'"  # noqa: S608
        )
        return None if row is None else _model(row)

    async def writable(self) -> list[EmbeddingModel]:
        """Models whose vectors new chunks must get: the active one and any being built."""
        return [m for m in await self.all() if m.state in ("active", "building")]

    async def register(self, model: str, dimension: int) -> ModelStatus:
        """Record the configured model (see the module docstring) and report what changed."""
        check_model_name(model)
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("select pg_advisory_xact_lock($1)", _LOCK_KEY)
            rows = {
                row["model"]: _model(row)
                for row in await conn.fetch(
                    f"select {_COLUMNS} from xtyl_rag.embedding_models"  # noqa: S608
                )
            }
            known = rows.get(model)
            if known is not None and known.dimension != dimension:
                raise ModelConflict(
                    f"embedding model {model!r} is recorded with dimension {known.dimension},"
                    f" configured with {dimension}"
                )
            active = next((m for m in rows.values() if m.state == "active"), None)
            if active is None:
                row = await conn.fetchrow(
                    "insert into xtyl_rag.embedding_models (model, dimension, state, activated_at)"  # noqa: S608
                    " values ($1, $2, 'active', now()) on conflict (model) do update"
                    " set state = 'active', activated_at = now()"
                    f" returning {_COLUMNS}",
                    model,
                    dimension,
                )
                assert row is not None
                first = _model(row)
                return ModelStatus(state="first", active=first, configured=first)
            if active.model == model:
                return ModelStatus(state="current", active=active, configured=active)
            row = await conn.fetchrow(
                "insert into xtyl_rag.embedding_models (model, dimension, state)"  # noqa: S608
                " values ($1, $2, 'building') on conflict (model) do update"
                " set state = 'building' returning " + _COLUMNS,
                model,
                dimension,
            )
            assert row is not None
            return ModelStatus(state="changed", active=active, configured=_model(row))

    async def ensure_index(self, model: str, dimension: int) -> bool:
        """The model's partial HNSW index (cosine), built concurrently if missing or invalid;
        True if it was built now. Not in a transaction (``create index concurrently``)."""
        name = index_name(model)
        async with self._pool.acquire() as conn:
            await conn.execute("select pg_advisory_lock($1)", _LOCK_KEY)
            try:
                valid: bool | None = await conn.fetchval(
                    "select i.indisvalid from pg_catalog.pg_class c"
                    " join pg_catalog.pg_index i on i.indexrelid = c.oid"
                    " where c.relname = $1 and c.relnamespace = 'xtyl_rag'::regnamespace",
                    name,
                )
                if valid:
                    return False
                if valid is not None:  # an interrupted concurrent build left it invalid
                    await conn.execute(f"drop index concurrently if exists xtyl_rag.{name}")
                await conn.execute(
                    f"create index concurrently if not exists {name}"
                    " on xtyl_rag.chunk_embeddings using hnsw"
                    f" ((embedding::vector({int(dimension)})) vector_cosine_ops)"
                    f" with ({HNSW_BUILD}) where model = {sql_literal(model)}",
                    timeout=None,
                )
                log.info("embedding_index_built", model=model, index=name)
                return True
            finally:
                await conn.execute("select pg_advisory_unlock($1)", _LOCK_KEY)

    async def coverage(self, model: str) -> tuple[int, int]:
        """(chunks with a vector of ``model``, all chunks)."""
        row = await self._pool.fetchrow(
            "select (select count(*) from xtyl_rag.chunk_embeddings where model = $1) as done,"
            " (select count(*) from xtyl_rag.chunks) as total",
            model,
        )
        assert row is not None
        return int(row["done"]), int(row["total"])

    async def activate_if_complete(self, model: str) -> EmbeddingModel | None:
        """``model`` becomes active and the active one retired, in one transaction, if every
        chunk has a vector of ``model``; None (nothing changed) if some chunk still lacks one.

        The row locks taken here wait for indexing runs that are writing chunks (they hold the
        models' rows ``for share``) and hold back new ones, so the check sees every chunk.
        """
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("select pg_advisory_xact_lock($1)", _LOCK_KEY)
            locked = await conn.fetchval(
                "select count(*) from (select 1 from xtyl_rag.embedding_models"
                " where state in ('active', 'building') for update) as m"
            )
            if not locked:
                raise ModelConflict("no embedding model is registered")
            missing = await conn.fetchval(
                "select exists (select 1 from xtyl_rag.chunks c where not exists"
                " (select 1 from xtyl_rag.chunk_embeddings e"
                " where e.chunk_id = c.id and e.model = $1))",
                model,
            )
            if missing:
                return None
            await conn.execute(
                "update xtyl_rag.embedding_models set state = 'retired'"
                " where state = 'active' and model <> $1",
                model,
            )
            row = await conn.fetchrow(
                "update xtyl_rag.embedding_models set state = 'active', activated_at = now()"  # noqa: S608
                f" where model = $1 returning {_COLUMNS}",
                model,
            )
            if row is None:
                raise ModelConflict(f"embedding model {model!r} is not registered")
            log.info("embedding_model_activated", model=model)
            return _model(row)

    async def chunks_missing(
        self, model: str, *, after: uuid.UUID | None, limit: int
    ) -> list[tuple[uuid.UUID, uuid.UUID, uuid.UUID, str]]:
        """Chunks without a vector of ``model``, in id order after ``after`` (keyset pages):
        up to ``limit`` of (id, owner, document, content)."""
        rows = await self._pool.fetch(
            "select c.id, c.owner_id, c.document_id, c.content from xtyl_rag.chunks c"
            " where c.id > coalesce($2, '00000000-0000-0000-0000-000000000000'::uuid)"
            " and not exists (select 1 from xtyl_rag.chunk_embeddings e"
            " where e.chunk_id = c.id and e.model = $1) order by c.id limit $3",
            model,
            after,
            limit,
        )
        return [(row["id"], row["owner_id"], row["document_id"], row["content"]) for row in rows]

    async def add_vectors(
        self, model: str, rows: Sequence[tuple[uuid.UUID, uuid.UUID, uuid.UUID]], vectors: Vectors
    ) -> int:
        """Vectors of ``model`` for chunks (id, owner, document); chunks deleted meanwhile and
        vectors already there are skipped. Rows written."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "create temporary table reembed_batch (chunk_id uuid, owner_id uuid,"
                " document_id uuid, embedding vector) on commit drop"
            )
            await conn.copy_records_to_table(
                "reembed_batch",
                records=[
                    (chunk_id, owner_id, document_id, vector)
                    for (chunk_id, owner_id, document_id), vector in zip(rows, vectors, strict=True)
                ],
            )
            status = await conn.execute(
                "insert into xtyl_rag.chunk_embeddings (chunk_id, model, owner_id, document_id,"
                " embedding) select b.chunk_id, $1, b.owner_id, b.document_id, b.embedding"
                " from reembed_batch b join xtyl_rag.chunks c on c.id = b.chunk_id"
                " on conflict (chunk_id, model) do nothing",
                model,
            )
        return int(status.split()[-1])

    async def drop_retired(self, batch: int = 10_000) -> int:
        """Delete the vectors and indexes of retired models, in batches; rows deleted."""
        deleted = 0
        for retired in [m for m in await self.all() if m.state == "retired"]:
            while True:
                status = await self._pool.execute(
                    "delete from xtyl_rag.chunk_embeddings where ctid = any(array("
                    "select ctid from xtyl_rag.chunk_embeddings where model = $1 limit $2))",
                    retired.model,
                    batch,
                )
                count = int(status.split()[-1])
                deleted += count
                if count < batch:
                    break
            await self._pool.execute(
                f"drop index concurrently if exists xtyl_rag.{index_name(retired.model)}"
            )
        return deleted
