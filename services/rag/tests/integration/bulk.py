"""Chunks written straight to the database in bulk, for search tests that need many."""

from __future__ import annotations

import uuid

import numpy as np

from xtyl_rag.domain.planning import SearchTuning
from xtyl_rag.service import RagService
from xtyl_rag.service.retrieval import Retriever


async def insert_chunks(
    service: RagService, owner: uuid.UUID, contents: list[str], vectors: np.ndarray
) -> list[uuid.UUID]:
    """One ready document holding these chunks and vectors (written directly, in bulk)."""
    model = service.model_status.active.model
    async with service.pool.acquire() as conn, conn.transaction():
        document = await conn.fetchval(
            "insert into xtyl_rag.documents (owner_id, source, title, status, content_sha256,"
            " chunk_count, embedding_model) values ($1, 'inline', 'bulk', 'ready',"
            " repeat('0', 64), $2, $3) returning id",
            owner,
            len(contents),
            model,
        )
        ids = [uuid.uuid4() for _ in contents]
        await conn.execute(
            "insert into xtyl_rag.chunks (id, document_id, owner_id, ordinal, content,"
            " token_count) select u.id, $2, $3, u.ordinal - 1, u.content,"
            " cardinality(regexp_split_to_array(u.content, '\\s+'))"
            " from unnest($1::uuid[], $4::text[]) with ordinality as u(id, content, ordinal)",
            ids,
            document,
            owner,
            contents,
        )
        await conn.copy_records_to_table(
            "chunk_embeddings",
            schema_name="xtyl_rag",
            columns=["chunk_id", "model", "owner_id", "document_id", "embedding"],
            records=[(i, model, owner, document, v) for i, v in zip(ids, vectors, strict=True)],
            # every row goes into the HNSW index: 10,000 of them took ~30 s (the pool's
            # statement timeout) on a loaded 2-core box
            timeout=300,
        )
        await conn.execute(
            "insert into xtyl_rag.owner_stats (owner_id, chunk_count) values ($1, $2)"
            " on conflict (owner_id) do update"
            " set chunk_count = xtyl_rag.owner_stats.chunk_count + excluded.chunk_count",
            owner,
            len(contents),
        )
        await conn.execute("analyze xtyl_rag.chunk_embeddings")
    return ids


def near(vector: np.ndarray, count: int, scale: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noisy = vector[None, :] + rng.normal(0, scale, size=(count, vector.shape[0]))
    return (noisy / np.linalg.norm(noisy, axis=1, keepdims=True)).astype(np.float32)


def retriever(service: RagService, exact_max_chunks: int) -> Retriever:
    return Retriever(
        chunks=service.chunks,
        models=service.models,
        embedders=service.embedders,
        tuning=SearchTuning(
            exact_max_chunks=exact_max_chunks, fulltext_scan_max_chunks=exact_max_chunks
        ),
        llm=None,
    )
