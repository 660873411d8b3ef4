"""What goes into and comes out of extraction, and the frames between parent and child."""

from __future__ import annotations

import struct
from typing import Literal

import msgspec

DocumentKind = Literal["txt", "md", "html", "pdf", "docx"]

MiB = 1024 * 1024


class ExtractionLimits(msgspec.Struct, frozen=True, kw_only=True):
    max_input_bytes: int = 50 * MiB
    #: characters of extracted text; a longer document fails with ``too_large``.
    max_text_chars: int = 5_000_000
    max_pages: int = 2_000
    #: wall clock for one document, parsing included; then the child is killed.
    timeout_s: float = 60.0
    #: the child's address-space cap (RLIMIT_AS), interpreter and libraries included.
    memory_bytes: int = 1024 * MiB
    #: DOCX: declared uncompressed size of all zip members together, checked before inflating.
    max_docx_uncompressed_bytes: int = 200 * MiB
    #: DOCX: uncompressed/compressed ratio allowed for a member larger than 1 MiB.
    max_docx_ratio: float = 100.0
    max_docx_members: int = 5_000


class ExtractedText(msgspec.Struct, frozen=True, kw_only=True):
    """Normalised text (see ``domain.chunking.normalize_text``).

    ``pages``: for paged formats (PDF), the offset in ``text`` where each page starts, so
    page ``n`` (1-based) is ``text[pages[n-1]:pages[n]]``; ``None`` for the others.
    """

    text: str
    title: str | None = None
    pages: tuple[int, ...] | None = None


#: parent <-> child frames: a 4-byte big-endian length, then msgpack.
FRAME_HEADER = struct.Struct(">I")
#: the child's exit status after a MemoryError (it replies ``memory_limit`` first).
EXIT_MEMORY = 3


class ChildRequest(msgspec.Struct, frozen=True, kw_only=True):
    kind: DocumentKind
    data: bytes
    charset: str | None
    limits: ExtractionLimits


class ChildReply(msgspec.Struct, frozen=True, kw_only=True):
    result: ExtractedText | None = None
    reason: str | None = None
    detail: str | None = None
