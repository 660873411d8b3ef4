"""Retrieval quality per search mode on two known-item sets of text nobody here wrote, and the
fusion weight chosen on one of them.

    uv run python bench/bench_quality.py [--manual /usr/share/doc/postgresql-doc-15/html]
                                         [--tune docstrings|manual|none] [--data-dir DIR]

1. **Docstrings** (the set of ``bench/bench_rag.py``): each standard-library function with a
   docstring is a document (the docstring without its first line); its summary line is the
   query, and that function's document the one right answer.
2. **The PostgreSQL manual** (Debian's ``postgresql-doc-15``, HTML; ``apt-get install
   postgresql-doc-15``): each page is a document, its navigation, tables of contents and
   headings removed. Queries come from the manual's own structure: a section heading (used
   once in the whole manual, two words or more: "Unique Indexes", "Asynchronous Commit") or a
   reference page's purpose line ("define a new index" from CREATE INDEX); the right answer
   is the page that holds it.

Both sets are indexed as the worker indexes (chunking, the local all-MiniLM-L6-v2, one write
per document) into a Postgres started here. For every query each mode returns ``3 K`` chunks;
their first ``K`` distinct documents are ranked: MRR@10 and recall@10 (the right page in the
first ten). Then the fusion of the semantic and full-text rankings is tuned on one set
(``--tune``) by a grid over its weight, and reported on both: the weight shipped in
``xtyl_rag.domain.fusion`` comes from this table.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import html
import random
import re
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).parent))

from bench_rag import (  # the docstring set and indexing are bench_rag's
    MODES,
    K,
    docstring_set,
    index_inline,
    ranked_documents,
    reciprocal_rank,
    stdlib_docstrings,
)
from xtyl_common.db import DatabaseConfig, create_pool
from xtyl_common.migrate import migrate
from xtyl_devstack.postgres import PostgresServer
from xtyl_rag.adapters.embedders import EmbedderConfig, LocalEmbedder
from xtyl_rag.adapters.postgres import ChunkSearch, ModelRegistry
from xtyl_rag.adapters.vector_spaces import Embedders
from xtyl_rag.domain.planning import SearchTuning, candidate_depth
from xtyl_rag.domain.search import SearchFilters
from xtyl_rag.service.retrieval import Retriever

MANUAL = Path("/usr/share/doc/postgresql-doc-15/html")
#: headings that name a kind of section, not a subject: many pages have them
GENERIC = frozenset(
    {
        "description", "parameters", "examples", "notes", "compatibility", "see", "also",
        "overview", "introduction", "outputs", "options", "environment", "files",
        "diagnostics", "usage", "authors", "author", "history",
    }
)  # fmt: skip
_DROPPED_BLOCKS = re.compile(
    r'<div class="(?:navheader|navfooter|toc)">.*?</div>|<h[1-6][^>]*>.*?</h[1-6]>', re.S
)
_PURPOSE = re.compile(r'(<div class="refnamediv">.*?)<p>(.*?)</p>', re.S)
_HEADING = re.compile(r'<h[2-4] class="title"[^>]*>(.*?)</h[2-4]>', re.S)
_NUMBER = re.compile(r"^(?:(?:Chapter|Part|Appendix) )?(?:[A-Z]|[IVX]+|\d+)(?:\.\d+)*\.\s+")
_BLOCK = re.compile(r"</?(?:p|div|pre|li|dt|dd|tr|table|h\d|dl|ul|ol|blockquote)\b[^>]*>", re.I)
_TAG = re.compile(r"<[^>]+>")


def _text(fragment: str) -> str:
    return " ".join(html.unescape(_TAG.sub("", fragment)).split())


def manual_set(
    root: Path, pages: int, queries: int
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """``pages`` pages of the manual (title, text) and ``queries`` (query, page title)."""
    found: dict[str, tuple[str, list[str]]] = {}  # page -> (text, its queries)
    heading_pages: dict[str, set[str]] = {}
    for path in sorted(root.glob("*.html")):
        if path.name.startswith("release") or path.name in {"bookindex.html", "index.html"}:
            continue
        page = path.read_text("utf-8")
        asked: list[str] = []
        for raw in _HEADING.findall(page):
            heading = _NUMBER.sub("", _text(raw))
            heading_pages.setdefault(heading.lower(), set()).add(path.name)
            asked.append(heading)
        purpose = _PURPOSE.search(page)
        if purpose:
            line = _text(purpose.group(2))
            if " — " in line:
                asked.append(line.split(" — ", 1)[1])
            page = page[: purpose.start(2) - 3] + page[purpose.end(2) + 4 :]
        body = _DROPPED_BLOCKS.sub(" ", page.split("<body", 1)[-1].split(">", 1)[-1])
        text = "\n\n".join(line for line in (_text(b) for b in _BLOCK.split(body)) if line)
        if len(text) >= 400:
            found[path.name] = (text, asked)
    usable: list[tuple[str, str]] = []
    for name, (_page, asked) in found.items():
        for query in asked:
            words = query.split()
            if (
                2 <= len(words) <= 12
                and len(heading_pages.get(query.lower(), {name})) == 1
                and query.lower() not in GENERIC
                and not set(query.lower().split()) <= GENERIC
            ):
                usable.append((query, name))
    rng = random.Random(7)
    asked_pages = rng.sample(sorted(usable), min(queries, len(usable)))
    chosen = {name for _query, name in asked_pages}
    others = sorted(set(found) - chosen)
    chosen |= set(rng.sample(others, max(0, min(len(others), pages - len(chosen)))))
    documents = [(name, found[name][0]) for name in sorted(chosen)]
    return documents, asked_pages


# --- fusion grid ----------------------------------------------------------------------------


@dataclass
class Rankings:
    """One query's semantic and full-text chunk rankings: (document, score) best first."""

    query: str
    right: uuid.UUID
    semantic: list[tuple[uuid.UUID, uuid.UUID, float]]
    fulltext: list[tuple[uuid.UUID, uuid.UUID, float]]


