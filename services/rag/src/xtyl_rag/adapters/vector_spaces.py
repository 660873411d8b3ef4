"""Which embedder makes the vectors of which model.

A process has one configured embedder (the settings'). While a change of model is being
rolled out it also needs the *active* model's embedder: search must embed queries in the space
of the vectors it reads, and the worker writes vectors of both models. Model names say how to
build one: ``local:all-MiniLM-L6-v2`` is the in-process model; ``openai:<id>`` is the same
OpenAI-compatible endpoint (``EMBEDDINGS_URL``, ``OPENROUTER_API_KEY``) with another model id
and the dimension recorded in ``embedding_models``.
"""

from __future__ import annotations

import asyncio

import aiohttp
import structlog

from xtyl_rag.adapters.embedders import Embedder, EmbedderConfig, build_embedder, embedder_for

log = structlog.stdlib.get_logger("xtyl.rag.embedders")


class Embedders:
    def __init__(
        self,
        config: EmbedderConfig,
        configured: Embedder,
        session: aiohttp.ClientSession | None,
    ) -> None:
        self.config = config
        self.configured = configured
        self._session = session
        self._others: dict[str, Embedder | None] = {}
        self._lock = asyncio.Lock()

    @classmethod
    async def load(cls, config: EmbedderConfig, session: aiohttp.ClientSession | None) -> Embedders:
        return cls(config, await build_embedder(config, session), session)

    async def for_model(self, model: str, dimension: int) -> Embedder | None:
        """The embedder of ``model`` (built once), or None if this process cannot make it."""
        if model == self.configured.model:
            return self.configured
        async with self._lock:
            if model not in self._others:
                embedder = await embedder_for(self.config, model, dimension, self._session)
                if embedder is not None:
                    log.info("embedder_added", model=model, configured=self.configured.model)
                else:
                    log.warning("embedder_unavailable", model=model)
                self._others[model] = embedder
            return self._others[model]

    async def aclose(self) -> None:
        for embedder in [self.configured, *self._others.values()]:
            if embedder is not None:
                await embedder.aclose()
