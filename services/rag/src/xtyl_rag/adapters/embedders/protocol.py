"""The one interface every embedder implements, and the vector maths they share."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

Vectors = NDArray[np.float32]
"""``(n, dimension)`` float32, each row of unit length (compare with a dot product: cosine)."""


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into unit vectors. ``model`` names the vector space (``local:...``,
    ``openai:...``): vectors of two different models are never compared."""

    @property
    def model(self) -> str: ...

    @property
    def dimension(self) -> int: ...

    @property
    def max_batch(self) -> int:
        """Texts per model call; ``embed`` splits longer inputs itself."""
        ...

    async def embed(self, texts: Sequence[str]) -> Vectors: ...

    async def aclose(self) -> None: ...


def l2_normalise(vectors: NDArray[np.floating]) -> Vectors:
    """Rows scaled to unit length; an all-zero row stays zero."""
    matrix = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return (matrix / np.maximum(norms, np.float32(1e-12))).astype(np.float32, copy=False)


def empty_vectors(dimension: int) -> Vectors:
    return np.zeros((0, dimension), dtype=np.float32)
