"""RAG search and ingest on this machine: latency and recall per owner size, the plan
threshold, end-to-end ingest rate, and retrieval quality per mode.

    uv run python bench/bench_rag.py [--chunks 1000000] [--base 20000] [--queries 100]
                                     [--skip-ingest] [--skip-quality]

Starts its own Postgres (xtyl_devstack, pgvector), applies the migrations, and:

1. **Vectors of real text.** ``--base`` sentences from the standard library's docstrings are
   embedded with the local model (all-MiniLM-L6-v2); the ``--chunks`` rows are derived from
   them by small Gaussian perturbations (sigma 0.02 per dimension, cosine ~0.93 to the base)
   and renormalised: embedding 1M real chunks here would take hours, and random unit vectors
   make HNSW look far worse than it is on text (no cluster structure). Each owner draws from
   a window of neighbouring sentences (a user's documents share topics); queries are
   perturbed base sentences from the owner's window, full-text queries their text.
2. **Owners of very different sizes**: 5,000 owners of ~20 chunks, 75 of 2,000, 10 of 5,000,
   10 of 10,000 (the band just under the semantic threshold), 5 of 20,000 and 4 of 125,000
   (scaled down with ``--chunks``). Loaded with COPY, indexes built
   after loading (HNSW with the service's parameters, ``HNSW_BUILD``, and
   maintenance_work_mem high).
3. **Search latency** (p50/p99 per mode and group; the query embedding is precomputed, so
   this is the database side of ``Retriever.search``), **recall@10** of semantic search
   against an exact scan of the owner's chunks, and of full-text search against BM25 over
   every chunk sharing a word with the query. The query embedding is timed apart (the local
   model, and a repeated query from the cache). Then each mode's two plans forced on every
   group: where the owner scan stops being cheaper than the index is that mode's threshold
   (``SEARCH_EXACT_MAX_CHUNKS``, ``SEARCH_FULLTEXT_SCAN_MAX_CHUNKS``).
   Before the first ("cold") pass the HNSW index is prewarmed as the service does at start-up
   (``--no-prewarm`` to see the first pass without it).
4. **Ingest**: markdown documents through the worker's indexer (extraction child, chunking,
   embedding, one write transaction; two at a time, as the worker runs) beside the
   embedder's raw rate on the same chunks.
5. **Retrieval quality** (MRR@10, recall@10 per mode). No IR/QA collection with relevance
   judgements ships inside a PyPI package that this machine can install (BEIR, ir-datasets,
   mteb and the like download at run time); the substitute is known-item search over text
   the project did not write: each standard-library function with a docstring is a
   document (the docstring without its first line) and its summary line is the query, whose
   one right answer is that function's document.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import hashlib
import random
import re
import statistics
import sysconfig
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np

from xtyl_common.db import DatabaseConfig, create_pool
from xtyl_common.migrate import migrate
from xtyl_devstack.postgres import PostgresServer
from xtyl_rag.adapters.embedders import EmbedderConfig, LocalEmbedder, MiniLMTokenCounter, Vectors
from xtyl_rag.adapters.extraction import ExtractorPool
from xtyl_rag.adapters.postgres import ChunkSearch, DocumentRepository, ModelRegistry
from xtyl_rag.adapters.postgres.models import HNSW_BUILD, index_name
from xtyl_rag.adapters.vector_spaces import Embedders
from xtyl_rag.domain.chunking import chunk_text
from xtyl_rag.domain.documents import FileSource, sha256_text
from xtyl_rag.domain.planning import SearchTuning, SemanticPlan, plan_semantic
from xtyl_rag.domain.quotas import UserLimits
from xtyl_rag.domain.search import SearchFilters, SearchMode
from xtyl_rag.service.indexing import Indexer
from xtyl_rag.service.retrieval import Retriever

MODEL = "local:all-MiniLM-L6-v2"
DIM = 384
SIGMA = 0.02
K = 10
#: (group, owners, chunks per owner) for 1,000,000 chunks: "10k" is the band just under the
#: semantic threshold (SEARCH_EXACT_MAX_CHUNKS), the largest owners the exact scan reads
GROUPS = (
    ("~20", 5_000, 20),
    ("2k", 75, 2_000),
    ("5k", 10, 5_000),
    ("10k", 10, 10_000),
    ("20k", 5, 20_000),
    ("125k", 4, 125_000),
)
MODES: tuple[SearchMode, ...] = ("semantic", "fulltext", "hybrid")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
#: not the standard library's own prose (installed packages, tests, vendored code)
_SKIPPED_DIRS = frozenset(
    {"site-packages", "dist-packages", "test", "tests", "idlelib", "lib2to3", "ensurepip"}
)

#: One bench owner holds thousands of documents: the per-user quotas are not what is measured.
BENCH_LIMITS = UserLimits(documents=10**9, chunks=10**12, answers_per_day=10**9)


# --- text -----------------------------------------------------------------------------------


def stdlib_docstrings() -> list[tuple[str, str, str]]:
    """(qualified name, summary line, rest) of every stdlib function/class docstring."""
    root = Path(sysconfig.get_paths()["stdlib"])
    found: list[tuple[str, str, str]] = []
    for path in sorted(root.glob("**/*.py")):
        if _SKIPPED_DIRS & set(path.relative_to(root).parts):
            continue
        try:
            tree = ast.parse(path.read_text("utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                doc = ast.get_docstring(node)
                if not doc:
                    continue
                summary, _, rest = doc.strip().partition("\n")
                found.append((f"{path.stem}.{node.name}", summary.strip(), rest.strip()))
    return found


def base_sentences(docs: Sequence[tuple[str, str, str]], count: int) -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    for _name, summary, rest in docs:
        for sentence in [summary, *_SENTENCE.split(" ".join(rest.split()))]:
            if 30 <= len(sentence) <= 400 and sentence not in seen:
                seen.add(sentence)
                out.append(sentence)
    if len(out) < count:
        print(f"  only {len(out)} distinct sentences: using them all")
    return out[:count]


# --- load -----------------------------------------------------------------------------------


@dataclass
class Owner:
    id: uuid.UUID
    group: str
    size: int
    window: tuple[int, int]  # base sentences [start, start + width)


@dataclass
class Timings:
    steps: dict[str, float] = field(default_factory=dict)

    def run(self, name: str, started: float) -> None:
        self.steps[name] = time.perf_counter() - started
        print(f"  {name}: {self.steps[name]:.1f} s")


def layout(total: int, base: int, rng: random.Random) -> list[Owner]:
    """The 1M layout scaled to ``total``: the small owners multiply, the big ones shrink."""
    scale = total / 1_000_000
    owners: list[Owner] = []
    for group, count, size in GROUPS:
        if size <= 20:
            n_owners, per_owner = max(1, round(count * scale)), size
        else:
            n_owners, per_owner = count, max(20, round(size * scale))
        for _ in range(n_owners):
            width = min(base, max(40, per_owner // 4))
            start = rng.randrange(0, base - width + 1)
            owners.append(Owner(uuid.uuid4(), group, per_owner, (start, start + width)))
    return owners


def perturbed(base_vectors: Vectors, indices: np.ndarray, rng: np.random.Generator) -> Vectors:
    noisy = base_vectors[indices] + rng.normal(0, SIGMA, size=(len(indices), DIM)).astype(
        np.float32
    )
    return (noisy / np.linalg.norm(noisy, axis=1, keepdims=True)).astype(np.float32)


async def load(
    conn: Any,
    owners: Sequence[Owner],
    texts: Sequence[str],
    base_vectors: Vectors,
    rng: np.random.Generator,
) -> int:
    await conn.execute("set session_replication_role = replica")  # no FK checks while loading
    for name, _ in await secondary_indexes(conn):
        await conn.execute(f"drop index xtyl_rag.{name}")
    await conn.execute(
        "insert into xtyl_rag.embedding_models (model, dimension, state, activated_at)"
        " values ($1, $2, 'active', now()) on conflict do nothing",
        MODEL,
        DIM,
    )
    loaded = 0
    docs: list[tuple[Any, ...]] = []
    chunks: list[tuple[Any, ...]] = []
    vectors: list[tuple[Any, ...]] = []

    async def flush() -> None:
        await conn.copy_records_to_table(
            "documents",
            schema_name="xtyl_rag",
            columns=[
                "id",
                "owner_id",
                "source",
                "title",
                "status",
                "content_sha256",
                "indexed_sha256",
                "chunk_count",
                "embedding_model",
            ],
            records=docs,
        )
        await conn.copy_records_to_table(
            "chunks",
            schema_name="xtyl_rag",
            columns=["id", "document_id", "owner_id", "ordinal", "content", "token_count"],
            records=chunks,
        )
        await conn.copy_records_to_table(
            "chunk_embeddings",
            schema_name="xtyl_rag",
            columns=["chunk_id", "model", "owner_id", "document_id", "embedding"],
            records=vectors,
        )
        docs.clear()
        chunks.clear()
        vectors.clear()

    for owner in owners:
        start, end = owner.window
        indices = rng.integers(start, end, size=owner.size)
        owner_vectors = perturbed(base_vectors, indices, rng)
        for doc_start in range(0, owner.size, 500):
            doc_id = uuid.uuid4()
            doc_size = min(500, owner.size - doc_start)
            digest = hashlib.sha256(doc_id.bytes).hexdigest()
            docs.append(
                (
                    doc_id,
                    owner.id,
                    "inline",
                    f"doc {doc_start}",
                    "ready",
                    digest,
                    digest,
                    doc_size,
                    MODEL,
                )
            )
            for ordinal in range(doc_size):
                row = doc_start + ordinal
                chunk_id = uuid.uuid4()
                chunks.append((chunk_id, doc_id, owner.id, ordinal, texts[indices[row]], 40))
                vectors.append((chunk_id, MODEL, owner.id, doc_id, owner_vectors[row]))
        loaded += owner.size
        if len(chunks) >= 50_000:
            await flush()
    await flush()
    await conn.copy_records_to_table(
        "owner_stats",
        schema_name="xtyl_rag",
        columns=["owner_id", "chunk_count"],
        records=[(o.id, o.size) for o in owners],
    )
    await conn.execute(
        "create table if not exists public.bench_owners (owner_id uuid primary key,"
        " grp text not null, size integer not null)"
    )
    await conn.copy_records_to_table(
        "bench_owners",
        columns=["owner_id", "grp", "size"],
        records=[(o.id, o.group, o.size) for o in owners],
    )
    await conn.execute("set session_replication_role = origin")
    return loaded


async def secondary_indexes(conn: Any) -> list[tuple[str, str]]:
    """The migrations' search indexes on chunks and chunk_embeddings (name, definition):
    dropped while loading, rebuilt after, so the bench always measures the schema it ships."""
    rows = await conn.fetch(
        "select i.indexname, i.indexdef from pg_catalog.pg_indexes i"
        " join pg_catalog.pg_class c on c.relname = i.indexname"
        " join pg_catalog.pg_index x on x.indexrelid = c.oid"
        " where i.schemaname = 'xtyl_rag' and i.tablename in ('chunks', 'chunk_embeddings')"
        " and not x.indisunique and not x.indisprimary order by i.indexname"
    )
    return [(row["indexname"], row["indexdef"]) for row in rows]


async def count_owner_text(conn: Any) -> None:
    """COPY ran with triggers off: BM25's per-owner statistics, as migration 0006 counts them."""
    await conn.execute(
        "insert into xtyl_rag.owner_text_stats (owner_id, chunks, tokens)"
        " select owner_id, count(*), sum(token_count) from xtyl_rag.chunks group by owner_id"
        " on conflict (owner_id) do update set chunks = excluded.chunks, tokens = excluded.tokens",
        timeout=None,
    )


