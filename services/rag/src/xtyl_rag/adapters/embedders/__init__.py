"""Embedders: texts to unit vectors, behind :class:`Embedder`.

``local`` runs all-MiniLM-L6-v2 on ONNX Runtime in the process; ``openai`` calls an
OpenAI-compatible ``/embeddings`` endpoint. :func:`build_embedder` picks one from the settings.
"""

from xtyl_rag.adapters.embedders.config import EmbedderConfig
from xtyl_rag.adapters.embedders.factory import build_embedder
from xtyl_rag.adapters.embedders.local import LocalEmbedder
from xtyl_rag.adapters.embedders.openai_compat import EmbeddingFailed, OpenAIEmbedder
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
    "EmbeddingFailed",
    "LocalEmbedder",
    "MiniLMTokenCounter",
    "OpenAIEmbedder",
    "Vectors",
    "build_embedder",
    "l2_normalise",
]
