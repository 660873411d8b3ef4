"""HTML to text with the standard library's tolerant parser: scripts, styles and other
non-content dropped, block elements on their own lines, the ``<title>`` kept."""

from __future__ import annotations

import re
from html.parser import HTMLParser

from xtyl_rag.adapters.extraction.contracts import ExtractedText, ExtractionLimits
from xtyl_rag.adapters.extraction.formats.output import TextBudget, decode_text, finish

SKIPPED = frozenset({"script", "style", "noscript", "template", "svg", "math", "iframe", "object"})
PARAGRAPHS = frozenset(
    {
        "p", "div", "section", "article", "header", "footer", "main", "aside", "nav",
        "blockquote", "pre", "table", "ul", "ol", "dl", "figure", "form", "fieldset",
        "h1", "h2", "h3", "h4", "h5", "h6", "hr", "address", "details",
    }
)  # fmt: skip
LINES = frozenset({"br", "li", "tr", "dt", "dd", "figcaption", "summary", "caption"})
CELLS = frozenset({"td", "th"})
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.I)
_SPACES = re.compile(r"[ \t\f\v\r\n]+")
_BLANK_LINES = re.compile(r"\n[ \t]*(?:\n[ \t]*)+")


class _TextCollector(HTMLParser):
    def __init__(self, budget: TextBudget) -> None:
        super().__init__(convert_charrefs=True)
        self.budget = budget
        self.parts: list[str] = []
        self.title_parts: list[str] = []
        self.first_h1: list[str] = []
        self._skip = 0
        self._in_title = False
        self._in_h1 = False
        self._pre = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
        elif tag in SKIPPED:
            self._skip += 1
        elif tag == "pre":
            self._pre += 1
        if tag == "h1" and not self.first_h1:
            self._in_h1 = True
        self._break(tag, opening=True)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._break(tag, opening=True)  # <br/>, <hr/>, <svg/>: nothing to skip

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        elif tag in SKIPPED:
            self._skip = max(0, self._skip - 1)
        elif tag == "pre":
            self._pre = max(0, self._pre - 1)
        if tag == "h1":
            self._in_h1 = False
        self._break(tag, opening=False)

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title_parts.append(data)
            return
        if self._skip:
            return
        if self._in_h1:
            self.first_h1.append(data)
        text = data if self._pre else _SPACES.sub(" ", data)
        self.budget.spend(len(text))
        self.parts.append(text)

    def _break(self, tag: str, *, opening: bool) -> None:
        if tag in PARAGRAPHS:
            self.parts.append("\n\n")
        elif tag in LINES and opening:
            self.parts.append("\n")
        elif tag in CELLS and opening:
            self.parts.append("\t")


def extract_html(data: bytes, charset: str | None, limits: ExtractionLimits) -> ExtractedText:
    if charset is None:
        declared = _META_CHARSET.search(data[:4096])
        charset = declared.group(1).decode("ascii").lower() if declared else None
    collector = _TextCollector(TextBudget(limits))
    collector.feed(decode_text(data, charset))
    collector.close()
    lines = (line.strip(" ") for line in "".join(collector.parts).split("\n"))
    text = _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()
    title = _SPACES.sub(" ", "".join(collector.title_parts)).strip()
    title = title or _SPACES.sub(" ", "".join(collector.first_h1)).strip()
    return finish(text, limits, title=title or None)
