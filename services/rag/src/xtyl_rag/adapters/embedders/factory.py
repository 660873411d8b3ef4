"""``build_embedder``: the one place that turns a vector space's name into an embedder."""

from __future__ import annotations

import aiohttp

from xtyl_rag.adapters.embedders.config import (
    LOCAL_BATCH_SIZE,
    LOCAL_SPACE,
    OPENAI_PREFIX,
    REMOTE_BATCH_SIZE,
    EmbedderConfig,
)
from xtyl_rag.adapters.embedders.local import LocalEmbedder
from xtyl_rag.adapters.embedders.openai_compat import OpenAIEmbedder
from xtyl_rag.adapters.embedders.protocol import Embedder


async def embedder_for(
    config: EmbedderConfig, model: str, dimension: int, session: aiohttp.ClientSession | None
) -> Embedder | None:
    """The embedder of vector space ``model`` as this process can build it, or None: the local
    model is loaded on a thread (about a second); ``openai:<id>`` needs the endpoint and the
    process's shared session."""
    if model == LOCAL_SPACE:
        return await LocalEmbedder.load(
            max_batch=config.batch_size or LOCAL_BATCH_SIZE, threads=config.threads
        )
    if model.startswith(OPENAI_PREFIX) and config.endpoint is not None and session is not None:
        return OpenAIEmbedder(
            config.endpoint,
            session,
            model_id=model.removeprefix(OPENAI_PREFIX),
            dimension=dimension,
            max_batch=config.batch_size or REMOTE_BATCH_SIZE,
        )
    return None


async def build_embedder(config: EmbedderConfig, session: aiohttp.ClientSession | None) -> Embedder:
    """The configured embedder (``config.model``)."""
    embedder = await embedder_for(config, config.model, config.dimension, session)
    if embedder is None:
        raise ValueError(
            f"cannot build the embedder of {config.model}: an openai embedder needs"
            " the endpoint and the shared aiohttp session"
        )
    return embedder
