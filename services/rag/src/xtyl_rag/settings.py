"""The rag service's settings (API, ``rag-worker`` and ``xtyl-rag-reembed``), read once from
the environment (see the README's table).

This is the one place the variables are declared and checked, the embedder's included
(``EMBEDDER``, ``EMBEDDING_MODEL``, ...); the adapters get what they need from it:
:meth:`RagSettings.embedder_config` (the embedders, with the retry policy of an embeddings
request, :meth:`RagSettings.embedding_retry`), :meth:`RagSettings.extraction_limits`,
:meth:`RagSettings.search_tuning`.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from xtyl_common.identity import AuthSettings
from xtyl_common.retry import RetryPolicy
from xtyl_rag.adapters.embedders.config import (
    DEFAULT_EMBEDDINGS_URL,
    LOCAL_DIMENSION,
    LOCAL_MODEL,
    LOCAL_MODEL_ALIASES,
    LOCAL_SPACE,
    LOOPBACK_HOSTS,
    OPENAI_PREFIX,
    EmbedderConfig,
    EmbeddingEndpoint,
    on_this_machine,
)
from xtyl_rag.adapters.extraction.contracts import ExtractionLimits
from xtyl_rag.domain.planning import SearchTuning
from xtyl_rag.domain.quotas import UserLimits

MiB = 1024 * 1024
#: The most rows one statement of an erasure deletes (ERASURE_BATCH_SIZE).
MAX_ERASURE_BATCH_SIZE = 10_000
DEFAULT_LLM_URL = "https://openrouter.ai/api/v1"


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

    # --- embedder ---
    #: ``local``: all-MiniLM-L6-v2 in the process. ``openai``: any OpenAI-compatible
    #: ``/embeddings`` endpoint (OpenRouter by default).
    embedder: Literal["local", "openai"] = "local"
    #: ``local``: all-MiniLM-L6-v2 (the default). ``openai``: the endpoint's model id (required).
    embedding_model: str | None = None
    #: ``local``: 384. ``openai``: required, checked against every response.
    embedding_dimension: int | None = None
    embeddings_url: str = DEFAULT_EMBEDDINGS_URL
    #: OpenRouter key: the ``openai`` embedder (required unless the endpoint is on this
    #: machine) and the LLM of ``/v1/answer``.
    openrouter_api_key: str | None = None
    #: texts per call: per ONNX run for ``local`` (default 16: larger batches of 256-piece
    #: chunks ran slower on 2 cores), per HTTP request for ``openai`` (default 64).
    embedding_batch_size: int | None = None
    embedding_timeout_s: float = 60.0
    embedding_connect_timeout_s: float = 5.0
    #: retries of an embeddings request after the first attempt, on 429, 5xx, timeouts and
    #: refused connections (:meth:`embedding_retry`).
    embedding_retries: int = 4
    embedding_backoff_base_s: float = 0.5
    #: the longest wait between two tries, and the longest ``Retry-After`` slept (a longer one
    #: fails the request at once, ``embedding_rate_limited``, for its job to wait instead).
    embedding_backoff_max_s: float = 20.0
    #: ONNX Runtime intra-op threads for ``local``; 0: one per available core.
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

    # --- a user's quotas and erasure ---
    #: Documents one user may keep (those this quota refused are not counted); past it
    #: ``POST /v1/documents`` is 403 ``quota_documents`` and an uploaded file's document fails
    #: with that reason.
    quota_documents: int = 1000
    #: Chunks one user's documents may hold together: a document whose chunks would pass it
    #: fails with ``quota_chunks``; once it is reached, new documents are 403 ``quota_chunks``.
    quota_chunks: int = 200_000
    #: ``POST /v1/answer`` per user and UTC day; past it 429 ``quota_answers_per_day`` with
    #: ``Retry-After`` until 00:00 UTC.
    quota_answers_per_day: int = 200
    #: Erasing a deleted user: rows per delete statement, each its own short transaction.
    erasure_batch_size: int = 500
    #: Pause between two batches of an erasure (0: none), to leave the database to others.
    erasure_batch_pause_s: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_embedder()
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
        self._check_user_limits()

    def _check_user_limits(self) -> None:
        for name in ("quota_documents", "quota_chunks", "quota_answers_per_day"):
            if getattr(self, name) < 0:
                raise ValueError(f"must be 0 or more (at `$.{name}`)")
        if not 1 <= self.erasure_batch_size <= MAX_ERASURE_BATCH_SIZE:
            raise ValueError(
                f"must be between 1 and {MAX_ERASURE_BATCH_SIZE} (at `$.erasure_batch_size`)"
            )
        if not 0 <= self.erasure_batch_pause_s <= 60:
            raise ValueError("must be between 0 and 60 (at `$.erasure_batch_pause_s`)")

    def user_limits(self) -> UserLimits:
        return UserLimits(
            documents=self.quota_documents,
            chunks=self.quota_chunks,
            answers_per_day=self.quota_answers_per_day,
        )

    def _check_embedder(self) -> None:
        if self.embedding_batch_size is not None and not 1 <= self.embedding_batch_size <= 2048:
            raise ValueError("must be between 1 and 2048 (at `$.embedding_batch_size`)")
        if self.embedding_retries < 0:
            raise ValueError("must be 0 or more (at `$.embedding_retries`)")
        if self.embedding_threads < 0:
            raise ValueError("must be 0 (auto) or more (at `$.embedding_threads`)")
        if self.embedding_timeout_s <= 0:
            raise ValueError("must be positive (at `$.embedding_timeout_s`)")
        for name in ("embedding_backoff_base_s", "embedding_backoff_max_s"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"must be 0 or more (at `$.{name}`)")
        if self.embedder == "local":
            self._check_local_embedder()
        else:
            self._check_openai_embedder()

    def _check_local_embedder(self) -> None:
        if self.embedding_model is not None and self.embedding_model not in LOCAL_MODEL_ALIASES:
            raise ValueError(f"the local embedder only runs {LOCAL_MODEL} (at `$.embedding_model`)")
        if self.embedding_dimension not in (None, LOCAL_DIMENSION):
            raise ValueError(
                f"{LOCAL_MODEL} has {LOCAL_DIMENSION} dimensions (at `$.embedding_dimension`)"
            )

    def _check_openai_embedder(self) -> None:
        if not self.embedding_model:
            raise ValueError("required when EMBEDDER=openai (at `$.embedding_model`)")
        if self.embedding_dimension is None or self.embedding_dimension <= 0:
            raise ValueError("required when EMBEDDER=openai (at `$.embedding_dimension`)")
        url = urlsplit(self.embeddings_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError("must be an http(s) URL (at `$.embeddings_url`)")
        if not self.openrouter_api_key and not on_this_machine(self.embeddings_url):
            raise ValueError(
                "required when EMBEDDER=openai and the endpoint is not on this machine"
                " (at `$.openrouter_api_key`)"
            )

    def embedding_retry(self) -> RetryPolicy:
        """How an embeddings request is retried: ``EMBEDDING_RETRIES`` more tries, waits from
        ``EMBEDDING_BACKOFF_BASE_S`` doubling to ``EMBEDDING_BACKOFF_MAX_S`` (jittered), or
        what ``Retry-After`` asks up to that; the tries' own timeouts bound it."""
        return RetryPolicy(
            attempts=1 + self.embedding_retries,
            timeout_s=None,
            wait_initial_s=self.embedding_backoff_base_s,
            wait_max_s=self.embedding_backoff_max_s,
            wait_jitter_s=self.embedding_backoff_base_s,
            max_retry_after_s=self.embedding_backoff_max_s,
        )

    def embedder_config(self) -> EmbedderConfig:
        """The configured vector space, and the endpoint when this process may call one (the
        ``openai`` embedder's; with ``EMBEDDER=local``, the same variables' endpoint when a key
        is set or it is on this machine, for a change of model from or to ``openai``)."""
        endpoint = None
        url = urlsplit(self.embeddings_url)
        reachable = url.scheme in ("http", "https") and url.hostname is not None
        if reachable and (self.openrouter_api_key or url.hostname in LOOPBACK_HOSTS):
            endpoint = EmbeddingEndpoint(
                url=self.embeddings_url,
                api_key=self.openrouter_api_key,
                timeout_s=self.embedding_timeout_s,
                connect_timeout_s=self.embedding_connect_timeout_s,
                retry=self.embedding_retry(),
            )
        if self.embedder == "local":
            model, dimension = LOCAL_SPACE, LOCAL_DIMENSION
        else:
            assert self.embedding_model is not None  # checked in __post_init__
            assert self.embedding_dimension is not None
            model, dimension = OPENAI_PREFIX + self.embedding_model, self.embedding_dimension
        return EmbedderConfig(
            model=model,
            dimension=dimension,
            batch_size=self.embedding_batch_size,
            threads=self.embedding_threads,
            endpoint=endpoint,
        )

    @property
    def llm_enabled(self) -> bool:
        """An LLM answers when a model is set and a key is (or the endpoint is local)."""
        if not self.llm_model:
            return False
        return bool(self.openrouter_api_key) or on_this_machine(self.llm_url)

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