Fuse = Callable[[Rankings, float], list[uuid.UUID]]


def _documents(order: list[tuple[float, uuid.UUID]]) -> list[uuid.UUID]:
    ranked: list[uuid.UUID] = []
    for _score, document in sorted(order, key=lambda item: -item[0]):
        if document not in ranked:
            ranked.append(document)
    return ranked[:K]


def _fused(
    r: Rankings, parts: dict[uuid.UUID, float], doc: dict[uuid.UUID, uuid.UUID]
) -> list[uuid.UUID]:
    return _documents(
        [(score, doc[chunk]) for chunk, score in sorted(parts.items(), key=lambda i: -i[1])][
            : K * 3
        ]
    )


def weighted_rrf(r: Rankings, w: float) -> list[uuid.UUID]:
    parts: dict[uuid.UUID, float] = {}
    doc: dict[uuid.UUID, uuid.UUID] = {}
    for weight, ranking in ((w, r.semantic), (1 - w, r.fulltext)):
        for rank, (chunk, document, _score) in enumerate(ranking, start=1):
            parts[chunk] = parts.get(chunk, 0.0) + weight / (60 + rank)
            doc[chunk] = document
    return _fused(r, parts, doc)


def convex(r: Rankings, w: float) -> list[uuid.UUID]:
    """``w`` x semantic + (1 - w) x full text, each score divided by its ranking's best."""
    parts: dict[uuid.UUID, float] = {}
    doc: dict[uuid.UUID, uuid.UUID] = {}
    for weight, ranking in ((w, r.semantic), (1 - w, r.fulltext)):
        top = max((score for _c, _d, score in ranking), default=0.0) or 1.0
        for chunk, document, score in ranking:
            parts[chunk] = parts.get(chunk, 0.0) + weight * score / top
            doc[chunk] = document
    return _fused(r, parts, doc)


