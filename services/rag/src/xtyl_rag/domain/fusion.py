"""Fusing the semantic and the full-text rankings of one query into one.

Two fusions, both with weights chosen on data (``bench/bench_quality.py``: a grid over the
semantic weight on the docstring set, checked on the PostgreSQL manual set):

* reciprocal rank fusion (Cormack, Clarke and Buettcher, SIGIR 2009): each ranking adds
  ``weight / (c + rank)`` to the items it holds. With equal weights, over the ``ts_rank``
  full text it used to fuse, it ranked below semantic search alone (docstrings MRR@10 0.552
  against 0.553);
* a convex combination of scores (Bruch, Gai and Ingber, "An Analysis of Fusion Functions
  for Hybrid Retrieval", 2023): each ranking's scores scaled to [0, 1] by its own minimum and
  maximum, then ``w * semantic + (1 - w) * full text``. It ranked best on both sets, at every
  weight near the best one, so hybrid search uses it (:func:`hybrid_fusion`).

Measured (MRR@10, 300 queries each; semantic alone 0.554 / 0.678, BM25 alone 0.522 / 0.632):
weighted RRF at its best weight (0.40) 0.587 on the docstrings, 0.703 on the manual; the
convex combination at its best (``SEMANTIC_WEIGHT`` 0.60) 0.600 and 0.724.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import TypeVar

RRF_C = 60
#: The semantic ranking's share of the hybrid score (the full-text one has the rest): the best
#: MRR@10 of a grid in steps of 0.05 on the docstring set (0.55-0.70 all within 0.005 of it).
SEMANTIC_WEIGHT = 0.6

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


def convex_fusion(
    rankings: Sequence[Sequence[tuple[K, float]]],
    *,
    weights: Sequence[float],
    limit: int | None = None,
) -> list[tuple[K, float]]:
    """``(item, score)`` best first, the score ``sum(weight * scaled)`` over the rankings that
    hold the item, each ranking's scores scaled to [0, 1] by its own minimum and maximum (all
    equal: 1). Ties broken by the best single rank, then first seen."""
    if len(weights) != len(rankings):
        raise ValueError("one weight per ranking")
    scores: dict[K, float] = {}
    best_rank: dict[K, int] = {}
    for weight, ranking in zip(weights, rankings, strict=True):
        values = [score for _item, score in ranking]
        low, high = min(values, default=0.0), max(values, default=0.0)
        seen: set[K] = set()
        for rank, (item, score) in enumerate(ranking, start=1):
            if item in seen:
                continue
            seen.add(item)
            scaled = (score - low) / (high - low) if high > low else 1.0
            scores[item] = scores.get(item, 0.0) + weight * scaled
            best_rank[item] = min(best_rank.get(item, rank), rank)
    order = list(scores)
    position = {item: index for index, item in enumerate(order)}
    order.sort(key=lambda item: (-scores[item], best_rank[item], position[item]))
    fused = [(item, scores[item]) for item in order]
    return fused if limit is None else fused[:limit]


def hybrid_fusion(
    semantic: Sequence[tuple[K, float]],
    fulltext: Sequence[tuple[K, float]],
    *,
    limit: int | None = None,
) -> list[tuple[K, float]]:
    """The hybrid ranking of ``(item, score)`` rankings (cosine similarity, BM25): their convex
    combination, ``SEMANTIC_WEIGHT`` to the semantic one. The score is in [0, 1]."""
    return convex_fusion(
        [semantic, fulltext], weights=[SEMANTIC_WEIGHT, 1.0 - SEMANTIC_WEIGHT], limit=limit
    )
