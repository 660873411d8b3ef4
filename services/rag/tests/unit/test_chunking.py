"""Chunking: token budget, overlap, boundaries, offsets, determinism, odd input."""

from __future__ import annotations

import codecs
import this
from collections.abc import Sequence
from itertools import pairwise

import pytest

from xtyl_rag.adapters.embedders import MiniLMTokenCounter
from xtyl_rag.domain.chunking import Chunk, ChunkingPolicy, chunk_text, normalize_text, rejoin

ZEN = codecs.decode(this.s, "rot13")


def count_words(texts: Sequence[str]) -> list[int]:
    """A stand-in counter: one token per whitespace-separated word."""
    return [len(text.split()) for text in texts]


@pytest.fixture(scope="module")
def count_pieces() -> MiniLMTokenCounter:
    return MiniLMTokenCounter.load()


def document() -> str:
    paragraphs = [ZEN]
    for doc in (codecs.__doc__, this.__doc__, pytest.__doc__):
        if doc:
            paragraphs.append(doc)
    paragraphs.extend(
        f"Section {n}. "
        + " ".join(f"Sentence {n}.{m} says something about topic {m}." for m in range(12))
        for n in range(10)
    )
    return "\n\n".join(paragraphs)


def assert_honest(chunks: list[Chunk], text: str) -> None:
    for ordinal, chunk in enumerate(chunks):
        assert chunk.ordinal == ordinal
        assert chunk.content == text[chunk.metadata["char_start"] : chunk.metadata["char_end"]]
        assert chunk.content == chunk.content.strip()


def test_chunks_fit_the_budget_and_cover_the_text(count_pieces: MiniLMTokenCounter) -> None:
    text = normalize_text(document())
    policy = ChunkingPolicy(max_tokens=64, overlap_tokens=10)

    chunks = chunk_text(text, count_pieces, policy)

    assert len(chunks) > 10
    assert_honest(chunks, text)
    assert all(0 < chunk.token_count <= 64 for chunk in chunks)
    assert chunks[0].metadata["char_start"] == 0
    assert chunks[-1].metadata["char_end"] == len(text.rstrip())
    for before, after in pairwise(chunks):
        # no gap: anything between two chunks is whitespace
        assert text[before.metadata["char_end"] : after.metadata["char_start"]].strip() == ""
        assert after.metadata["char_start"] > before.metadata["char_start"]


def test_consecutive_chunks_overlap_by_whole_sentences(count_pieces: MiniLMTokenCounter) -> None:
    text = " ".join(f"Fact number {n} is short." for n in range(200))
    policy = ChunkingPolicy(max_tokens=60, overlap_tokens=9)

    chunks = chunk_text(text, count_pieces, policy)

    assert len(chunks) > 5
    for before, after in pairwise(chunks):
        shared = text[after.metadata["char_start"] : before.metadata["char_end"]]
        assert shared, "consecutive chunks should overlap"
        assert shared.startswith("Fact number")
        assert shared.endswith("short.")
        assert count_pieces([shared])[0] <= 9


def test_prefers_to_end_at_a_paragraph_break() -> None:
    paragraphs = [" ".join(f"w{p}x{n}." for n in range(40)) for p in range(6)]
    text = "\n\n".join(paragraphs)

    chunks = chunk_text(text, count_words, ChunkingPolicy(max_tokens=100, overlap_tokens=0))

    # 40-word paragraphs in 100-word chunks: two paragraphs each, never a cut inside one
    assert [chunk.content for chunk in chunks] == [
        "\n\n".join(paragraphs[i : i + 2]) for i in range(0, 6, 2)
    ]


def test_same_input_gives_the_same_chunks(count_pieces: MiniLMTokenCounter) -> None:
    text = document()

    assert chunk_text(text, count_pieces) == chunk_text(text, count_pieces)


def test_defaults_fit_the_local_model(count_pieces: MiniLMTokenCounter) -> None:
    chunks = chunk_text(document() * 3, count_pieces)

    assert max(chunk.token_count for chunk in chunks) <= 240
    assert max(chunk.token_count for chunk in chunks) > 150


