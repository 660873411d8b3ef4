"""Answers: prompt, citations that only name given passages, the extractive fallback."""

from __future__ import annotations

import uuid

from xtyl_rag.domain.answers import (
    build_messages,
    cited_numbers,
    extractive_answer,
    number_passages,
)
from xtyl_rag.domain.search import ChunkHit


def hit(content: str, title: str = "Doc") -> ChunkHit:
    return ChunkHit(
        chunk_id=uuid.uuid4(),
        document_id=uuid.uuid4(),
        title=title,
        ordinal=0,
        content=content,
        metadata={},
        score=1.0,
    )


def test_citations_only_name_given_passages() -> None:
    assert cited_numbers("A [2] and [1][2], not [0] nor [9].", 3) == [2, 1]


def test_prompt_numbers_the_passages_and_keeps_the_question() -> None:
    passages = number_passages([hit("first text", "One"), hit("second text", "Two")])
    messages = build_messages("what?", passages)
    assert messages[0]["role"] == "system"
    assert "[1] One\nfirst text" in messages[1]["content"]
    assert "[2] Two\nsecond text" in messages[1]["content"]
    assert messages[1]["content"].endswith("Question: what?")


def test_extractive_answer_picks_matching_sentences_and_cites_them() -> None:
    passages = number_passages(
        [
            hit("Bread needs an oven. Feed the sourdough starter with flour every day."),
            hit("Unrelated text about trains and their timetables in winter."),
            hit("A starter that is fed twice a day becomes more active quickly."),
        ]
    )
    answer = extractive_answer("how often do I feed the starter", passages)
    assert "Feed the sourdough starter with flour every day. [1]" in answer
    assert "[3]" in answer
    assert "trains" not in answer
    assert extractive_answer("anything", []) == ""
    fallback = extractive_answer("zebra", number_passages([hit("Nothing matches in here at all.")]))
    assert fallback.endswith("[1]")