async def build_indexes(conn: Any, timings: Timings, indexes: list[tuple[str, str]]) -> None:
    await conn.execute("set maintenance_work_mem = '6GB'")
    await conn.execute("set max_parallel_maintenance_workers = 1")
    for name, sql in (
        *indexes,
        (
            f"HNSW cosine ({HNSW_BUILD})",
            f"create index {index_name(MODEL)} on xtyl_rag.chunk_embeddings using hnsw"
            f" ((embedding::vector({DIM})) vector_cosine_ops) with ({HNSW_BUILD})"
            f" where model = '{MODEL}'",
        ),
    ):
        started = time.perf_counter()
        await conn.execute(sql, timeout=None)
        timings.run(f"index {name}", started)
    started = time.perf_counter()
    # COPY ran with triggers off: count the owners' lexemes as migration 0005's backfill does
    await conn.execute(
        "insert into xtyl_rag.owner_lexemes (owner_id, lexeme, chunks)"
        " select c.owner_id, l.lexeme, count(*)::integer from xtyl_rag.chunks c"
        " cross join lateral unnest(tsvector_to_array(c.tsv)) as l(lexeme)"
        " group by c.owner_id, l.lexeme on conflict (owner_id, lexeme) do nothing",
        timeout=None,
    )
    timings.run("owner lexeme counts", started)
    started = time.perf_counter()
    await count_owner_text(conn)
    timings.run("owner text stats", started)
    started = time.perf_counter()
    await conn.execute("vacuum analyze xtyl_rag.chunk_embeddings", timeout=None)
    await conn.execute("vacuum analyze xtyl_rag.chunks", timeout=None)
    await conn.execute("vacuum analyze xtyl_rag.documents", timeout=None)
    timings.run("vacuum analyze", started)


