"""What a process builds its embedders from: the model names, and :class:`EmbedderConfig`.

The variables (``EMBEDDER``, ``EMBEDDING_MODEL``, ``EMBEDDINGS_URL``, ...) are read and checked
once, by the service's settings (``xtyl_rag.settings.RagSettings``), which make the
:class:`EmbedderConfig` (``RagSettings.embedder_config()``); nothing here reads the
environment. ``EmbedderConfig()`` is the local model with its defaults (benchmarks, tests).

A vector space is named ``local:all-MiniLM-L6-v2`` (the in-process model) or
``openai:<model id>`` (an OpenAI-compatible ``/embeddings`` endpoint).
"""

from __future__ import annotations

from urllib.parse import urlsplit

import msgspec

from xtyl_common.retry import RetryPolicy

LOCAL_MODEL = "all-MiniLM-L6-v2"
LOCAL_MODEL_ALIASES = frozenset({LOCAL_MODEL, "sentence-transformers/all-MiniLM-L6-v2"})
LOCAL_DIMENSION = 384
LOCAL_BATCH_SIZE = 16
REMOTE_BATCH_SIZE = 64
DEFAULT_EMBEDDINGS_URL = "https://openrouter.ai/api/v1"
LOCAL_PREFIX = "local:"
OPENAI_PREFIX = "openai:"
LOCAL_SPACE = LOCAL_PREFIX + LOCAL_MODEL
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def on_this_machine(url: str) -> bool:
    """True for an endpoint on a loopback address (no key is needed there)."""
    return urlsplit(url).hostname in LOOPBACK_HOSTS


class EmbeddingEndpoint(msgspec.Struct, frozen=True, kw_only=True):
    """An OpenAI-compatible ``POST {url}/embeddings`` and how to call it."""

    url: str
    #: bearer token; None only for an endpoint on this machine
    api_key: str | None
    timeout_s: float
    connect_timeout_s: float
    #: how one request is retried (429, 5xx, timeouts, refused connections): the only retry
    #: layer of an embeddings request
    retry: RetryPolicy


class EmbedderConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Which vector space this process is configured for, and how it builds embedders."""

    #: the configured vector space: ``local:all-MiniLM-L6-v2`` or ``openai:<model id>``
    model: str = LOCAL_SPACE
    dimension: int = LOCAL_DIMENSION
    #: texts per ONNX run (local) or per request (openai); None: 16 local, 64 remote
    batch_size: int | None = None
    #: ONNX Runtime intra-op threads of the local model; 0: one per available core
    threads: int = 0
    #: the endpoint ``openai:`` spaces are asked for; None when this process has none it may
    #: call (no key for a remote one): only the local model is built then
    endpoint: EmbeddingEndpoint | None = None
