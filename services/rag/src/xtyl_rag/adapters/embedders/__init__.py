"""Embedders: texts to unit vectors, behind :class:`Embedder`.

``local`` runs all-MiniLM-L6-v2 on ONNX Runtime in the process; ``openai`` calls an
OpenAI-compatible ``/embeddings`` endpoint. :func:`build_embedder` builds the configured one
from an :class:`EmbedderConfig` (which the service's settings make), :func:`embedder_for` the
one of another vector space.
"""

from xtyl_rag.adapters.embedders.config import EmbedderConfig, EmbeddingEndpoint
from xtyl_rag.adapters.embedders.factory import build_embedder, embedder_for
from xtyl_rag.adapters.embedders.local import LocalEmbedder
from xtyl_rag.adapters.embedders.openai_compat import (
    EmbeddingFailed,
    EmbeddingUnavailable,
    OpenAIEmbedder,
)
from xtyl_rag.adapters.embedders.protocol import Embedder, Vectors, l2_normalise
from xtyl_rag.adapters.embedders.tokenizer import (
    MAX_CONTENT_TOKENS,
    MAX_SEQUENCE_TOKENS,
    MiniLMTokenCounter,
)

__all__ = [
    "MAX_CONTENT_TOKENS",
    "MAX_SEQUENCE_TOKENS",
    "Embedder",
    "EmbedderConfig",
    "EmbeddingEndpoint",
    "EmbeddingFailed",
    "EmbeddingUnavailable",
    "LocalEmbedder",
    "MiniLMTokenCounter",
    "OpenAIEmbedder",
    "Vectors",
    "build_embedder",
    "embedder_for",
    "l2_normalise",
]