# --- search ---------------------------------------------------------------------------------


class FixedEmbedder:
    """The bench's query vectors, precomputed: search latency without model inference."""

    def __init__(self) -> None:
        self.vectors: dict[str, Vectors] = {}

    @property
    def model(self) -> str:
        return MODEL

    @property
    def dimension(self) -> int:
        return DIM

    @property
    def max_batch(self) -> int:
        return 1

    async def embed(self, texts: Sequence[str]) -> Vectors:
        return np.stack([self.vectors[text][0] for text in texts])

    async def aclose(self) -> None:
        return None


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def exact_top(pool: asyncpg.Pool, owner: uuid.UUID, vector: np.ndarray) -> list[uuid.UUID]:
    rows = await pool.fetch(
        "select chunk_id from xtyl_rag.chunk_embeddings where owner_id = $1 and model = $2"
        " order by embedding <=> $3 limit $4",
        owner,
        MODEL,
        vector,
        K,
    )
    return [row[0] for row in rows]


@dataclass
class Query:
    owner: Owner
    text: str
    vector: np.ndarray
    #: the K nearest chunks (exact scan)
    truth: list[uuid.UUID]
    #: the K best chunks by BM25 over every chunk sharing a lexeme (the owner scan)
    text_truth: list[uuid.UUID] = field(default_factory=list[uuid.UUID])


