"""Shared by the parsers: decode text bytes, normalise, enforce the output limits."""

from __future__ import annotations

import codecs

from xtyl_rag.adapters.extraction.contracts import ExtractedText, ExtractionLimits
from xtyl_rag.adapters.extraction.errors import ExtractionFailed
from xtyl_rag.domain.chunking import normalize_text


def decode_text(data: bytes, charset: str | None) -> str:
    """BOM first, then the declared charset, then UTF-8, then Windows-1252 (never fails)."""
    for bom, encoding in (
        (codecs.BOM_UTF8, "utf-8-sig"),
        (codecs.BOM_UTF16_LE, "utf-16"),
        (codecs.BOM_UTF16_BE, "utf-16"),
    ):
        if data.startswith(bom):
            return data.decode(encoding, errors="replace")
    if charset:
        try:
            return data.decode(charset, errors="replace")
        except LookupError:
            pass
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


class TextBudget:
    """Counts characters as a parser appends them, to fail early on a text bomb."""

    def __init__(self, limits: ExtractionLimits) -> None:
        self.limit = limits.max_text_chars
        self.used = 0

    def spend(self, chars: int) -> None:
        self.used += chars
        if self.used > self.limit:
            raise ExtractionFailed("too_large", f"the text is longer than {self.limit} characters")


def finish(
    text: str,
    limits: ExtractionLimits,
    *,
    title: str | None = None,
    pages: tuple[int, ...] | None = None,
    normalised: bool = False,
) -> ExtractedText:
    if not normalised:
        text = normalize_text(text).strip()
    if len(text) > limits.max_text_chars:
        raise ExtractionFailed(
            "too_large", f"the text is longer than {limits.max_text_chars} characters"
        )
    if not text.strip():
        raise ExtractionFailed("no_text", "the document contains no text to index")
    clean_title = normalize_text(title).strip()[:500] if title else ""
    return ExtractedText(text=text, title=clean_title or None, pages=pages)