def test_long_sentences_and_words_are_cut_to_fit(count_pieces: MiniLMTokenCounter) -> None:
    text = "lorem " * 500 + "x" * 3000 + " end"
    policy = ChunkingPolicy(max_tokens=50, overlap_tokens=5)

    chunks = chunk_text(text, count_pieces, policy)

    assert_honest(chunks, text)
    assert all(chunk.token_count <= 50 for chunk in chunks)
    assert chunks[-1].content.endswith("end")


def test_normalises_line_breaks_and_drops_nul_bytes() -> None:
    chunks = chunk_text("first line\r\nsecond\x00 line\rthird\u2028fourth", count_words)

    assert [chunk.content for chunk in chunks] == ["first line\nsecond line\nthird\nfourth"]


def test_unicode_text_is_sliced_on_characters(count_pieces: MiniLMTokenCounter) -> None:
    text = normalize_text(
        "Les élèves étudient. 学生们在学习。Ствол дерева. Emoji 👩‍👩‍👧 family. Cafe\u0301. " * 40
    )

    chunks = chunk_text(text, count_pieces, ChunkingPolicy(max_tokens=40, overlap_tokens=6))

    assert_honest(chunks, text)
    assert "e\u0301" not in "".join(chunk.content for chunk in chunks)  # NFC: é
    assert all(chunk.token_count <= 40 for chunk in chunks)


def test_chunks_carry_their_page() -> None:
    pages = ["alpha " * 30, "beta " * 30, "gamma " * 30]
    text = "\n\n".join(page.strip() for page in pages)
    starts = [0, text.index("beta"), text.index("gamma")]

    chunks = chunk_text(
        text, count_words, ChunkingPolicy(max_tokens=30, overlap_tokens=0), page_starts=starts
    )

    assert [(chunk.metadata["page"], chunk.content.split()[0]) for chunk in chunks] == [
        (1, "alpha"),
        (2, "beta"),
        (3, "gamma"),
    ]


def test_page_offsets_need_normalised_text() -> None:
    with pytest.raises(ValueError, match="normalised"):
        chunk_text("a\r\nb", count_words, page_starts=[0])


@pytest.mark.parametrize("text", ["", "   \n\n \t ", "\x00\x00"])
def test_blank_text_gives_no_chunks(text: str) -> None:
    assert chunk_text(text, count_words) == []


def test_policy_rejects_overlap_that_could_not_progress() -> None:
    with pytest.raises(ValueError, match="overlap"):
        ChunkingPolicy(max_tokens=100, overlap_tokens=60)


@pytest.mark.parametrize(
    "policy",
    [
        ChunkingPolicy(max_tokens=64, overlap_tokens=10),  # overlapping chunks
        ChunkingPolicy(max_tokens=40, overlap_tokens=0),  # whitespace between chunks
        ChunkingPolicy(),
    ],
)
def test_the_chunks_give_the_text_back_exactly(
    count_pieces: MiniLMTokenCounter, policy: ChunkingPolicy
) -> None:
    text = normalize_text("  \n" + document().replace("\n\n", "\n \t\n", 3) + "\n\n  ")

    chunks = chunk_text(text, count_pieces, policy)

    assert len(chunks) > 3
    assert "".join(rejoin((c.content, c.stored_metadata()) for c in chunks)) == text
    stored = [c.stored_metadata() for c in chunks]
    assert stored[0]["gap"] == "  \n"
    assert stored[-1]["tail"] == "\n\n  "
    assert all("tail" not in m for m in stored[:-1])


def test_chunks_written_before_they_kept_their_whitespace_join_with_a_guess() -> None:
    text = "One sentence here. Two sentence here.\n\nThree sentence here."
    chunks = chunk_text(text, count_words, ChunkingPolicy(max_tokens=8, overlap_tokens=0))
    old = [(c.content, dict(c.metadata)) for c in chunks]  # offsets only

    assert "".join(rejoin(old)) == text  # a space, then a paragraph break
    assert "".join(rejoin([("first", {}), ("second", {})])) == "first\n\nsecond"
