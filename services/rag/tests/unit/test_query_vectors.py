"""The cache of query vectors: a repeated query does not reach the model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import numpy as np

from xtyl_rag.adapters.embedders import Vectors
from xtyl_rag.domain.planning import SearchTuning
from xtyl_rag.service import retrieval
from xtyl_rag.service.retrieval import Retriever


class CountingEmbedder:
    """A deterministic embedder of a given model name that counts the texts it embedded."""

    def __init__(self, model: str) -> None:
        self._model = model
        self.embedded: list[str] = []

    @property
    def model(self) -> str:
        return self._model

    @property
    def dimension(self) -> int:
        return 4

    @property
    def max_batch(self) -> int:
        return 8

    async def embed(self, texts: Sequence[str]) -> Vectors:
        self.embedded.extend(texts)
        return np.stack(
            [np.full(4, 0.5 if t.startswith("a") else -0.5, dtype=np.float32) for t in texts]
        )

    async def aclose(self) -> None:
        return None


def bare_retriever() -> Retriever:
    return Retriever(
        chunks=cast(Any, None),
        models=cast(Any, None),
        embedders=cast(Any, None),
        tuning=SearchTuning(),
        llm=None,
    )


async def test_a_repeated_query_is_embedded_once_per_model(monkeypatch: Any) -> None:
    monkeypatch.setattr(retrieval, "QUERY_VECTORS_CACHED", 2)
    retriever = bare_retriever()
    local, remote = CountingEmbedder("local:m"), CountingEmbedder("openai:m")
    first = await retriever.query_vector(local, "apples")
    again = await retriever.query_vector(local, "apples")
    assert np.array_equal(first, again)
    assert local.embedded == ["apples"]
    # another model's space is another vector
    await retriever.query_vector(remote, "apples")
    assert remote.embedded == ["apples"]
    # the least recently used is dropped past the limit
    await retriever.query_vector(local, "bananas")  # drops (local, apples)
    await retriever.query_vector(local, "apples")
    assert local.embedded == ["apples", "bananas", "apples"]