async def time_searches(
    retriever: Retriever, queries: dict[str, list[Query]], tuning: SearchTuning, per_group: int
) -> None:
    # Two passes over every query: the first after a (re)start of Postgres reads the index
    # pages into shared buffers ("cold"), the second is the steady state of a busy service.
    measured: dict[tuple[str, str, str], list[float]] = {}
    recalls: dict[tuple[str, str], list[float]] = {}
    plans: dict[tuple[str, str], str] = {}
    for phase in ("cold", "warm"):
        for group, picked in queries.items():
            for mode in MODES:
                latencies = measured.setdefault((phase, group, mode), [])
                for query in picked:
                    started = time.perf_counter()
                    result = await retriever.search(
                        query.owner.id, query.text, k=K, mode=mode, filters=SearchFilters()
                    )
                    latencies.append((time.perf_counter() - started) * 1000)
                    plans[group, mode] = result.plan or "-"
                    if mode != "hybrid" and phase == "warm":
                        got = {hit.chunk_id for hit in result.hits}
                        truth = set(query.truth if mode == "semantic" else query.text_truth)
                        assert truth, f"no {mode} truth for {query.text!r}"
                        recalls.setdefault((group, mode), []).append(len(got & truth) / len(truth))
    print(
        f"\nsearch: k={K}, {per_group} queries per group, thresholds: semantic"
        f" {tuning.exact_max_chunks}, full text {tuning.fulltext_scan_max_chunks} chunks,"
        f" ef_search {tuning.ef_search}; p50/p99 of the second pass, cold: the first pass after"
        " Postgres started; recall@10: semantic of the exact scan, full text of BM25 over"
        " every chunk sharing a word"
    )
    print(
        f"  {'group':>6} {'mode':>9} {'plan':>6} {'p50 ms':>7} {'p99 ms':>7} {'recall@10':>9}"
        f" {'cold p50':>8} {'cold p99':>8}"
    )
    for group in queries:
        for mode in MODES:
            warm, cold = measured["warm", group, mode], measured["cold", group, mode]
            got = recalls.get((group, mode))
            recall = f"{statistics.mean(got):.3f}" if got else "-"
            print(
                f"  {group:>6} {mode:>9} {plans[group, mode]:>6} {pct(warm, 0.5):7.1f}"
                f" {pct(warm, 0.99):7.1f} {recall:>9} {pct(cold, 0.5):8.1f} {pct(cold, 0.99):8.1f}"
            )


