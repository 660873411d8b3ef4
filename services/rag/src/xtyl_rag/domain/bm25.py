"""BM25: how full-text search scores a chunk (Robertson and Zaragoza, "The Probabilistic
Relevance Framework: BM25 and Beyond", 2009; the idf of Lucene, never negative).

For a query of lexemes ``t`` and a chunk ``d`` of one owner::

    score(d) = sum over t in d of  idf(t) * tf(t, d) * (K1 + 1)
                                   / (tf(t, d) + K1 * (1 - B + B * len(d) / avgdl))
    idf(t)   = ln(1 + (N - n(t) + 0.5) / (n(t) + 0.5))

``N`` is the owner's chunk count, ``n(t)`` how many of them hold ``t``, ``tf`` how often ``t``
occurs in ``d``, ``len(d)`` the chunk's length in tokens (its ``token_count``: the embedding
model's word pieces) and ``avgdl`` the average over the owner's chunks. The statistics are
the owner's alone (``owner_text_stats``, ``owner_lexemes``), so one user's documents never
change how another's rank. The SQL in ``adapters/postgres/chunks.py`` computes this;
:func:`bm25_score` is the same formula in Python, the reference its tests compare against.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

#: term-frequency saturation and length normalisation: the values most systems ship
#: (Lucene, Elasticsearch, Tantivy)
K1 = 1.2
B = 0.75


def idf(chunks: int, holding: int) -> float:
    """The weight of a lexeme that ``holding`` of ``chunks`` chunks contain."""
    return math.log(1.0 + (chunks - holding + 0.5) / (holding + 0.5))


def average_length(chunks: int, tokens: int) -> float:
    """``avgdl``: at least 1, so an owner of empty chunks divides by nothing smaller."""
    return max(tokens / max(chunks, 1), 1.0)


def bm25_score(
    query: Iterable[str],
    frequencies: Mapping[str, int],
    length: int,
    *,
    holding: Mapping[str, int],
    chunks: int,
    avgdl: float,
) -> float:
    """The score of one chunk of ``length`` tokens whose lexemes occur ``frequencies`` times,
    for the query's distinct lexemes; ``holding`` maps a lexeme to its chunk count."""
    norm = K1 * (1.0 - B + B * length / avgdl)
    score = 0.0
    for lexeme in set(query):
        tf = frequencies.get(lexeme, 0)
        if tf:
            score += idf(chunks, holding[lexeme]) * tf * (K1 + 1.0) / (tf + norm)
    return score
