"""How semantic search reads the vectors of one caller: an exact scan or the HNSW index.

Filtered approximate search loses results: an HNSW scan walks the graph of *every* owner's
vectors and filters afterwards, so a caller whose chunks are 1 % of the table gets few or none
of them back (measured on 100,000 x 384 with iterative scans off: 0.5 rows of 10 on average).
An exact scan of the caller's own rows (btree on ``(owner_id, model)``, then a sort by
distance) always has recall 1.0 and costs time linear in the caller's chunks. So:

* at most ``exact_max_chunks`` candidate chunks (the owner's, or fewer when the request
  filters by document or metadata): **exact**. The SQL orders by ``embedding <=> $q`` on the
  untyped column, an expression the per-model index on ``(embedding::vector(d))`` does not
  match, so the planner cannot turn it into an HNSW scan;
* more: **HNSW** with ``hnsw.iterative_scan = relaxed_order`` (the scan goes on until ``k``
  rows pass the owner filter or ``max_scan_tuples`` were visited), ``ef_search`` raised for
  owners that are a small share of the table, results re-sorted by exact distance.

``exact_max_chunks`` is measured by ``bench/bench_rag.py`` (the owner size where the exact
scan's p50 passes the HNSW path's), not guessed. On 1,000,000 x 384 here (warm, k=10): exact
0.4 ms at 20 chunks, 1.7 ms at 2,000, 3.6 at 5,000, 6.9 at 10,000, 13.6 at 20,000, 80 at
125,000; HNSW (ef_search 500) 174 ms and recall 0.68 at 20 chunks (the filter starves the
scan), 12-15 ms from 2,000 to 10,000, 7.0 ms (recall 1.000) at 20,000, 3.9 ms (0.999) at
125,000. The lines cross between 10,000 and 20,000 chunks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

#: The widest candidate list of a search. pgvector allows 1,000, but an owner of 20,000
#: chunks among 1,000,000 (2 %) read 30 rows in 9.3 ms at 1,000 and 6.3 ms at 500, with recall@10
#: 1.000 and 0.998 (0.997 either way for 125,000; bench/bench_rag.py's data, HNSW built with
#: ef_construction 128): the iterative scan goes on past the list when it holds too few of the
#: owner's rows anyway.
MAX_EF_SEARCH = 500
#: How many of the owner's rows the HNSW candidate list should hold, per row asked: ef_search
#: is ``SHARE_OVERSAMPLING * limit / share``. Owners of 125,000 chunks among 1,000,000, k=10:
#: at 2 (ef_search 160) recall@10 was 0.916-0.958 from run to run, at 4 (320) 0.946-0.954, at
#: 8 (640) 0.972, for 3.7 ms p50 instead of 2.9 (bench/bench_rag.py).
SHARE_OVERSAMPLING = 8


@dataclass(frozen=True, slots=True)
class SearchTuning:
    #: semantic search: an exact scan up to this many candidate chunks, HNSW above
    exact_max_chunks: int = 10_000
    ef_search: int = 100
    max_scan_tuples: int = 40_000
    #: full-text search: the owner's rows read one by one up to this many candidate chunks,
    #: the GIN index on (owner_id, tsv) above: its own measured crossover (1,000,000 chunks,
    #: k=30: owner of 20, scan 0.7 ms, index 0.9; of 2,000, scan 3.7, index 2.4; of 10,000,
    #: 14.7 and 4.0: about 1.5 us a row scanned against 0.8 us a candidate scored)
    fulltext_scan_max_chunks: int = 250


#: The HNSW plan reads this many times the rows asked, then keeps the nearest by exact
#: distance: an iterative scan in ``relaxed_order`` hands rows over roughly nearest first, and
#: the first ``limit`` it finds of a small share of the table are not quite the nearest ones.
HNSW_OVERFETCH = 3
#: ... but no more than this many: each row of a small share of the table costs a walk through
#: many other owners' rows (an owner of 2 % of 1,000,000 chunks: 30 rows 9.3 ms, 40 rows 17.5 ms
#: at ef_search 1,000, bench/bench_rag.py's data)
HNSW_MAX_FETCH = 30


@dataclass(frozen=True, slots=True)
class SemanticPlan:
    kind: Literal["exact", "hnsw"]
    #: rows returned
    limit: int
    ef_search: int = 0
    max_scan_tuples: int = 0
    #: rows asked of the index scan (HNSW) or of the sort (exact), at least ``limit``
    fetch: int = 0

    @property
    def rows(self) -> int:
        return max(self.limit, self.fetch)


def plan_semantic(
    candidate_chunks: int, limit: int, tuning: SearchTuning, *, total_chunks: int | None = None
) -> SemanticPlan:
    """The plan for ``limit`` nearest chunks among ``candidate_chunks`` of the caller's.

    ``total_chunks`` (all owners, this model) lets the HNSW plan widen ``ef_search`` for an
    owner who is a small share of the table: the scan must see about ``limit / share`` rows
    to meet ``limit`` of the owner's (and a margin: ``SHARE_OVERSAMPLING``).
    """
    if candidate_chunks <= tuning.exact_max_chunks:
        return SemanticPlan("exact", limit)
    fetch = max(limit, min(limit * HNSW_OVERFETCH, HNSW_MAX_FETCH))
    ef_search = max(tuning.ef_search, fetch)
    if total_chunks and candidate_chunks < total_chunks:
        share = candidate_chunks / total_chunks
        ef_search = max(ef_search, min(MAX_EF_SEARCH, round(SHARE_OVERSAMPLING * fetch / share)))
    ef_search = min(ef_search, MAX_EF_SEARCH)
    return SemanticPlan(
        "hnsw",
        limit,
        ef_search=ef_search,
        max_scan_tuples=max(tuning.max_scan_tuples, ef_search),
        fetch=fetch,
    )


def candidate_depth(k: int, *, fused: bool) -> int:
    """How many rows each ranking contributes: ``k`` alone, more when two are fused (a chunk
    ranked 12th by both lists can beat one ranked 1st by only one)."""
    return min(max(3 * k, 30), 150) if fused else k