async def search_bench(
    pool: asyncpg.Pool,
    embedder: LocalEmbedder,
    per_group: int,
    tuning: SearchTuning,
    rng: np.random.Generator,
    *,
    prewarm: bool,
) -> None:
    fixed = FixedEmbedder()
    embedders = Embedders(EmbedderConfig(), fixed, None)  # type: ignore[arg-type]
    chunks = ChunkSearch(pool)
    retriever = Retriever(
        chunks=chunks, models=ModelRegistry(pool), embedders=embedders, tuning=tuning, llm=None
    )
    queries: dict[str, list[Query]] = {}
    for group, *_ in GROUPS:
        members = await pool.fetch(
            "select owner_id, size from public.bench_owners where grp = $1 order by owner_id",
            group,
        )
        picked: list[Query] = []
        for n in range(per_group):
            member = members[n % len(members)]
            owner = Owner(member["owner_id"], group, member["size"], (0, 0))
            seed = await pool.fetchrow(
                "select c.content, e.embedding from xtyl_rag.chunk_embeddings e"
                " join xtyl_rag.chunks c on c.id = e.chunk_id where e.owner_id = $1"
                " offset $2 limit 1",
                owner.id,
                int(rng.integers(0, owner.size)),
            )
            assert seed is not None
            noisy = np.asarray(seed["embedding"].to_numpy(), dtype=np.float32) + rng.normal(
                0, SIGMA, DIM
            ).astype(np.float32)
            vector = (noisy / np.linalg.norm(noisy)).astype(np.float32)
            text = f"{seed['content']} #{group}-{n}"
            fixed.vectors[text] = vector[None, :]
            picked.append(Query(owner, text, vector, await exact_top(pool, owner.id, vector)))
            scanned = await chunks.fulltext(
                owner.id, text, limit=K, filters=SearchFilters(), scan_owner=True
            )
            picked[-1].text_truth = [r.chunk_id for r in scanned]
        queries[group] = picked
    total = await chunks.total_vectors()
    if prewarm:  # as the service does at start-up, before the first ("cold") pass
        started = time.perf_counter()
        done = await chunks.prewarm(MODEL)
        print(f"\nHNSW index prewarmed ({done}) in {time.perf_counter() - started:.1f} s")
    await time_searches(retriever, queries, tuning, per_group)

    print("\nsemantic plans forced per group (the threshold is where exact stops being cheaper):")
    print(
        f"  {'group':>6} {'chunks':>7} {'exact p50':>9} {'exact p99':>9} {'hnsw p50':>8}"
        f" {'hnsw p99':>8} {'hnsw recall':>11} {'ef_search':>9}"
    )
    for group, picked in queries.items():
        size = picked[0].owner.size
        row: list[str] = []
        ef = 0
        recall = 0.0
        for kind in ("exact", "hnsw"):
            latencies = []
            recalls = []
            for query in picked:
                if kind == "exact":
                    plan = SemanticPlan("exact", K)
                else:
                    plan = plan_semantic(
                        size,
                        K,
                        SearchTuning(
                            exact_max_chunks=0,
                            ef_search=tuning.ef_search,
                            max_scan_tuples=tuning.max_scan_tuples,
                        ),
                        total_chunks=total,
                    )
                    ef = plan.ef_search
                started = time.perf_counter()
                found = await chunks.semantic(
                    query.owner.id,
                    query.vector,
                    model=MODEL,
                    dimension=DIM,
                    plan=plan,
                    filters=SearchFilters(),
                )
                latencies.append((time.perf_counter() - started) * 1000)
                got = {r.chunk_id for r in found}
                recalls.append(len(got & set(query.truth)) / max(1, len(query.truth)))
            row += [f"{pct(latencies, 0.5):.1f}", f"{pct(latencies, 0.99):.1f}"]
            recall = statistics.mean(recalls)
        print(
            f"  {group:>6} {size:>7} {row[0]:>9} {row[1]:>9} {row[2]:>8} {row[3]:>8}"
            f" {recall:>11.3f} {ef:>9}"
        )

    await fulltext_plans(chunks, queries)
    await embedding_times(pool, chunks, embedder, tuning, queries)


