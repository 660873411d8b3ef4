"""The active model's HNSW index read ahead of the first searches (pg_prewarm, at start-up)."""

from __future__ import annotations

import pytest
import structlog.testing

from xtyl_rag.adapters.postgres.models import index_name
from xtyl_rag.service import RagService

from .bulk import retriever

pytestmark = pytest.mark.integration


async def test_the_active_models_index_is_prewarmed_into_shared_buffers(
    service: RagService,
) -> None:
    model = service.model_status.active.model
    done = await service.chunks.prewarm(model)
    assert done is not None, "migration 0007 enables pg_prewarm on the embedded Postgres"
    blocks, mode = done
    pages = await service.pool.fetchval(
        "select pg_relation_size(c.oid) / current_setting('block_size')::int"
        " from pg_class c where c.relname = $1",
        index_name(model),
    )
    assert (blocks, mode) == (pages, "buffer")  # a small index: into shared buffers
    assert await service.chunks.prewarm("local:no-such-model") is None
    with structlog.testing.capture_logs() as logs:
        await retriever(service, 0).prewarm()
    assert [entry["event"] for entry in logs] == ["hnsw_prewarmed"]
