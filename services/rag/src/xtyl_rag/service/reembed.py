"""A change of embedding model: rebuild every chunk's vector with the configured model, then
switch search to it (``xtyl-rag-reembed``, ``make reembed``: :meth:`RagService.reembed`).

Run it after changing ``EMBEDDER`` / ``EMBEDDING_MODEL`` (workers on the new settings write
vectors of both models for new documents meanwhile). It is resumable and safe to interrupt:

1. every chunk without a vector of the configured model gets one (keyset pages, batches);
2. the model's HNSW index is built (after the bulk load: faster);
3. in one transaction that holds back new writes, if no chunk lacks a vector the configured
   model becomes ``active`` and the old one ``retired`` (else step 1 again);
4. the retired model's vectors and index are dropped.

Search answers from the old vectors until step 3 commits.
"""

from __future__ import annotations

import time

import structlog

from xtyl_rag.adapters.postgres import ModelRegistry
from xtyl_rag.adapters.vector_spaces import Embedders

log = structlog.stdlib.get_logger("xtyl.rag.reembed")

MAX_PASSES = 5


async def fill(models: ModelRegistry, embedders: Embedders, *, batch: int) -> int:
    """One pass over the chunks: vectors of the configured model for those that lack one."""
    embedder = embedders.configured
    model = embedder.model
    written = 0
    after = None
    started = time.perf_counter()
    while rows := await models.chunks_missing(model, after=after, limit=batch):
        vectors = await embedder.embed([content for *_, content in rows])
        written += await models.add_vectors(
            model, [(chunk, owner, document) for chunk, owner, document, _ in rows], vectors
        )
        after = rows[-1][0]
        log.info(
            "reembed_progress",
            model=model,
            written=written,
            per_s=round(written / max(1e-9, time.perf_counter() - started)),
        )
    return written


async def reembed(
    models: ModelRegistry, embedders: Embedders, *, batch: int = 256, keep_old: bool = False
) -> str:
    """Returns what happened: ``nothing to do: ...`` or ``switched from <old> to <new>``."""
    configured = embedders.configured
    status = await models.register(configured.model, configured.dimension)
    if status.state != "changed":
        return f"nothing to do: {status.active.model} is already active"
    target = status.configured
    for _ in range(MAX_PASSES):
        await fill(models, embedders, batch=batch)
        await models.ensure_index(target.model, target.dimension)
        if await models.activate_if_complete(target.model) is not None:
            break
    else:
        raise RuntimeError(f"chunks kept arriving without {target.model} vectors; run again")
    if not keep_old:
        dropped = await models.drop_retired()
        log.info("retired_vectors_dropped", rows=dropped)
    return f"switched from {status.active.model} to {target.model}"