def convex_minmax(r: Rankings, w: float) -> list[uuid.UUID]:
    """``w`` x semantic + (1 - w) x full text, each score min-max scaled within its ranking."""
    parts: dict[uuid.UUID, float] = {}
    doc: dict[uuid.UUID, uuid.UUID] = {}
    for weight, ranking in ((w, r.semantic), (1 - w, r.fulltext)):
        scores = [score for _c, _d, score in ranking]
        low, high = min(scores, default=0.0), max(scores, default=0.0)
        for chunk, document, score in ranking:
            scaled = (score - low) / (high - low) if high > low else 1.0
            parts[chunk] = parts.get(chunk, 0.0) + weight * scaled
            doc[chunk] = document
    return _fused(r, parts, doc)


FUSIONS: dict[str, Fuse] = {
    "weighted rrf": weighted_rrf,
    "convex (score / best)": convex,
    "convex (min-max)": convex_minmax,
}
GRID = [round(0.05 * n, 2) for n in range(21)]


def mrr(rankings: Sequence[Rankings], fuse: Fuse, w: float) -> tuple[float, float]:
    reciprocal = [reciprocal_rank(fuse(r, w), r.right) for r in rankings]
    return statistics.mean(reciprocal), sum(1 for x in reciprocal if x) / len(reciprocal)


# --- run ------------------------------------------------------------------------------------


async def indexed_set(
    pool: asyncpg.Pool, embedder: LocalEmbedder, name: str, documents: list[tuple[str, str]]
) -> tuple[uuid.UUID, dict[str, uuid.UUID]]:
    """The set's owner and document ids: indexed now, or found from an earlier run of this
    script on the same database (``--data-dir``) when it holds the same documents."""
    await pool.execute(
        "create table if not exists public.bench_quality_sets (name text primary key,"
        " owner_id uuid not null, fingerprint text not null)"
    )
    fingerprint = hashlib.sha256(repr(documents).encode()).hexdigest()
    row = await pool.fetchrow(
        "select owner_id from public.bench_quality_sets where name = $1 and fingerprint = $2",
        name,
        fingerprint,
    )
    if row is not None:
        rows = await pool.fetch(
            "select id, title from xtyl_rag.documents where owner_id = $1", row["owner_id"]
        )
        print(f"\n{name}: reusing the {len(rows)} documents indexed by an earlier run")
        return row["owner_id"], {r["title"]: r["id"] for r in rows}
    started = time.perf_counter()
    owner, ids = await index_inline(pool, embedder, documents)
    await pool.execute(
        "insert into public.bench_quality_sets (name, owner_id, fingerprint) values ($1, $2, $3)"
        " on conflict (name) do update set owner_id = $2, fingerprint = $3",
        name,
        owner,
        fingerprint,
    )
    print(f"\n{name}: indexed in {time.perf_counter() - started:.0f} s")
    return owner, ids


