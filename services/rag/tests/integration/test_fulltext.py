"""Full-text search: BM25 scores equal to the formula over the owner's chunks as committed,
whichever plan reads them and whatever writes and deletes run beside it; the per-owner counts
that choose a large owner's candidates, and what those candidates are."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import numpy as np
import pytest

from xtyl_rag.adapters.postgres import chunks as chunk_queries
from xtyl_rag.domain.bm25 import average_length, bm25_score
from xtyl_rag.domain.search import ChunkHit, SearchFilters
from xtyl_rag.service import RagService

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
async def wordy(service: RagService) -> uuid.UUID:
    """An owner whose 400 chunks share words with each other in every combination."""
    rng = np.random.default_rng(7)
    contents = [
        " ".join(str(w) for w in rng.choice(WORDS, size=int(rng.integers(2, 8)))) + "."
        for _ in range(400)
    ]
    owner = uuid.uuid4()
    vectors = near(np.ones(service.model_status.active.dimension, dtype=np.float32), 400, 0.5, 3)
    await insert_chunks(service, owner, contents, vectors)
    return owner


async def reference_bm25(
    service: RagService, owner: uuid.UUID, query: str
) -> dict[uuid.UUID, float]:
    """BM25 (``domain/bm25.py``, in Python) of every chunk of ``owner`` sharing a lexeme with
    ``query``, from the chunks themselves: Postgres only splits the text into lexemes."""
    lexemes = await service.pool.fetchval(
        "select tsvector_to_array(to_tsvector('english', $1))", query
    )
    rows = await service.pool.fetch(
        "select c.id, c.token_count as length, u.lexeme, cardinality(u.positions) as tf"
        " from xtyl_rag.chunks c cross join lateral unnest(c.tsv) u where c.owner_id = $1",
        owner,
    )
    frequencies: dict[uuid.UUID, dict[str, int]] = {}
    lengths: dict[uuid.UUID, int] = {}
    for row in rows:
        frequencies.setdefault(row["id"], {})[row["lexeme"]] = row["tf"]
        lengths[row["id"]] = row["length"]
    chunks = await service.pool.fetchval(
        "select count(*) from xtyl_rag.chunks where owner_id = $1", owner
    )
    holding = {lexeme: sum(1 for f in frequencies.values() if lexeme in f) for lexeme in lexemes}
    avgdl = average_length(chunks, sum(lengths.values()))
    return {
        chunk: bm25_score(lexemes, f, lengths[chunk], holding=holding, chunks=chunks, avgdl=avgdl)
        for chunk, f in frequencies.items()
        if set(f) & set(lexemes)
    }


def assert_bm25(hits: list[ChunkHit], reference: dict[uuid.UUID, float], k: int) -> None:
    """``hits`` are the ``k`` best of ``reference`` (ties in any order), with its scores."""
    assert len(hits) == min(k, len(reference))
    for hit in hits:
        assert hit.score == pytest.approx(reference[hit.chunk_id], rel=1e-9)
    scores = [hit.score for hit in hits]
    assert scores == sorted(scores, reverse=True)
    best = sorted(reference.values(), reverse=True)[: len(hits)]
    assert scores == pytest.approx(best, rel=1e-9)


@pytest.mark.parametrize(
    ("query", "k"),
    [("alpha beta", 5), ("alpha beta gamma", 40), ("kappa omega sigma theta zeta", 10)],
)
async def test_fulltext_is_bm25_by_owner_scan_and_by_index(
    service: RagService, wordy: uuid.UUID, query: str, k: int
) -> None:
    # Small owners are scanned row by row, large ones read through the (owner_id, tsv) GIN
    # index: both give BM25 over the owner's chunks (here every lexeme fits the budget).
    scanned, indexed = [
        await retriever(service, threshold).search(
            wordy, query, k=k, mode="fulltext", filters=SearchFilters()
        )
        for threshold in (20_000, 0)
    ]
    assert [hit.chunk_id for hit in indexed.hits] == [hit.chunk_id for hit in scanned.hits]
    reference = await reference_bm25(service, wordy, query)
    assert_bm25(indexed.hits, reference, k)
    assert_bm25(scanned.hits, reference, k)


async def test_bm25_prefers_rare_words_and_short_chunks(service: RagService) -> None:
    owner = uuid.uuid4()
    texts = [
        "Harbour cranes lift containers.",  # the rare word
        "Cranes lift containers in the harbour district near the old stone warehouses.",
        *[f"Containers are stacked in row {n}." for n in range(30)],  # the common word
    ]
    vectors = near(
        np.ones(service.model_status.active.dimension, dtype=np.float32), len(texts), 0.5, 11
    )
    ids = await insert_chunks(service, owner, texts, vectors)
    for threshold in (20_000, 0):
        found = await retriever(service, threshold).search(
            owner, "harbour containers", k=5, mode="fulltext", filters=SearchFilters()
        )
        # both words, the shorter chunk first; then the common word's chunks
        assert [hit.chunk_id for hit in found.hits[:2]] == ids[:2]
        assert_bm25(found.hits, await reference_bm25(service, owner, "harbour containers"), 5)


async def test_fulltext_index_is_per_owner(service: RagService) -> None:
    definition = await service.pool.fetchval(
        "select indexdef from pg_catalog.pg_indexes"
        " where schemaname = 'xtyl_rag' and indexname = 'chunks_owner_tsv_idx'"
    )
    assert definition is not None
    assert "gin (owner_id, tsv)" in definition


async def lexeme_counts(service: RagService, owner: uuid.UUID) -> dict[str, int]:
    rows = await service.pool.fetch(
        "select lexeme, chunks from xtyl_rag.owner_lexemes where owner_id = $1", owner
    )
    return {row["lexeme"]: row["chunks"] for row in rows}


async def test_lexeme_counts_follow_chunk_writes_and_deletes(service: RagService) -> None:
    owner, other = uuid.uuid4(), uuid.uuid4()
    vectors = near(np.ones(service.model_status.active.dimension, dtype=np.float32), 3, 0.5, 9)
    await insert_chunks(service, owner, ["Red apples.", "Red cherries.", "Green apples."], vectors)
    await insert_chunks(service, other, ["Red roses."], vectors[:1])
    assert await lexeme_counts(service, owner) == {"red": 2, "appl": 2, "cherri": 1, "green": 1}
    second = await insert_chunks(service, owner, ["Green pears."], vectors[:1])
    assert (await lexeme_counts(service, owner))["green"] == 2
    # deleting a document cascades to its chunks, and the counts follow
    document = await service.pool.fetchval(
        "select document_id from xtyl_rag.chunks where id = $1", second[0]
    )
    await service.pool.execute("delete from xtyl_rag.documents where id = $1", document)
    assert await lexeme_counts(service, owner) == {"red": 2, "appl": 2, "cherri": 1, "green": 1}
    await service.pool.execute("delete from xtyl_rag.chunks where owner_id = $1", owner)
    assert await lexeme_counts(service, owner) == {}
    assert await lexeme_counts(service, other) == {"red": 1, "rose": 1}  # untouched


async def test_chunks_cannot_be_rewritten_in_place(service: RagService) -> None:
    owner = uuid.uuid4()
    vectors = near(np.ones(service.model_status.active.dimension, dtype=np.float32), 1, 0.5, 4)
    [chunk] = await insert_chunks(service, owner, ["Blue skies."], vectors)
    with pytest.raises(asyncpg.FeatureNotSupportedError, match="immutable"):
        await service.pool.execute(
            "update xtyl_rag.chunks set content = 'Grey skies.' where id = $1", chunk
        )
    assert await lexeme_counts(service, owner) == {"blue": 1, "sky": 1}


@pytest.fixture(scope="module")
async def rare_and_common(
    service: RagService,
) -> tuple[uuid.UUID, list[uuid.UUID], list[uuid.UUID]]:
    """300 short chunks with a common word, 20 long ones with a rare word, 5 with both."""
    owner = uuid.uuid4()
    filler = " ".join(["padding"] * 30)
    common = [f"Common filler {n}." for n in range(300)]
    rare = [f"Rare {filler} {n}." for n in range(20)]
    both = [f"Common rare pair {n}." for n in range(5)]
    texts = common + rare + both
    vectors = near(
        np.ones(service.model_status.active.dimension, dtype=np.float32), len(texts), 0.5, 5
    )
    ids = await insert_chunks(service, owner, texts, vectors)
    return owner, ids[300:320], ids[320:]


async def test_a_large_owner_ranks_the_chunks_of_rarer_words(
    service: RagService,
    rare_and_common: tuple[uuid.UUID, list[uuid.UUID], list[uuid.UUID]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    owner, rare, both = rare_and_common
    search = retriever(service, 0)  # every owner is "large": the GIN index path
    reference = await reference_bm25(service, owner, "rare common")
    # within the budget every chunk sharing a word is scored: exactly BM25, as the scan
    everything = await search.search(
        owner, "rare common", k=10, mode="fulltext", filters=SearchFilters()
    )
    assert_bm25(everything.hits, reference, 10)
    assert {h.chunk_id for h in everything.hits[:5]} == set(both)
    # over the budget, the rare word's chunks are the candidates; the common word still scores
    monkeypatch.setattr(chunk_queries, "CANDIDATE_BUDGET", 50)
    pruned = await search.search(
        owner, "rare common", k=10, mode="fulltext", filters=SearchFilters()
    )
    assert {h.chunk_id for h in pruned.hits[:5]} == set(both)
    assert {h.chunk_id for h in pruned.hits[5:]} <= set(rare)
    for hit in pruned.hits:
        assert hit.score == pytest.approx(reference[hit.chunk_id], rel=1e-9)
    # too few chunks with the rare word for the rows asked: the common word's join them
    filled = await search.search(
        owner, "rare common", k=40, mode="fulltext", filters=SearchFilters()
    )
    assert len(filled.hits) == 40
    assert {h.chunk_id for h in filled.hits[:5]} == set(both)
    assert_bm25(filled.hits, reference, 40)


async def test_concurrent_writes_of_one_owner_keep_exact_counts(service: RagService) -> None:
    # Writers of one owner's chunks update the same counter rows; they must wait for each
    # other (rows locked in one order), never deadlock, and the counts must equal a recount.
    owner = uuid.uuid4()
    dimension = service.model_status.active.dimension
    words = ["apple", "banana", "cherry", "damson", "elder", "fig", "grape", "hazel"]

    async def write(n: int) -> None:
        texts = [" ".join(words[(n + i) % 8 :] + words[: (n + i) % 8]) for i in range(40)]
        vectors = near(np.ones(dimension, dtype=np.float32), len(texts), 0.5, 100 + n)
        ids = await insert_chunks(service, owner, texts, vectors)
        if n % 2:
            await service.pool.execute("delete from xtyl_rag.chunks where id = any($1)", ids[:20])

    await asyncio.gather(*(write(n) for n in range(8)))
    recount = await service.pool.fetch(
        "select l.lexeme, count(*)::integer as chunks from xtyl_rag.chunks c"
        " cross join lateral unnest(tsvector_to_array(c.tsv)) as l(lexeme)"
        " where c.owner_id = $1 group by l.lexeme",
        owner,
    )
    assert await lexeme_counts(service, owner) == {row["lexeme"]: row["chunks"] for row in recount}
    assert sum((await lexeme_counts(service, owner)).values()) == (8 * 40 - 4 * 20) * 8


async def text_stats(service: RagService, owner: uuid.UUID) -> tuple[int, int] | None:
    row = await service.pool.fetchrow(
        "select chunks, tokens from xtyl_rag.owner_text_stats where owner_id = $1", owner
    )
    return None if row is None else (row["chunks"], row["tokens"])


async def test_bm25_under_concurrent_writes_and_deletes(service: RagService) -> None:
    # Eight writers of one owner's chunks, half of them deleting some again, while searches
    # run: the statistics end equal to a recount, and the scores equal BM25 of what is left.
    owner = uuid.uuid4()
    dimension = service.model_status.active.dimension
    words = ["apple", "banana", "cherry", "damson", "elder", "fig", "grape", "hazel"]
    search = retriever(service, 0)
    done = asyncio.Event()

    async def write(n: int) -> None:
        texts = [" ".join(words[: 1 + (n + i) % 8]) + f" batch{n} item{i}." for i in range(30)]
        vectors = near(np.ones(dimension, dtype=np.float32), len(texts), 0.5, 200 + n)
        ids = await insert_chunks(service, owner, texts, vectors)
        if n % 2:
            await service.pool.execute("delete from xtyl_rag.chunks where id = any($1)", ids[:20])

    async def read() -> int:
        searched = 0
        while not done.is_set():
            found = await search.search(
                owner, "cherry hazel", k=10, mode="fulltext", filters=SearchFilters()
            )
            assert all(hit.score > 0 for hit in found.hits)
            searched += 1
        return searched

    reader = asyncio.create_task(read())
    await asyncio.gather(*(write(n) for n in range(8)))
    done.set()
    assert await reader > 0
    recount = await service.pool.fetchrow(
        "select count(*) as chunks, sum(token_count) as tokens from xtyl_rag.chunks"
        " where owner_id = $1",
        owner,
    )
    assert await text_stats(service, owner) == (recount["chunks"], recount["tokens"])
    assert recount["chunks"] == 8 * 30 - 4 * 20
    for k in (10, 50):
        found = await search.search(
            owner, "cherry hazel", k=k, mode="fulltext", filters=SearchFilters()
        )
        assert_bm25(found.hits, await reference_bm25(service, owner, "cherry hazel"), k)
    await service.pool.execute("delete from xtyl_rag.chunks where owner_id = $1", owner)
    assert await text_stats(service, owner) is None


async def test_a_search_sees_only_committed_statistics(service: RagService) -> None:
    # A write still in its transaction changes neither what a search finds nor its scores.
    owner = uuid.uuid4()
    dimension = service.model_status.active.dimension
    texts = ["Quartz clocks keep time.", "Clocks chime.", "Sundials keep time too."]
    vectors = near(np.ones(dimension, dtype=np.float32), len(texts), 0.5, 21)
    await insert_chunks(service, owner, texts, vectors)
    search = retriever(service, 0)
    before = await search.search(
        owner, "quartz clocks", k=5, mode="fulltext", filters=SearchFilters()
    )
    document = await service.pool.fetchval(
        "select document_id from xtyl_rag.chunks where owner_id = $1 limit 1", owner
    )
    async with service.pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        await conn.execute(
            "insert into xtyl_rag.chunks (id, document_id, owner_id, ordinal, content,"
            " token_count) select gen_random_uuid(), $1, $2, 100 + n, 'Quartz quartz.', 3"
            " from generate_series(1, 50) as n",
            document,
            owner,
        )
        during = await search.search(
            owner, "quartz clocks", k=5, mode="fulltext", filters=SearchFilters()
        )
        await transaction.rollback()
    assert [(h.chunk_id, h.score) for h in during.hits] == [
        (h.chunk_id, h.score) for h in before.hits
    ]
    assert await text_stats(service, owner) == (3, 10)
