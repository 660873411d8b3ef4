"""Pure search logic: fusion, the semantic plan, snippets."""

from __future__ import annotations

import pytest

from xtyl_rag.domain.fusion import reciprocal_rank_fusion
from xtyl_rag.domain.planning import MAX_EF_SEARCH, SearchTuning, candidate_depth, plan_semantic
from xtyl_rag.domain.search import candidate_lexemes
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


def test_plan_exact_up_to_the_threshold_then_hnsw() -> None:
    tuning = SearchTuning(exact_max_chunks=5_000, ef_search=100, max_scan_tuples=40_000)
    assert plan_semantic(0, 10, tuning).kind == "exact"
    assert plan_semantic(5_000, 10, tuning).kind == "exact"
    big = plan_semantic(200_000, 10, tuning, total_chunks=1_000_000)
    assert big.kind == "hnsw"
    assert big.ef_search == 400  # SHARE_OVERSAMPLING (8) * 10 / 0.2
    assert big.max_scan_tuples == 40_000
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


def test_candidate_lexemes_take_the_rarest_within_the_budget() -> None:
    counts = {"common": 9_000, "rare": 12, "mid": 700, "absent": 0, "other": 2_500}
    assert candidate_lexemes(counts, 3_000) == (["rare", "mid"], False)
    assert candidate_lexemes(counts, 100_000) == (["rare", "mid", "other", "common"], True)
    # the rarest is always taken, even when it alone is over the budget
    assert candidate_lexemes({"huge": 50_000, "bigger": 80_000}, 3_000) == (["huge"], False)
    # nothing the owner has: nothing to rank, and that is the whole answer
    assert candidate_lexemes({"absent": 0}, 3_000) == ([], True)
    # ties broken by the lexeme, so a query ranks the same chunks every time
    assert candidate_lexemes({"b": 5, "a": 5, "c": 5}, 10) == (["a", "b"], False)