async def fulltext_plans(chunks: ChunkSearch, queries: dict[str, list[Query]]) -> None:
    print(
        "\nfull-text plans forced per group (the threshold is where the owner scan stops"
        " being cheaper); recall: of BM25 over every chunk sharing a word"
    )
    print(
        f"  {'group':>6} {'chunks':>7} {'scan p50':>8} {'scan p99':>8} {'index p50':>9}"
        f" {'index p99':>9} {'index recall':>12}"
    )
    for group, picked in queries.items():
        size = picked[0].owner.size
        timed: dict[bool, list[float]] = {True: [], False: []}
        recalls = []
        for query in picked:
            for scan in (True, False):
                started = time.perf_counter()
                found = await chunks.fulltext(
                    query.owner.id, query.text, limit=K, filters=SearchFilters(), scan_owner=scan
                )
                timed[scan].append((time.perf_counter() - started) * 1000)
                if not scan:
                    got = {r.chunk_id for r in found}
                    recalls.append(len(got & set(query.text_truth)) / len(query.text_truth))
        print(
            f"  {group:>6} {size:>7} {pct(timed[True], 0.5):8.1f} {pct(timed[True], 0.99):8.1f}"
            f" {pct(timed[False], 0.5):9.1f} {pct(timed[False], 0.99):9.1f}"
            f" {statistics.mean(recalls):12.3f}"
        )


async def embedding_times(
    pool: asyncpg.Pool,
    chunks: ChunkSearch,
    embedder: LocalEmbedder,
    tuning: SearchTuning,
    queries: dict[str, list[Query]],
) -> None:
    texts = [query.text for picked in queries.values() for query in picked][:50]
    embedder.embed_sync(texts[:2])  # warm up
    alone: list[float] = []
    for text in texts:
        started = time.perf_counter()
        await embedder.embed([text])
        alone.append((time.perf_counter() - started) * 1000)
    cached_retriever = Retriever(
        chunks=chunks,
        models=ModelRegistry(pool),
        embedders=Embedders(EmbedderConfig(), embedder, None),
        tuning=tuning,
        llm=None,
    )
    repeated: list[float] = []
    for text in texts:
        await cached_retriever.search(
            queries["~20"][0].owner.id, text, k=K, mode="semantic", filters=SearchFilters()
        )
        started = time.perf_counter()
        await cached_retriever.query_vector(embedder, text)
        repeated.append((time.perf_counter() - started) * 1000)
    print(
        f"\nquery embedding (not in the search figures above; {len(texts)} queries):"
        f" local model p50 {pct(alone, 0.5):.1f} ms, p99 {pct(alone, 0.99):.1f} ms;"
        f" a repeated query (cache) p50 {pct(repeated, 0.5):.3f} ms"
    )


# --- ingest ---------------------------------------------------------------------------------


async def ingest_bench(
    pool: asyncpg.Pool, embedder: LocalEmbedder, docs: Sequence[tuple[str, str, str]], n: int
) -> None:
    counter = MiniLMTokenCounter.load()
    texts: list[str] = []
    for start in range(0, len(docs), 12):
        group = docs[start : start + 12]
        texts.append(
            "\n\n".join(f"# {name}\n\n{summary}\n\n{rest}" for name, summary, rest in group)
        )
        if len(texts) == n:
            break
    chunk_texts = [c.content for t in texts for c in chunk_text(t, counter)]
    embedder.embed_sync(chunk_texts[:32])  # warm up

    def raw_rate() -> float:
        started = time.perf_counter()
        embedder.embed_sync(chunk_texts)
        return len(chunk_texts) / (time.perf_counter() - started)

    raw_before = raw_rate()

    config = EmbedderConfig()
    embedders = Embedders(config, embedder, None)
    documents = DocumentRepository(pool, limits=BENCH_LIMITS)
    async with ExtractorPool() as extractor:
        await extractor.start()
        indexer = Indexer(
            documents=documents,
            models=ModelRegistry(pool),
            embedders=embedders,
            storage=None,  # type: ignore[arg-type]  # bytes are given
            extractor=extractor,
            counter=counter,
            max_document_bytes=50 * 2**20,
            max_attempts=5,
        )
        owner = uuid.uuid4()
        pending: list[tuple[uuid.UUID, bytes]] = []
        for number, text in enumerate(texts):
            data = text.encode()
            source = FileSource(
                file_id=uuid.uuid4(),
                owner_id=owner,
                name=f"doc{number}.md",
                content_type="text/markdown",
                size=len(data),
                sha256=hashlib.sha256(data).hexdigest(),
            )
            document = await documents.upsert_file(source, title=source.name)
            pending.append((document.id, data))
        semaphore = asyncio.Semaphore(2)  # the worker's INDEX_CONCURRENCY

        async def one(document_id: uuid.UUID, data: bytes) -> int:
            async with semaphore:
                return (await indexer.index(document_id, data=data)).chunks

        started = time.perf_counter()
        written = sum(await asyncio.gather(*(one(d, b) for d, b in pending)))
        seconds = time.perf_counter() - started
    e2e = written / seconds
    raw = (raw_before + raw_rate()) / 2  # before and after: the machine drifts
    print(
        f"\ningest: {len(texts)} markdown documents, {written} chunks"
        f" ({len(chunk_texts)} in the raw run)"
    )
    print(f"  embedder raw rate (same chunks, embed_sync, batch 16): {raw:7.1f} chunks/s")
    print(
        f"  end to end (extract, chunk, embed, write):   {e2e:7.1f} chunks/s"
        f"  = {e2e / raw:.2f} of raw"
    )


