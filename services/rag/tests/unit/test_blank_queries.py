"""A query is blank for the handler exactly when the API document's pattern says so, on every
character: the document's pattern read as JSON Schema does (ECMA-262) and as Python does."""

from __future__ import annotations

import re
import sys
import unicodedata

import pytest

from xtyl_rag.routes.schemas import NOT_BLANK, normalise_query

#: ECMA-262's ``\s``: WhiteSpace (TAB, VT, FF, ZWNBSP, every Zs) and LineTerminator.
ECMA_WHITESPACE = {"\t", "\v", "\f", "\ufeff", "\n", "\r", "\u2028", "\u2029"} | {
    chr(c) for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)) == "Zs"
}
#: NOT_BLANK's class, spelled out the ECMA way: ``\s`` and the explicit ranges after it.
ECMA_BLANK = ECMA_WHITESPACE | {chr(c) for c in range(0x1C, 0x20)} | {"\x85", "\ufeff"}


def test_the_pattern_and_the_handler_agree_on_every_character() -> None:
    python_pattern = re.compile(NOT_BLANK)
    disagreements = [
        hex(c)
        for c in range(sys.maxunicode + 1)
        if not 0xD800 <= c <= 0xDFFF
        and len(
            {
                normalise_query(chr(c)) != "",  # the handler: not blank
                python_pattern.search(chr(c)) is not None,  # the pattern, Python's \s
                chr(c) not in ECMA_BLANK,  # the pattern, ECMA's \s
            }
        )
        != 1
    ]
    assert disagreements == []


@pytest.mark.parametrize("query", ["\x1f", " \ufeff\t", "\u3000\x85", "\n\r"])
def test_blank_queries_are_blank(query: str) -> None:
    assert normalise_query(query) == ""
    assert re.search(NOT_BLANK, query) is None


def test_a_query_keeps_its_words_with_one_space_between() -> None:
    assert normalise_query("\ufeff  pgvector\x1f\u00a0 hnsw\n") == "pgvector hnsw"
