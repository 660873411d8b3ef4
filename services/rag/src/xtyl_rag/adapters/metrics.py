"""The rag service's own metrics (docs/metrics.md, "rag, storage, notify"): the stages of
indexing a document (rag-worker), the chunks embedded, and searches by mode and plan (the API).
"""

from __future__ import annotations

from typing import Final, Literal

from prometheus_client import Counter, Histogram

IngestStage = Literal["download", "extract", "chunk", "embed", "store"]
#: ``download``: the file's bytes from storage; ``extract``: its text (the extraction pool, or
#: an inline document's text read and normalised); ``chunk``; ``embed``: every writable model's
#: vectors; ``store``: chunks and vectors written, the document ready.
INGEST_STAGES: Final[tuple[IngestStage, ...]] = ("download", "extract", "chunk", "embed", "store")
#: A stage takes milliseconds (a small text's chunks) to minutes (a large PDF's vectors).
STAGE_BUCKETS: Final = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
)  # fmt: skip

SearchPlan = Literal["exact", "hnsw", "none"]
#: ``(mode, plan)`` pairs a search can take: the semantic plan (``domain/planning.py``) in
#: semantic and hybrid modes, ``none`` in fulltext mode (no semantic ranking).
SEARCH_LABELS: Final[tuple[tuple[str, SearchPlan], ...]] = (
    ("semantic", "exact"),
    ("semantic", "hnsw"),
    ("hybrid", "exact"),
    ("hybrid", "hnsw"),
    ("fulltext", "none"),
)
#: Searches answer in milliseconds (2-13 ms p50, bench/bench_rag.py); a remote embedder adds
#: a network call.
SEARCH_BUCKETS: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip

INGEST_STAGE_DURATION = Histogram(
    "xtyl_rag_ingest_stage_duration_seconds",
    "Time of one stage of indexing a document: download, extract, chunk, embed, store.",
    ["stage"],
    buckets=STAGE_BUCKETS,
)
CHUNKS_EMBEDDED = Counter("xtyl_rag_chunks_embedded", "Chunks embedded (per model).")
SEARCH_DURATION = Histogram(
    "xtyl_rag_search_duration_seconds",
    "Search time by mode (semantic, fulltext, hybrid) and the semantic plan (exact, hnsw, none).",
    ["mode", "plan"],
    buckets=SEARCH_BUCKETS,
)
