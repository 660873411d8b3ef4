"""Pure search logic: fusion, the semantic plan, snippets."""

from __future__ import annotations

import math
from functools import partial

import pytest

from xtyl_rag.domain.bm25 import K1, average_length, bm25_score, idf
from xtyl_rag.domain.fusion import (
    SEMANTIC_WEIGHT,
    convex_fusion,
    hybrid_fusion,
    reciprocal_rank_fusion,
)
from xtyl_rag.domain.planning import (
    HNSW_MAX_FETCH,
    HNSW_OVERFETCH,
    MAX_EF_SEARCH,
    SearchTuning,
    candidate_depth,
    plan_semantic,
)
from xtyl_rag.domain.snippets import ELLIPSIS, make_snippet, query_terms


def test_rrf_rewards_items_both_rankings_hold() -> None:
    fused = reciprocal_rank_fusion([["a", "b", "c"], ["c", "d", "a"]])
    assert [item for item, _ in fused] == ["a", "c", "b", "d"]
    assert fused[0][1] == pytest.approx(1 / 61 + 1 / 63)


def test_rrf_limit_ties_and_repeats() -> None:
    fused = reciprocal_rank_fusion([["x", "x", "y"], ["y", "x"]], limit=1)
    assert fused == [("x", pytest.approx(1 / 61 + 1 / 62))]
    assert reciprocal_rank_fusion([[], []]) == []
    # equal scores: the better single rank first, then the first seen
    assert [i for i, _ in reciprocal_rank_fusion([["p", "q"], ["q", "p"]])] == ["p", "q"]


def test_weighted_rrf_scales_each_rankings_pull() -> None:
    semantic, fulltext = ["s1", "both", "s3"], ["f1", "both", "f3"]
    # equal weights: the first of either ranking ties; the item both hold wins
    equal = reciprocal_rank_fusion([semantic, fulltext])
    assert equal[0][0] == "both"
    # a heavier semantic ranking puts its first ahead of the full-text first
    weighted = reciprocal_rank_fusion([semantic, fulltext], weights=[0.7, 0.3])
    order = [item for item, _ in weighted]
    assert order.index("s1") < order.index("f1")
    assert dict(weighted)["both"] == pytest.approx(0.7 / 62 + 0.3 / 62)
    assert dict(weighted)["f1"] == pytest.approx(0.3 / 61)
    with pytest.raises(ValueError, match="one weight per ranking"):
        reciprocal_rank_fusion([semantic, fulltext], weights=[1.0])


def test_hybrid_fusion_combines_scaled_scores_with_the_measured_weight() -> None:
    semantic = [("a", 0.9), ("b", 0.7), ("s", 0.5)]
    fulltext = [("b", 12.0), ("c", 6.0), ("f", 2.0)]
    fused = dict(hybrid_fusion(semantic, fulltext))
    # each ranking scaled to [0, 1] by its own min and max, then weighted
    assert fused["a"] == pytest.approx(SEMANTIC_WEIGHT * 1.0)
    assert fused["b"] == pytest.approx(SEMANTIC_WEIGHT * 0.5 + (1 - SEMANTIC_WEIGHT) * 1.0)
    assert fused["c"] == pytest.approx((1 - SEMANTIC_WEIGHT) * 0.4)
    assert fused["s"] == fused["f"] == 0.0  # the last of a ranking adds nothing
    assert [item for item, _ in hybrid_fusion(semantic, fulltext)][:2] == ["b", "a"]
    # one row, or equal scores: each counts fully
    assert hybrid_fusion([("x", 0.2)], [], limit=1) == [("x", pytest.approx(SEMANTIC_WEIGHT))]
    assert hybrid_fusion([], []) == []
    # a ranking that repeats an item counts it once, at its best
    assert dict(hybrid_fusion([("x", 0.9), ("y", 0.1), ("x", 0.1)], []))["x"] == pytest.approx(
        SEMANTIC_WEIGHT
    )
    with pytest.raises(ValueError, match="one weight per ranking"):
        convex_fusion([semantic], weights=[0.5, 0.5])


def test_plan_exact_up_to_the_threshold_then_hnsw() -> None:
    tuning = SearchTuning(exact_max_chunks=5_000, ef_search=100, max_scan_tuples=40_000)
    assert plan_semantic(0, 10, tuning).kind == "exact"
    assert plan_semantic(5_000, 10, tuning).kind == "exact"
    big = plan_semantic(500_000, 10, tuning, total_chunks=1_000_000)
    assert big.kind == "hnsw"
    # read more rows than asked (keep the nearest), the candidate list widened for them:
    assert (big.limit, big.rows) == (10, 10 * HNSW_OVERFETCH)
    assert big.ef_search == 480  # SHARE_OVERSAMPLING (8) * 30 rows read / 0.5
    assert big.max_scan_tuples == 40_000
    assert plan_semantic(5_000, 10, tuning).rows == 10
    assert plan_semantic(500_000, 30, tuning).rows == HNSW_MAX_FETCH  # at most
    small_share = plan_semantic(6_000, 30, tuning, total_chunks=10_000_000)
    assert small_share.ef_search == MAX_EF_SEARCH
    assert plan_semantic(6_000, 10, tuning).ef_search == 100


def test_candidate_depth() -> None:
    assert candidate_depth(10, fused=False) == 10
    assert candidate_depth(10, fused=True) == 30
    assert candidate_depth(50, fused=True) == 150


def test_query_terms_drop_stopwords_and_repeats() -> None:
    assert query_terms("How do I feed THE starter, the starter?") == ["feed", "starter"]


def test_snippet_centres_on_the_terms() -> None:
    text = ("filler words here " * 40) + "the sourdough starter needs flour" + (" tail" * 100)
    snippet = make_snippet(text, ["sourdough", "starter"], width=120)
    assert "sourdough starter" in snippet
    assert snippet.startswith(ELLIPSIS)
    assert snippet.endswith(ELLIPSIS)
    assert len(snippet) <= 122
    assert make_snippet("short  text\n here", ["x"]) == "short text here"
    assert make_snippet("a " * 300, []).startswith("a a")


def test_bm25_weighs_rare_lexemes_saturates_repeats_and_normalises_length() -> None:
    holding = {"rare": 2, "common": 90}
    score = partial(bm25_score, holding=holding, chunks=100, avgdl=10.0)
    # a rare lexeme outweighs a common one
    assert score(["rare"], {"rare": 1}, 10) > 5 * score(["common"], {"common": 1}, 10)
    # repeats count, but less and less (saturation by K1)
    once, twice, often = (score(["rare"], {"rare": n}, 10) for n in (1, 2, 50))
    assert once < twice < often < once * (K1 + 1)
    # a longer chunk with the same matches scores less (B)
    assert score(["rare"], {"rare": 1}, 40) < once
    # a chunk of average length: idf * tf * (K1 + 1) / (tf + K1)
    assert once == pytest.approx(idf(100, 2) * (K1 + 1) / (1 + K1))
    assert idf(100, 2) == pytest.approx(math.log(1 + 98.5 / 2.5))
    # lexemes the chunk lacks add nothing; a repeated query word counts once
    assert score(["rare", "absent", "rare"], {"rare": 1}, 10) == once
    assert idf(10, 10) > 0  # never negative, even for a lexeme in every chunk
    assert average_length(0, 0) == 1.0
    assert average_length(4, 100) == 25.0
