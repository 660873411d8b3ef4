"""Every search reads only the caller's chunks, and a caller with few chunks among many
near-identical ones of another user still gets all of theirs, in every mode and plan."""

from __future__ import annotations

import uuid

import pytest

from xtyl_rag.adapters.postgres.models import index_name
from xtyl_rag.domain.planning import SearchTuning, plan_semantic
from xtyl_rag.domain.search import SearchFilters, SearchMode
from xtyl_rag.service import RagService

from .bulk import insert_chunks, near, retriever

pytestmark = pytest.mark.integration

QUERY = "quarterly revenue forecast for the northern region"
B_CHUNKS = 10_000


@pytest.fixture(scope="module")
async def crowd(service: RagService) -> tuple[uuid.UUID, list[uuid.UUID], uuid.UUID]:
    """A has 5 chunks about the query; B has 10,000 chunks nearer to it than A's."""
    query_vector = (await service.embedders.configured.embed([QUERY]))[0]
    alice, bob = uuid.uuid4(), uuid.uuid4()
    a_ids = await insert_chunks(
        service,
        alice,
        [f"Note {n}: the quarterly revenue forecast of the northern region." for n in range(5)],
        near(query_vector, 5, 0.03, seed=1),
    )
    await insert_chunks(service, bob, [QUERY] * B_CHUNKS, near(query_vector, B_CHUNKS, 0.005, 2))
    return alice, a_ids, bob


@pytest.mark.parametrize("mode", ["semantic", "fulltext", "hybrid"])
@pytest.mark.parametrize("threshold", [20_000, 0], ids=["exact", "hnsw"])
async def test_a_gets_exactly_her_five_chunks(
    service: RagService,
    crowd: tuple[uuid.UUID, list[uuid.UUID], uuid.UUID],
    mode: SearchMode,
    threshold: int,
) -> None:
    alice, a_ids, _bob = crowd
    result = await retriever(service, threshold).search(
        alice,
        QUERY,
        k=10,
        mode=mode,
        filters=SearchFilters(),  # type: ignore[arg-type]
    )
    assert sorted(hit.chunk_id for hit in result.hits) == sorted(a_ids)
    if mode != "fulltext":
        assert result.plan == ("exact" if threshold else "hnsw")


async def test_b_gets_only_his_own(
    service: RagService, crowd: tuple[uuid.UUID, list[uuid.UUID], uuid.UUID]
) -> None:
    _alice, a_ids, bob = crowd
    result = await retriever(service, 20_000).search(
        bob, QUERY, k=50, mode="hybrid", filters=SearchFilters()
    )
    assert len(result.hits) == 50
    assert not {hit.chunk_id for hit in result.hits} & set(a_ids)
    assert result.plan == "exact"  # 10,000 <= the threshold


async def test_exact_plan_never_uses_the_hnsw_index(
    service: RagService, crowd: tuple[uuid.UUID, list[uuid.UUID], uuid.UUID]
) -> None:
    alice, _a_ids, _bob = crowd
    model = service.model_status.active.model
    vector = (await service.embedders.configured.embed([QUERY]))[0]
    async with service.pool.acquire() as conn:
        rows = await conn.fetch(
            "explain select e.chunk_id from xtyl_rag.chunk_embeddings e"
            " where e.owner_id = $1 and e.model = $3 order by e.embedding <=> $2 limit 10",
            alice,
            vector,
            model,
        )
    plan = "\n".join(row[0] for row in rows)
    assert index_name(model) not in plan
    assert "chunk_embeddings_owner_idx" in plan


def test_planner_switches_at_the_threshold() -> None:
    tuning = SearchTuning(exact_max_chunks=1_000)
    assert plan_semantic(1_000, 10, tuning).kind == "exact"
    assert plan_semantic(1_001, 10, tuning).kind == "hnsw"
