"""Full-text search: the same ranking whichever plan reads the chunks, the per-owner lexeme
counts that choose a large owner's candidates, and what those candidates are."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import numpy as np
import pytest

from xtyl_rag.adapters.postgres import chunks as chunk_queries
from xtyl_rag.bootstrap import RagCore
from xtyl_rag.domain.search import SearchFilters

from .bulk import insert_chunks, near, retriever

pytestmark = pytest.mark.integration


WORDS = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "zeta",
    "theta",
    "kappa",
    "lambda",
    "sigma",
    "omega",
]


@pytest.fixture(scope="module")
async def wordy(core: RagCore) -> uuid.UUID:
    """An owner whose 400 chunks share words with each other in every combination."""
    rng = np.random.default_rng(7)
    contents = [
        " ".join(str(w) for w in rng.choice(WORDS, size=int(rng.integers(2, 8)))) + "."
        for _ in range(400)
    ]
    owner = uuid.uuid4()
    vectors = near(np.ones(core.model_status.active.dimension, dtype=np.float32), 400, 0.5, 3)
    await insert_chunks(core, owner, contents, vectors)
    return owner


@pytest.mark.parametrize(
    ("query", "k"),
    [("alpha beta", 5), ("alpha beta gamma", 40), ("kappa omega sigma theta zeta", 10)],
)
async def test_fulltext_ranks_alike_by_owner_scan_and_by_index(
    core: RagCore, wordy: uuid.UUID, query: str, k: int
) -> None:
    # Small owners are scanned row by row, large ones read through the (owner_id, tsv) GIN
    # index, all-lexeme matches first: both must give the same ranking.
    scanned, indexed = [
        await retriever(core, threshold).search(
            wordy, query, k=k, mode="fulltext", filters=SearchFilters()
        )
        for threshold in (20_000, 0)
    ]
    assert [hit.chunk_id for hit in indexed.hits] == [hit.chunk_id for hit in scanned.hits]
    assert len(indexed.hits) == k
    lexemes = set(query.split())
    full = [set(hit.content.rstrip(".").split()) >= lexemes for hit in indexed.hits]
    assert full == sorted(full, reverse=True)  # every all-lexeme chunk before any other


async def test_fulltext_index_is_per_owner(core: RagCore) -> None:
    definition = await core.pool.fetchval(
        "select indexdef from pg_catalog.pg_indexes"
        " where schemaname = 'xtyl_rag' and indexname = 'chunks_owner_tsv_idx'"
    )
    assert definition is not None
    assert "gin (owner_id, tsv)" in definition


async def lexeme_counts(core: RagCore, owner: uuid.UUID) -> dict[str, int]:
    rows = await core.pool.fetch(
        "select lexeme, chunks from xtyl_rag.owner_lexemes where owner_id = $1", owner
    )
    return {row["lexeme"]: row["chunks"] for row in rows}


async def test_lexeme_counts_follow_chunk_writes_and_deletes(core: RagCore) -> None:
    owner, other = uuid.uuid4(), uuid.uuid4()
    vectors = near(np.ones(core.model_status.active.dimension, dtype=np.float32), 3, 0.5, 9)
    await insert_chunks(core, owner, ["Red apples.", "Red cherries.", "Green apples."], vectors)
    await insert_chunks(core, other, ["Red roses."], vectors[:1])
    assert await lexeme_counts(core, owner) == {"red": 2, "appl": 2, "cherri": 1, "green": 1}
    second = await insert_chunks(core, owner, ["Green pears."], vectors[:1])
    assert (await lexeme_counts(core, owner))["green"] == 2
    # deleting a document cascades to its chunks, and the counts follow
    document = await core.pool.fetchval(
        "select document_id from xtyl_rag.chunks where id = $1", second[0]
    )
    await core.pool.execute("delete from xtyl_rag.documents where id = $1", document)
    assert await lexeme_counts(core, owner) == {"red": 2, "appl": 2, "cherri": 1, "green": 1}
    await core.pool.execute("delete from xtyl_rag.chunks where owner_id = $1", owner)
    assert await lexeme_counts(core, owner) == {}
    assert await lexeme_counts(core, other) == {"red": 1, "rose": 1}  # untouched


async def test_chunks_cannot_be_rewritten_in_place(core: RagCore) -> None:
    owner = uuid.uuid4()
    vectors = near(np.ones(core.model_status.active.dimension, dtype=np.float32), 1, 0.5, 4)
    [chunk] = await insert_chunks(core, owner, ["Blue skies."], vectors)
    with pytest.raises(asyncpg.FeatureNotSupportedError, match="immutable"):
        await core.pool.execute(
            "update xtyl_rag.chunks set content = 'Grey skies.' where id = $1", chunk
        )
    assert await lexeme_counts(core, owner) == {"blue": 1, "sky": 1}


@pytest.fixture(scope="module")
async def rare_and_common(core: RagCore) -> tuple[uuid.UUID, list[uuid.UUID], list[uuid.UUID]]:
    """300 short chunks with a common word, 20 long ones with a rare word, 5 with both."""
    owner = uuid.uuid4()
    filler = " ".join(["padding"] * 30)
    common = [f"Common filler {n}." for n in range(300)]
    rare = [f"Rare {filler} {n}." for n in range(20)]
    both = [f"Common rare pair {n}." for n in range(5)]
    texts = common + rare + both
    vectors = near(
        np.ones(core.model_status.active.dimension, dtype=np.float32), len(texts), 0.5, 5
    )
    ids = await insert_chunks(core, owner, texts, vectors)
    return owner, ids[300:320], ids[320:]


async def test_a_large_owner_ranks_the_chunks_of_rarer_words(
    core: RagCore,
    rare_and_common: tuple[uuid.UUID, list[uuid.UUID], list[uuid.UUID]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    owner, rare, both = rare_and_common
    search = retriever(core, 0)  # every owner is "large": the GIN index path
    # within the budget every chunk sharing a word is ranked: the short common ones beat the
    # long rare ones on length, as the owner scan ranks them
    everything = await search.search(
        owner, "rare common", k=10, mode="fulltext", filters=SearchFilters()
    )
    scanned = await retriever(core, 20_000).search(
        owner, "rare common", k=10, mode="fulltext", filters=SearchFilters()
    )
    assert [h.chunk_id for h in everything.hits] == [h.chunk_id for h in scanned.hits]
    assert {h.chunk_id for h in everything.hits[:5]} == set(both)
    assert not {h.chunk_id for h in everything.hits[5:]} & set(rare)
    # over the budget, the rare word's chunks are the candidates; the common word still scores
    monkeypatch.setattr(chunk_queries, "CANDIDATE_BUDGET", 50)
    pruned = await search.search(
        owner, "rare common", k=10, mode="fulltext", filters=SearchFilters()
    )
    assert {h.chunk_id for h in pruned.hits[:5]} == set(both)
    assert {h.chunk_id for h in pruned.hits[5:]} <= set(rare)
    assert len(pruned.hits) == 10
    # too few chunks with the rare words: filled from every chunk sharing any word
    filled = await search.search(
        owner, "rare common", k=40, mode="fulltext", filters=SearchFilters()
    )
    assert len(filled.hits) == 40
    assert {h.chunk_id for h in filled.hits[:5]} == set(both)


async def test_concurrent_writes_of_one_owner_keep_exact_counts(core: RagCore) -> None:
    # Writers of one owner's chunks update the same counter rows; they must wait for each
    # other (rows locked in one order), never deadlock, and the counts must equal a recount.
    owner = uuid.uuid4()
    dimension = core.model_status.active.dimension
    words = ["apple", "banana", "cherry", "damson", "elder", "fig", "grape", "hazel"]

    async def write(n: int) -> None:
        texts = [" ".join(words[(n + i) % 8 :] + words[: (n + i) % 8]) for i in range(40)]
        vectors = near(np.ones(dimension, dtype=np.float32), len(texts), 0.5, 100 + n)
        ids = await insert_chunks(core, owner, texts, vectors)
        if n % 2:
            await core.pool.execute("delete from xtyl_rag.chunks where id = any($1)", ids[:20])

    await asyncio.gather(*(write(n) for n in range(8)))
    recount = await core.pool.fetch(
        "select l.lexeme, count(*)::integer as chunks from xtyl_rag.chunks c"
        " cross join lateral unnest(tsvector_to_array(c.tsv)) as l(lexeme)"
        " where c.owner_id = $1 group by l.lexeme",
        owner,
    )
    assert await lexeme_counts(core, owner) == {row["lexeme"]: row["chunks"] for row in recount}
    assert sum((await lexeme_counts(core, owner)).values()) == (8 * 40 - 4 * 20) * 8
