"""The rag service's settings (API, ``rag-worker`` and ``reembed``), read once from the
environment (see the README's table).

The embedder's variables (``EMBEDDER``, ``EMBEDDING_MODEL``, ...) are :class:`EmbedderConfig`'s,
repeated here because msgspec Structs cannot inherit fields from two bases;
:meth:`RagSettings.embedder_config` hands them over and a unit test keeps both lists equal.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

import msgspec

from xtyl_common.identity import AuthSettings
from xtyl_rag.adapters.embedders.config import DEFAULT_EMBEDDINGS_URL, EmbedderConfig
from xtyl_rag.adapters.extraction.contracts import ExtractionLimits
from xtyl_rag.domain.planning import SearchTuning

MiB = 1024 * 1024
DEFAULT_LLM_URL = "https://openrouter.ai/api/v1"
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


class RagSettings(AuthSettings, frozen=True, kw_only=True):
    database_url: str
    redis_url: str
    db_pool_max: int = 10
    #: Base URL of the storage service (file bytes: ``/internal/files/{id}/content``).
    storage_url: str = "http://127.0.0.1:8001"
    storage_timeout_s: float = 60.0
    #: A file's indexing run waits this long for storage's ``/readyz`` before it claims the
    #: document (storage started after the worker, or restarting), spending no try meanwhile;
    #: past it the run goes ahead and a failure counts. Keep it below
    #: ``EVENTS_HANDLER_TIMEOUT_S``.
    storage_ready_wait_s: float = 120.0

    # --- embedder (EmbedderConfig's fields, see the module docstring) ---
    embedder: Literal["local", "openai"] = "local"
    embedding_model: str | None = None
    embedding_dimension: int | None = None
    embeddings_url: str = DEFAULT_EMBEDDINGS_URL
    #: OpenRouter key: the ``openai`` embedder and the LLM of ``/v1/answer``.
    openrouter_api_key: str | None = None
    embedding_batch_size: int | None = None
    embedding_timeout_s: float = 60.0
    embedding_connect_timeout_s: float = 5.0
    embedding_retries: int = 4
    embedding_backoff_base_s: float = 0.5
    embedding_backoff_max_s: float = 20.0
    embedding_threads: int = 0

    # --- answers ---
    #: OpenAI-compatible chat completions endpoint (``{LLM_URL}/chat/completions``).
    llm_url: str = DEFAULT_LLM_URL
    #: e.g. ``openai/gpt-4o-mini``; unset: ``/v1/answer`` answers extractively.
    llm_model: str | None = None
    llm_timeout_s: float = 60.0
    llm_max_tokens: int = 800

    # --- search ---
    #: Owners (or filters) with at most this many chunks are searched exactly (all their
    #: vectors, sorted); above it the HNSW index with iterative scans. Measured by
    #: bench/bench_rag.py.
    search_exact_max_chunks: int = 10_000
    search_ef_search: int = 100
    search_max_scan_tuples: int = 40_000
    #: Full text: owners (or filters) with at most this many chunks have their rows read one
    #: by one; above it the GIN index on (owner_id, tsv). Measured by bench/bench_rag.py.
    search_fulltext_scan_max_chunks: int = SearchTuning().fulltext_scan_max_chunks

    # --- indexing (rag-worker) ---
    #: Largest file or inline text indexed, bytes; larger ones fail ``too_large``.
    max_document_bytes: int = 50 * MiB
    #: Documents one worker process indexes at once (stream entries and inline jobs each).
    index_concurrency: int = 2
    extraction_workers: int = 1
    extraction_timeout_s: float = 60.0
    extraction_memory_mb: int = 1024
    #: A document not in a final state for this long is re-emitted by the reconciler.
    stuck_after_s: float = 900.0
    #: Indexing runs per document before it fails with ``too_many_attempts``.
    max_index_attempts: int = 5
    #: An indexing run holds its document this long past its last renewal; it renews every
    #: third of this while it lives. A run whose worker died is taken over once its lease runs
    #: out: stuck work resumes within ``EVENTS_CLAIM_IDLE_MS`` + this. Keep it well below
    #: ``EVENTS_HANDLER_TIMEOUT_S`` (a redelivered entry waits up to this for the lease).
    index_lease_s: float = 30.0

    def __post_init__(self) -> None:
        super().__post_init__()
        self.embedder_config()  # raises with the variable's path
        url = urlsplit(self.llm_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError("must be an http(s) URL (at `$.llm_url`)")
        positive = {
            "search_exact_max_chunks": self.search_exact_max_chunks,
            "search_fulltext_scan_max_chunks": self.search_fulltext_scan_max_chunks,
            "search_ef_search": self.search_ef_search,
            "search_max_scan_tuples": self.search_max_scan_tuples,
            "max_document_bytes": self.max_document_bytes,
            "index_concurrency": self.index_concurrency,
            "extraction_workers": self.extraction_workers,
            "extraction_memory_mb": self.extraction_memory_mb,
            "max_index_attempts": self.max_index_attempts,
            "llm_max_tokens": self.llm_max_tokens,
        }
        for name, value in positive.items():
            if value < 0 or (value == 0 and not name.endswith("_max_chunks")):
                raise ValueError(f"must be greater than 0 (at `$.{name}`)")
        if not self.storage_ready_wait_s >= 0:
            raise ValueError("must be at least 0 (at `$.storage_ready_wait_s`)")
        if not self.index_lease_s >= 1.0:
            raise ValueError("must be at least 1 (at `$.index_lease_s`)")
        if self.search_ef_search > 1000:
            raise ValueError("must be at most 1000 (at `$.search_ef_search`)")

    def embedder_config(self) -> EmbedderConfig:
        fields = {f.name: getattr(self, f.name) for f in msgspec.structs.fields(EmbedderConfig)}
        return EmbedderConfig(**fields)

    @property
    def llm_enabled(self) -> bool:
        """An LLM answers when a model is set and a key is (or the endpoint is local)."""
        if not self.llm_model:
            return False
        return bool(self.openrouter_api_key) or urlsplit(self.llm_url).hostname in _LOOPBACK_HOSTS

    def extraction_limits(self) -> ExtractionLimits:
        return ExtractionLimits(
            max_input_bytes=self.max_document_bytes,
            timeout_s=self.extraction_timeout_s,
            memory_bytes=self.extraction_memory_mb * MiB,
        )

    def search_tuning(self) -> SearchTuning:
        return SearchTuning(
            exact_max_chunks=self.search_exact_max_chunks,
            ef_search=self.search_ef_search,
            max_scan_tuples=self.search_max_scan_tuples,
            fulltext_scan_max_chunks=self.search_fulltext_scan_max_chunks,
        )
