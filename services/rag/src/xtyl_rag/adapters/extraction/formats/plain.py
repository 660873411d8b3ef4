"""Plain text and Markdown (kept as written: Markdown reads well to an embedding model)."""

from __future__ import annotations

import re

from xtyl_rag.adapters.extraction.contracts import ExtractedText, ExtractionLimits
from xtyl_rag.adapters.extraction.formats.output import decode_text, finish

_ATX_HEADING = re.compile(r"^ {0,3}#{1,6}[ \t]+(.+?)[ \t#]*$", re.MULTILINE)
_FRONT_MATTER_TITLE = re.compile(r"\A---\n(?:.*\n)*?title:[ \t]*(.+)\n(?:.*\n)*?---\n")


def extract_plain(data: bytes, charset: str | None, limits: ExtractionLimits) -> ExtractedText:
    return finish(decode_text(data, charset), limits)


def extract_markdown(data: bytes, charset: str | None, limits: ExtractionLimits) -> ExtractedText:
    text = decode_text(data, charset)
    return finish(text, limits, title=markdown_title(text))


def markdown_title(text: str) -> str | None:
    head = text[:20_000].replace("\r\n", "\n")
    front = _FRONT_MATTER_TITLE.match(head)
    if front:
        return front.group(1).strip().strip("\"'") or None
    heading = _ATX_HEADING.search(head)
    return heading.group(1).strip() if heading else None
