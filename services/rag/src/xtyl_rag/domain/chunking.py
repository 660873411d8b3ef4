"""Split a document's text into overlapping chunks of at most ``max_tokens`` word pieces.

Pure and deterministic: the same text, counter and policy give the same chunks. Tokens are
counted by the caller's :data:`TokenCounter` (the embedder's own tokenizer, so a chunk fits the
model). The text is cut into units: sentences (or lines) inside paragraphs, and for a sentence
too long on its own, words, and for a word too long, slices of characters. Units are packed
greedily; a chunk prefers to end at a paragraph break once it is ``paragraph_fill`` full, and
the next one starts with the last units of the previous one (up to ``overlap_tokens``).

A chunk's ``content`` is exactly ``text[char_start:char_end]`` of the normalised text
(:func:`normalize_text`); with ``page_starts`` (offsets where each page starts), each chunk
carries the page where it starts. What no chunk covers is whitespace (between sentences and
paragraphs, before the first and after the last): a chunk keeps the whitespace before it
(``gap``, when there is any) and the last one what follows it (``tail``), so :func:`rejoin`
gives the normalised text back exactly, the overlaps taken once.
"""

from __future__ import annotations

import re
import unicodedata
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

TokenCounter = Callable[[Sequence[str]], Sequence[int]]
"""Word pieces in each text, special tokens excluded; called with many texts at once."""

_LINE_BREAKS = re.compile(r"\r\n?|[\x0b\x0c\x85\u2028\u2029]")
_CONTROLS = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")
_PARAGRAPH = re.compile(r"\S(?:.*?)(?=\n[ \t]*\n|\Z)", re.DOTALL)
_SENTENCE = re.compile(
    r"\S.*?(?:[.!?\u2026\u3002\uff01\uff1f]+[\"'\u201d\u2019)\]]*(?=\s|\Z)|(?=\n)|\Z)",
    re.DOTALL,
)
_WORD = re.compile(r"\S+")


def normalize_text(text: str) -> str:
    """Line breaks as ``\\n``; NUL and other control characters (not tab) removed; lone
    surrogates replaced; NFC. Idempotent, so offsets into its output stay valid."""
    text = _LINE_BREAKS.sub("\n", text)
    text = _CONTROLS.sub("", text)
    text = text.encode("utf-8", errors="replace").decode("utf-8")
    return unicodedata.normalize("NFC", text)


@dataclass(frozen=True, slots=True)
class ChunkingPolicy:
    #: all-MiniLM-L6-v2 reads 256 pieces with [CLS] and [SEP]: 240 leaves a margin.
    max_tokens: int = 240
    #: ~15 % of ``max_tokens``.
    overlap_tokens: int = 36
    #: end a chunk at a paragraph break rather than mid-paragraph once this full.
    paragraph_fill: float = 0.6

    def __post_init__(self) -> None:
        if self.max_tokens < 8:
            raise ValueError("max_tokens must be at least 8")
        if not 0 <= self.overlap_tokens < self.max_tokens // 2:
            raise ValueError("overlap_tokens must be between 0 and max_tokens / 2")
        if not 0 <= self.paragraph_fill <= 1:
            raise ValueError("paragraph_fill must be between 0 and 1")


@dataclass(frozen=True, slots=True)
class Chunk:
    ordinal: int
    content: str
    token_count: int
    #: ``char_start``, ``char_end`` (offsets in the normalised text) and ``page`` when known.
    metadata: Mapping[str, int]
    #: The whitespace no chunk covers: before this chunk, and after it (the last chunk only);
    #: kept in the chunk's metadata as ``gap`` and ``tail`` when not empty.
    gap: str = ""
    tail: str = ""

    def stored_metadata(self) -> dict[str, int | str]:
        """The metadata kept with the chunk: its own, and ``gap`` / ``tail`` when not empty."""
        stored: dict[str, int | str] = dict(self.metadata)
        if self.gap:
            stored["gap"] = self.gap
        if self.tail:
            stored["tail"] = self.tail
        return stored


@dataclass(frozen=True, slots=True)
class _Unit:
    start: int
    end: int
    tokens: int
    opens_paragraph: bool


def chunk_text(
    text: str,
    count_tokens: TokenCounter,
    policy: ChunkingPolicy | None = None,
    *,
    page_starts: Sequence[int] | None = None,
) -> list[Chunk]:
    """Chunks of ``text`` in order (ordinal 0, 1, ...); ``[]`` for blank text.

    ``page_starts`` must refer to ``text`` as given, so the text must then be normalised
    already (extraction's output is).
    """
    policy = policy or ChunkingPolicy()
    normalised = normalize_text(text)
    if page_starts is not None and normalised != text:
        raise ValueError("page_starts need normalised text (see normalize_text)")
    units = _units(normalised, count_tokens, policy.max_tokens)
    spans = _pack(units, policy)
    contents = [normalised[start:end] for start, end in spans]
    counts = count_tokens(contents) if contents else []
    chunks: list[Chunk] = []
    covered = 0  # the normalised text up to here is in a chunk (or a gap) already
    for ordinal, ((start, end), content, tokens) in enumerate(
        zip(spans, contents, counts, strict=True)
    ):
        metadata = {"char_start": start, "char_end": end}
        if page_starts:
            metadata["page"] = max(1, bisect_right(page_starts, start))
        gap = normalised[covered:start]
        tail = normalised[end:] if ordinal == len(spans) - 1 else ""
        covered = max(covered, end)
        chunks.append(Chunk(ordinal, content, int(tokens), metadata, gap=gap, tail=tail))
    return chunks


