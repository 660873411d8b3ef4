"""``build_embedder``: the one place that turns :class:`EmbedderConfig` into an embedder."""

from __future__ import annotations

import aiohttp

from xtyl_rag.adapters.embedders.config import EmbedderConfig
from xtyl_rag.adapters.embedders.local import LocalEmbedder
from xtyl_rag.adapters.embedders.openai_compat import OpenAIEmbedder
from xtyl_rag.adapters.embedders.protocol import Embedder


async def build_embedder(config: EmbedderConfig, session: aiohttp.ClientSession | None) -> Embedder:
    """The local model is loaded on a thread (about a second); ``openai`` needs the session."""
    if config.embedder == "local":
        return await LocalEmbedder.load(
            max_batch=config.batch_size, threads=config.embedding_threads
        )
    if session is None:
        raise ValueError("EMBEDDER=openai needs the shared aiohttp session")
    return OpenAIEmbedder(config, session)