# --- quality --------------------------------------------------------------------------------


def docstring_set(
    docs: Sequence[tuple[str, str, str]], n: int, queries: int
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The known-item set: ``n`` documents (title, text) and ``queries`` (query, title of the
    one right document): a docstring's summary line asks for the rest of it."""
    rng = random.Random(7)
    candidates = [d for d in docs if len(d[1]) >= 40 and 200 <= len(d[2]) <= 4000]
    by_summary: dict[str, tuple[str, str, str]] = {}
    for d in candidates:
        by_summary.setdefault(d[1], d)  # one document per distinct summary: one right answer
    chosen = rng.sample(sorted(by_summary.values()), min(n, len(by_summary)))
    asked = rng.sample(sorted(s for _name, s, _rest in chosen), min(queries, len(chosen)))
    title = {summary: name for name, summary, _rest in chosen}
    return [(name, rest) for name, _summary, rest in chosen], [(q, title[q]) for q in asked]


async def index_inline(
    pool: asyncpg.Pool, embedder: LocalEmbedder, documents: Sequence[tuple[str, str]]
) -> tuple[uuid.UUID, dict[str, uuid.UUID]]:
    """A new owner holding ``documents`` (title, text), indexed as the worker does (chunking,
    embedding, one write each); returns the owner and each title's document id."""
    counter = MiniLMTokenCounter.load()
    owner = uuid.uuid4()
    await ModelRegistry(pool).register(embedder.model, embedder.dimension)
    repository = DocumentRepository(pool, limits=BENCH_LIMITS)
    indexer = Indexer(
        documents=repository,
        models=ModelRegistry(pool),
        embedders=Embedders(EmbedderConfig(), embedder, None),
        storage=None,  # type: ignore[arg-type]
        extractor=None,  # type: ignore[arg-type]  # inline texts need no extraction
        counter=counter,
        max_document_bytes=50 * 2**20,
        max_attempts=5,
    )
    ids: dict[str, uuid.UUID] = {}
    for title, text in documents:
        document = await repository.create_inline(
            owner, title=title, text=text, sha256=sha256_text(text), metadata={}
        )
        await indexer.index(document.id)
        ids[title] = document.id
    return owner, ids


async def ranked_documents(
    retriever: Retriever, owner: uuid.UUID, query: str, mode: SearchMode
) -> list[uuid.UUID]:
    """The first ``K`` distinct documents of a search of ``3 K`` chunks."""
    result = await retriever.search(owner, query, k=K * 3, mode=mode, filters=SearchFilters())
    ranked: list[uuid.UUID] = []
    for hit in result.hits:
        if hit.document_id not in ranked:
            ranked.append(hit.document_id)
    return ranked[:K]


def reciprocal_rank(ranked: Sequence[uuid.UUID], right: uuid.UUID) -> float:
    return 1 / (ranked.index(right) + 1) if right in ranked[:K] else 0.0


async def quality_bench(
    pool: asyncpg.Pool,
    embedder: LocalEmbedder,
    docs: Sequence[tuple[str, str, str]],
    n: int,
    queries: int,
) -> None:
    documents, asked = docstring_set(docs, n, queries)
    started = time.perf_counter()
    owner, ids = await index_inline(pool, embedder, documents)
    print(
        f"\nquality: {len(documents)} stdlib docstrings indexed in"
        f" {time.perf_counter() - started:.0f} s; {len(asked)} summary-line queries,"
        " one right document each"
    )
    retriever = Retriever(
        chunks=ChunkSearch(pool),
        models=ModelRegistry(pool),
        embedders=Embedders(EmbedderConfig(), embedder, None),
        tuning=SearchTuning(),
        llm=None,
    )
    print(f"  {'mode':>9} {'MRR@10':>7} {'recall@10':>9}")
    for mode in MODES:
        reciprocal = [
            reciprocal_rank(await ranked_documents(retriever, owner, query, mode), ids[title])
            for query, title in asked
        ]
        hits = sum(1 for r in reciprocal if r > 0)
        print(f"  {mode:>9} {statistics.mean(reciprocal):7.3f} {hits / len(asked):9.3f}")


# --- main -----------------------------------------------------------------------------------


async def run(args: argparse.Namespace, dsn: str) -> None:
    timings = Timings()
    rng = np.random.default_rng(42)
    await migrate(dsn)
    docs = stdlib_docstrings()
    pool = await create_pool(
        DatabaseConfig(url=dsn, max_size=4, vector=True, command_timeout_s=3600)
    )
    try:
        present = await pool.fetchval("select count(*) from xtyl_rag.chunk_embeddings")
        embedder = LocalEmbedder.load_sync(max_batch=16)
        if present >= args.chunks:
            print(f"  reusing the {present} chunks already loaded")
            if not await pool.fetchval("select count(*) from xtyl_rag.owner_text_stats"):
                async with pool.acquire() as conn:
                    await count_owner_text(conn)  # loaded before migration 0006
        else:
            texts = base_sentences(docs, args.base)
            started = time.perf_counter()
            base_embedder = LocalEmbedder.load_sync(max_batch=64)
            base_vectors = base_embedder.embed_sync(texts)
            timings.run(f"embed {len(texts)} base sentences", started)
            owners = layout(args.chunks, len(texts), random.Random(42))
            async with pool.acquire() as conn:
                indexes = await secondary_indexes(conn)
                started = time.perf_counter()
                loaded = await load(conn, owners, texts, base_vectors, rng)
                timings.run(f"COPY {loaded} chunks of {len(owners)} owners", started)
                await build_indexes(conn, timings, indexes)
        tuning = SearchTuning(
            exact_max_chunks=args.threshold,
            ef_search=args.ef_search,
            fulltext_scan_max_chunks=args.fulltext_threshold,
        )
        await search_bench(pool, embedder, args.queries, tuning, rng, prewarm=not args.no_prewarm)
        if not args.skip_ingest:
            await ingest_bench(pool, embedder, docs, args.ingest_docs)
        if not args.skip_quality:
            await quality_bench(pool, embedder, docs, args.quality_docs, args.quality_queries)
    finally:
        await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=1_000_000)
    parser.add_argument("--base", type=int, default=12_000, help="real sentences embedded")
    parser.add_argument("--queries", type=int, default=100, help="queries per owner group")
    parser.add_argument("--threshold", type=int, default=SearchTuning().exact_max_chunks)
    parser.add_argument("--ef-search", type=int, default=SearchTuning().ef_search)
    parser.add_argument(
        "--fulltext-threshold", type=int, default=SearchTuning().fulltext_scan_max_chunks
    )
    parser.add_argument("--ingest-docs", type=int, default=30)
    parser.add_argument("--quality-docs", type=int, default=1000)
    parser.add_argument("--quality-queries", type=int, default=300)
    parser.add_argument("--skip-ingest", action="store_true")
    parser.add_argument(
        "--no-prewarm", action="store_true", help="no pg_prewarm of the HNSW index before"
    )
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--dsn", help="an existing database (default: start one)")
    parser.add_argument(
        "--data-dir", help="keep the started Postgres here; a second run reuses the loaded chunks"
    )
    args = parser.parse_args()
    started = time.perf_counter()
    if args.dsn:
        asyncio.run(run(args, args.dsn))
        print(f"\nbench_rag: {time.perf_counter() - started:.0f} s in all")
        return
    with tempfile.TemporaryDirectory(prefix="bench-rag-") as tmp:
        data_dir = Path(args.data_dir) if args.data_dir else Path(tmp)
        data_dir.mkdir(parents=True, exist_ok=True)
        data_dir.chmod(0o755)
        server = PostgresServer(data_dir / "pg", log_path=data_dir / "pg.log")
        server.start()
        try:
            for setting in (
                "shared_buffers = '4GB'",
                "effective_cache_size = '16GB'",
                "max_wal_size = '8GB'",
                "work_mem = '64MB'",
                "synchronous_commit = off",
            ):
                asyncio.run(_alter(server.dsn(), setting))
            server.stop()
            server.start()
            asyncio.run(run(args, server.dsn()))
        finally:
            server.stop()
    print(f"\nbench_rag: {time.perf_counter() - started:.0f} s in all")


async def _alter(dsn: str, setting: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"alter system set {setting}")
    finally:
        await conn.close()


if __name__ == "__main__":
    main()