def rejoin(chunks: Iterable[tuple[str, Mapping[str, Any]]]) -> Iterator[str]:
    """The text ``chunks`` (``(content, metadata)`` in ordinal order) were cut from, in pieces:
    each chunk's content past what the one before it covered (the overlap taken once), with
    the whitespace between them. Exact for chunks of :func:`chunk_text` (the normalised text);
    chunks without ``gap`` (written before it was kept) get a guess of the same length's
    whitespace between them, a space or a paragraph break, and no leading or trailing one."""
    covered = 0
    tail: object = None
    first = True
    for content, metadata in chunks:
        start, end = metadata.get("char_start"), metadata.get("char_end")
        if not (isinstance(start, int) and isinstance(end, int) and end - start == len(content)):
            # no offsets to go by: the chunk whole, a paragraph break before it
            yield content if first else "\n\n" + content
        elif end <= covered:
            continue  # nothing new (never cut so by chunk_text)
        elif start >= covered:
            gap = metadata.get("gap")
            if isinstance(gap, str) and len(gap) == start - covered:
                yield gap
            elif not first and start > covered:
                yield " " if start - covered == 1 else "\n\n"
            yield content
        else:
            yield content[covered - start :]
        if isinstance(end, int):
            covered = max(covered, end)
        tail = metadata.get("tail")
        first = False
    if isinstance(tail, str):
        yield tail


def _units(text: str, count_tokens: TokenCounter, max_tokens: int) -> list[_Unit]:
    """Sentences in paragraphs, with their token counts; over-long ones cut smaller."""
    spans: list[tuple[int, int, bool]] = []
    for paragraph in _PARAGRAPH.finditer(text):
        first = True
        for sentence in _SENTENCE.finditer(text, paragraph.start(), paragraph.end()):
            end = sentence.start() + len(sentence.group().rstrip())
            spans.append((sentence.start(), end, first))
            first = False
    counts = count_tokens([text[start:end] for start, end, _ in spans]) if spans else []
    units: list[_Unit] = []
    for (start, end, opens), tokens in zip(spans, counts, strict=True):
        if tokens <= max_tokens:
            units.append(_Unit(start, end, int(tokens), opens))
        else:
            units.extend(_split_long(text, (start, end, opens), count_tokens, max_tokens))
    return units


def _split_long(
    text: str, span: tuple[int, int, bool], count_tokens: TokenCounter, max_tokens: int
) -> list[_Unit]:
    """Words of a sentence too long for one chunk; a word too long cut every ``max_tokens``
    characters (a word piece is at least one character, so each slice fits)."""
    start, end, opens = span
    pieces: list[tuple[int, int]] = []
    for word in _WORD.finditer(text, start, end):
        for piece_start in range(word.start(), word.end(), max_tokens):
            pieces.append((piece_start, min(word.end(), piece_start + max_tokens)))
    counts = count_tokens([text[s:e] for s, e in pieces])
    return [
        _Unit(s, e, int(tokens), opens and index == 0)
        for index, ((s, e), tokens) in enumerate(zip(pieces, counts, strict=True))
    ]


def _pack(units: Sequence[_Unit], policy: ChunkingPolicy) -> list[tuple[int, int]]:
    """Character spans of the chunks: greedy, paragraph-aware, overlapping."""
    spans: list[tuple[int, int]] = []
    first = 0
    covered = 0  # units before this one are in a chunk already
    while first < len(units):
        end = first
        used = 0
        while end < len(units) and (end == first or used + units[end].tokens <= policy.max_tokens):
            used += units[end].tokens
            end += 1
        if end < len(units) and not units[end].opens_paragraph:
            end = _paragraph_end(units, max(first, covered), end, policy, first=first)
        spans.append((units[first].start, units[end - 1].end))
        if end >= len(units):
            break
        covered = end
        first = _overlap_start(units, first, end, policy)
    return spans


def _paragraph_end(
    units: Sequence[_Unit], covered: int, end: int, policy: ChunkingPolicy, *, first: int
) -> int:
    """The last paragraph break in ``units[covered + 1:end]`` with the chunk (from ``first``)
    past ``paragraph_fill``, else ``end``: a chunk always takes at least one new unit."""
    enough = policy.paragraph_fill * policy.max_tokens
    used = sum(unit.tokens for unit in units[first:end])
    for candidate in range(end - 1, covered, -1):
        used -= units[candidate].tokens
        if used < enough:
            break
        if units[candidate].opens_paragraph:
            return candidate
    return end


def _overlap_start(units: Sequence[_Unit], first: int, end: int, policy: ChunkingPolicy) -> int:
    """Where the next chunk starts: back from ``end`` by up to ``overlap_tokens``, never so
    far that ``units[end]`` would not fit, never back to ``first`` (always progress)."""
    start = end
    carried = 0
    room = policy.max_tokens - units[end].tokens
    while start - 1 > first:
        tokens = units[start - 1].tokens
        if carried + tokens > min(policy.overlap_tokens, room):
            break
        carried += tokens
        start -= 1
    return start