async def evaluate(
    pool: asyncpg.Pool,
    embedder: LocalEmbedder,
    name: str,
    documents: list[tuple[str, str]],
    asked: list[tuple[str, str]],
) -> list[Rankings]:
    owner, ids = await indexed_set(pool, embedder, name, documents)
    chunks = await pool.fetchval("select count(*) from xtyl_rag.chunks where owner_id = $1", owner)
    print(
        f"{name}: {len(documents)} documents, {chunks} chunks; {len(asked)} queries,"
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
    rankings: list[Rankings] = []
    for query, title in asked:
        lists = []
        for mode in ("semantic", "fulltext"):
            result = await retriever.search(
                owner,
                query,
                k=candidate_depth(K * 3, fused=True),  # what hybrid fuses
                mode=mode,  # type: ignore[arg-type]
                filters=SearchFilters(),
            )
            lists.append([(h.chunk_id, h.document_id, h.score) for h in result.hits])
        rankings.append(Rankings(query, ids[title], lists[0], lists[1]))
    return rankings


def report_grid(sets: dict[str, list[Rankings]], tune: str) -> None:
    print(f"\nfusion weight of the semantic ranking, tuned on {tune} (MRR@10):")
    names = list(sets)
    print(f"  {'fusion':>22} {'w':>5} " + " ".join(f"{n:>10}" for n in names))
    for label, fuse in FUSIONS.items():
        best = max(GRID, key=lambda w: (mrr(sets[tune], fuse, w)[0], -abs(w - 0.5)))
        for w in GRID:
            mark = " <- best" if w == best else ""
            if w in (0.0, 0.5, 1.0) or round(abs(w - best), 2) <= 0.1:
                print(
                    f"  {label:>22} {w:5.2f} "
                    + " ".join(f"{mrr(sets[n], fuse, w)[0]:10.3f}" for n in names)
                    + mark
                )


#: a token a person types exactly: an identifier, a function call, a version, a path
_EXACT_TOKEN = re.compile(r"\w*(?:_|\d|\(|\.\w|[a-z][A-Z])\w*")


def report_query_dependent(sets: dict[str, list[Rankings]], tune: str) -> None:
    """Would a weight chosen by the query help? Queries holding an exact token (identifier,
    call, number) against the rest, each with its own best weight."""
    print(
        "\nquery-dependent weight (convex min-max, as shipped):"
        " queries with an exact token against the rest"
    )
    for label, has in (("exact token", True), ("plain words", False)):
        part = {
            n: [r for r in s if bool(_EXACT_TOKEN.search(r.query)) == has] for n, s in sets.items()
        }
        if not part[tune]:
            continue
        best = max(GRID, key=lambda w: (mrr(part[tune], convex_minmax, w)[0], -abs(w - 0.5)))
        cells = " ".join(
            f"{n}: {len(p)} queries, w={best:.2f} {mrr(p, convex_minmax, best)[0]:.3f}"
            f" (semantic {mrr(p, convex_minmax, 1.0)[0]:.3f}, full text"
            f" {mrr(p, convex_minmax, 0.0)[0]:.3f})"
            for n, p in part.items()
            if p
        )
        print(f"  {label:>12}: {cells}")


async def run(args: argparse.Namespace, dsn: str) -> None:
    await migrate(dsn)
    pool = await create_pool(
        DatabaseConfig(url=dsn, max_size=4, vector=True, command_timeout_s=3600)
    )
    try:
        embedder = LocalEmbedder.load_sync(max_batch=16)
        sets: dict[str, list[Rankings]] = {}
        documents, asked = docstring_set(stdlib_docstrings(), args.docs, args.queries)
        sets["docstrings"] = await evaluate(pool, embedder, "docstrings", documents, asked)
        if args.manual.is_dir():
            documents, asked = manual_set(args.manual, args.pages, args.queries)
            sets["manual"] = await evaluate(
                pool, embedder, "PostgreSQL 15 manual", documents, asked
            )
        else:
            print(f"\nno manual at {args.manual}: apt-get install postgresql-doc-15")
        if args.tune in sets:
            report_grid(sets, args.tune)
            report_query_dependent(sets, args.tune)
    finally:
        await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--manual", type=Path, default=MANUAL)
    parser.add_argument("--docs", type=int, default=1000, help="docstring documents")
    parser.add_argument("--pages", type=int, default=600, help="manual pages indexed")
    parser.add_argument("--queries", type=int, default=300, help="queries per set")
    parser.add_argument("--tune", choices=["docstrings", "manual", "none"], default="docstrings")
    parser.add_argument("--dsn", help="an existing database (default: start one)")
    parser.add_argument(
        "--data-dir", help="keep the started Postgres here; a second run reuses the indexed sets"
    )
    args = parser.parse_args()
    started = time.perf_counter()
    if args.dsn:
        asyncio.run(run(args, args.dsn))
    else:
        with tempfile.TemporaryDirectory(prefix="bench-quality-") as tmp:
            data_dir = Path(args.data_dir) if args.data_dir else Path(tmp)
            data_dir.mkdir(parents=True, exist_ok=True)
            data_dir.chmod(0o755)
            server = PostgresServer(data_dir / "pg", log_path=data_dir / "pg.log")
            server.start()
            try:
                asyncio.run(run(args, server.dsn()))
            finally:
                server.stop()
    print(f"\nbench_quality: {time.perf_counter() - started:.0f} s in all")


if __name__ == "__main__":
    main()
