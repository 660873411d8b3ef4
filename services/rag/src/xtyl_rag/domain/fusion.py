"""Reciprocal rank fusion (Cormack, Clarke and Buettcher, SIGIR 2009).

Each ranking contributes ``1 / (c + rank)`` (rank from 1) to every item it holds; items are
sorted by the sum. It needs no score calibration between a cosine similarity and a text rank,
which is why hybrid search uses it. ``c = 60`` is the paper's constant.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import TypeVar

RRF_C = 60

K = TypeVar("K", bound=Hashable)


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[K]], *, c: int = RRF_C, limit: int | None = None
) -> list[tuple[K, float]]:
    """``(item, score)`` best first; ties broken by the best single rank, then first seen."""
    scores: dict[K, float] = {}
    best_rank: dict[K, int] = {}
    for ranking in rankings:
        seen: set[K] = set()
        for rank, item in enumerate(ranking, start=1):
            if item in seen:  # a ranking that repeats an item counts it once, at its best
                continue
            seen.add(item)
            scores[item] = scores.get(item, 0.0) + 1.0 / (c + rank)
            best_rank[item] = min(best_rank.get(item, rank), rank)
    order = list(scores)
    position = {item: index for index, item in enumerate(order)}
    order.sort(key=lambda item: (-scores[item], best_rank[item], position[item]))
    fused = [(item, scores[item]) for item in order]
    return fused if limit is None else fused[:limit]
