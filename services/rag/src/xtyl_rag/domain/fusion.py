"""Fusing the semantic and the full-text rankings of one query into one.

Reciprocal rank fusion (Cormack, Clarke and Buettcher, SIGIR 2009): each ranking contributes
``weight / (c + rank)`` (rank from 1) to every item it holds, items sorted by the sum. It needs
no calibration between a cosine similarity and a BM25 score. With equal weights it ranked
worse than semantic search alone on both evaluation sets (``bench/bench_quality.py``): the
full-text ranking is the weaker one there and a chunk it ranks first pulled as hard as the
semantic first. So the rankings carry weights, and the weights are chosen on data:
``SEMANTIC_WEIGHT`` is the best of a grid on the docstring set, checked on the PostgreSQL
manual set (the figures are in the README of the service).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import TypeVar

RRF_C = 60
#: The semantic ranking's share of the fusion (the full-text one has ``1 - SEMANTIC_WEIGHT``):
#: the best MRR@10 of a grid in steps of 0.05 on the docstring set.
SEMANTIC_WEIGHT = 0.5

K = TypeVar("K", bound=Hashable)


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[K]],
    *,
    weights: Sequence[float] | None = None,
    c: int = RRF_C,
    limit: int | None = None,
) -> list[tuple[K, float]]:
    """``(item, score)`` best first; ties broken by the best single rank, then first seen.
    ``weights`` (one per ranking, 1 each by default) scale each ranking's contributions."""
    if weights is None:
        weights = [1.0] * len(rankings)
    if len(weights) != len(rankings):
        raise ValueError("one weight per ranking")
    scores: dict[K, float] = {}
    best_rank: dict[K, int] = {}
    for weight, ranking in zip(weights, rankings, strict=True):
        seen: set[K] = set()
        for rank, item in enumerate(ranking, start=1):
            if item in seen:  # a ranking that repeats an item counts it once, at its best
                continue
            seen.add(item)
            scores[item] = scores.get(item, 0.0) + weight / (c + rank)
            best_rank[item] = min(best_rank.get(item, rank), rank)
    order = list(scores)
    position = {item: index for index, item in enumerate(order)}
    order.sort(key=lambda item: (-scores[item], best_rank[item], position[item]))
    fused = [(item, scores[item]) for item in order]
    return fused if limit is None else fused[:limit]


def hybrid_fusion(
    semantic: Sequence[K], fulltext: Sequence[K], *, limit: int | None = None
) -> list[tuple[K, float]]:
    """The hybrid ranking: reciprocal rank fusion weighted ``SEMANTIC_WEIGHT`` to the
    semantic ranking."""
    return reciprocal_rank_fusion(
        [semantic, fulltext], weights=[SEMANTIC_WEIGHT, 1.0 - SEMANTIC_WEIGHT], limit=limit
    )
