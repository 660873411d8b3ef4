"""Snippets: the part of a chunk that best shows why it matched, and the query's terms."""

from __future__ import annotations

import re
from collections.abc import Sequence

SNIPPET_CHARS = 240
ELLIPSIS = "\u2026"

_WORD = re.compile(r"\w+", re.UNICODE)
_SPACES = re.compile(r"\s+")
#: words too common to say why a chunk matched (a short English list; the full-text index has
#: its own).
STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "but",
        "by",
        "can",
        "could",
        "did",
        "do",
        "does",
        "for",
        "from",
        "had",
        "has",
        "have",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "me",
        "my",
        "no",
        "not",
        "of",
        "on",
        "or",
        "our",
        "so",
        "than",
        "that",
        "the",
        "their",
        "them",
        "then",
        "there",
        "these",
        "they",
        "this",
        "to",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "who",
        "whom",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
    ]
)


def query_terms(query: str) -> list[str]:
    """Lower-case words of the query worth highlighting, in order, without repeats."""
    terms: list[str] = []
    for word in _WORD.findall(query.lower()):
        if len(word) < 2 or word in STOPWORDS or word in terms:
            continue
        terms.append(word)
    return terms


def term_positions(text: str, terms: Sequence[str]) -> list[tuple[int, str]]:
    """``(offset, term)`` for each word of ``text`` that starts with a term (so ``index``
    finds ``indexing``)."""
    if not terms:
        return []
    found: list[tuple[int, str]] = []
    for match in _WORD.finditer(text):
        word = match.group().lower()
        for term in terms:
            if word.startswith(term) or (len(word) >= 4 and term.startswith(word)):
                found.append((match.start(), term))
                break
    return found


def make_snippet(content: str, terms: Sequence[str], width: int = SNIPPET_CHARS) -> str:
    """About ``width`` characters of ``content`` around the densest run of query terms (the
    start when none occurs), cut at word boundaries, with an ellipsis where text was cut."""
    text = _SPACES.sub(" ", content).strip()
    if len(text) <= width:
        return text
    positions = term_positions(text, terms)
    start = 0
    if positions:
        best = (-1, -1)
        for index, (offset, _term) in enumerate(positions):
            window = {term for pos, term in positions[index:] if pos < offset + width * 0.8}
            hits = sum(1 for pos, _ in positions[index:] if pos < offset + width * 0.8)
            score = (len(window), hits)
            if score > best:
                best, start = score, offset
        start = max(0, start - width // 5)
    end = min(len(text), start + width)
    start = max(0, end - width)
    if start > 0:
        space = text.find(" ", start)
        start = space + 1 if 0 <= space < start + 20 else start
    if end < len(text):
        space = text.rfind(" ", start, end)
        end = space if space > end - 20 else end
    snippet = text[start:end].strip()
    return (ELLIPSIS if start > 0 else "") + snippet + (ELLIPSIS if end < len(text) else "")
