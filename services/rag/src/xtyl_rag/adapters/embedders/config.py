"""Which embedder a process uses, read from the environment with the service's settings.

``EMBEDDER=local`` (default) runs all-MiniLM-L6-v2 in the process; ``EMBEDDER=openai`` calls any
OpenAI-compatible ``/embeddings`` endpoint (OpenRouter by default).
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

import msgspec

LOCAL_MODEL = "all-MiniLM-L6-v2"
LOCAL_MODEL_ALIASES = frozenset({LOCAL_MODEL, "sentence-transformers/all-MiniLM-L6-v2"})
LOCAL_DIMENSION = 384
LOCAL_BATCH_SIZE = 16
REMOTE_BATCH_SIZE = 64
DEFAULT_EMBEDDINGS_URL = "https://openrouter.ai/api/v1"
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


class EmbedderConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=False):
    embedder: Literal["local", "openai"] = "local"
    #: ``local``: all-MiniLM-L6-v2 (the default). ``openai``: the endpoint's model id (required).
    embedding_model: str | None = None
    #: ``local``: 384. ``openai``: required, checked against every response.
    embedding_dimension: int | None = None
    embeddings_url: str = DEFAULT_EMBEDDINGS_URL
    #: bearer token for the endpoint; required unless the endpoint is on this machine.
    openrouter_api_key: str | None = None
    #: texts per call: per ONNX run for ``local`` (default 16: larger batches of 256-piece
    #: chunks ran slower on 2 cores), per HTTP request for ``openai`` (default 64).
    embedding_batch_size: int | None = None
    embedding_timeout_s: float = 60.0
    embedding_connect_timeout_s: float = 5.0
    #: retries after the first attempt on 429, 5xx, timeouts and refused connections.
    embedding_retries: int = 4
    embedding_backoff_base_s: float = 0.5
    embedding_backoff_max_s: float = 20.0
    #: ONNX Runtime intra-op threads for ``local``; 0: one per available core.
    embedding_threads: int = 0

    def __post_init__(self) -> None:
        if self.embedding_batch_size is not None and not 1 <= self.embedding_batch_size <= 2048:
            raise ValueError("must be between 1 and 2048 (at `$.embedding_batch_size`)")
        if self.embedding_retries < 0:
            raise ValueError("must be 0 or more (at `$.embedding_retries`)")
        if self.embedding_threads < 0:
            raise ValueError("must be 0 (auto) or more (at `$.embedding_threads`)")
        if self.embedding_timeout_s <= 0:
            raise ValueError("must be positive (at `$.embedding_timeout_s`)")
        if self.embedder == "local":
            self._check_local()
        else:
            self._check_openai()

    def _check_local(self) -> None:
        if self.embedding_model is not None and self.embedding_model not in LOCAL_MODEL_ALIASES:
            raise ValueError(f"the local embedder only runs {LOCAL_MODEL} (at `$.embedding_model`)")
        if self.embedding_dimension not in (None, LOCAL_DIMENSION):
            raise ValueError(
                f"{LOCAL_MODEL} has {LOCAL_DIMENSION} dimensions (at `$.embedding_dimension`)"
            )

    def _check_openai(self) -> None:
        if not self.embedding_model:
            raise ValueError("required when EMBEDDER=openai (at `$.embedding_model`)")
        if self.embedding_dimension is None or self.embedding_dimension <= 0:
            raise ValueError("required when EMBEDDER=openai (at `$.embedding_dimension`)")
        url = urlsplit(self.embeddings_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError("must be an http(s) URL (at `$.embeddings_url`)")
        if not self.openrouter_api_key and url.hostname not in _LOOPBACK_HOSTS:
            raise ValueError(
                "required when EMBEDDER=openai and the endpoint is not on this machine"
                " (at `$.openrouter_api_key`)"
            )

    @property
    def model_name(self) -> str:
        if self.embedder == "local":
            return LOCAL_MODEL
        assert self.embedding_model is not None  # checked in __post_init__
        return self.embedding_model

    @property
    def batch_size(self) -> int:
        if self.embedding_batch_size is not None:
            return self.embedding_batch_size
        return LOCAL_BATCH_SIZE if self.embedder == "local" else REMOTE_BATCH_SIZE

    @property
    def dimension(self) -> int:
        if self.embedder == "local":
            return LOCAL_DIMENSION
        assert self.embedding_dimension is not None  # checked in __post_init__
        return self.embedding_dimension
