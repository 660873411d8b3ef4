"""Which parser a document gets: from its content type, its extension and its first bytes.

Binary formats must prove themselves by their magic bytes; a file that claims one type and
looks like another is rejected (``type_mismatch``) rather than handed to the wrong parser.
The text family (txt, md, html) has no magic: the content type decides, then the extension.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from xtyl_rag.adapters.extraction.contracts import DocumentKind
from xtyl_rag.adapters.extraction.errors import ExtractionFailed

CONTENT_TYPES: dict[str, DocumentKind] = {
    "text/plain": "txt",
    "text/markdown": "md",
    "text/x-markdown": "md",
    "text/html": "html",
    "application/xhtml+xml": "html",
    "application/pdf": "pdf",
    "application/x-pdf": "pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
}
EXTENSIONS: dict[str, DocumentKind] = {
    ".txt": "txt",
    ".text": "txt",
    ".md": "md",
    ".markdown": "md",
    ".html": "html",
    ".htm": "html",
    ".xhtml": "html",
    ".pdf": "pdf",
    ".docx": "docx",
}
#: what clients send when they do not know
GENERIC_TYPES = frozenset({"", "application/octet-stream", "binary/octet-stream"})
TEXT_KINDS: frozenset[DocumentKind] = frozenset({"txt", "md", "html"})
_SNIFF_BYTES = 8192


def parse_content_type(content_type: str) -> tuple[str, str | None]:
    """``"Text/HTML; charset=UTF-8"`` -> ``("text/html", "utf-8")``."""
    media, _, params = content_type.partition(";")
    charset = None
    for param in params.split(";"):
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset" and value.strip():
            charset = value.strip().strip('"').lower()
    return media.strip().lower(), charset


def sniff(data: bytes) -> DocumentKind | None:
    """``pdf`` or ``docx`` (a zip) by magic bytes; ``None`` for anything else."""
    if data[:1024].find(b"%PDF-") != -1:
        return "pdf"
    if data.startswith(b"PK\x03\x04"):
        return "docx"
    return None


def looks_binary(data: bytes) -> bool:
    head = data[:_SNIFF_BYTES]
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):  # UTF-16 text has NULs
        return False
    # a stray NUL is tolerated (normalisation drops it); binary formats are full of them
    return head.count(b"\x00") > 1 + len(head) // 100


def detect_kind(data: bytes, content_type: str, filename: str) -> tuple[DocumentKind, str | None]:
    """The document's kind and the charset its content type declared, or ExtractionFailed."""
    media, charset = parse_content_type(content_type)
    by_type = CONTENT_TYPES.get(media)
    by_extension = EXTENSIONS.get(PurePosixPath(filename.lower()).suffix)
    by_magic = sniff(data)
    if by_type is None and media not in GENERIC_TYPES:
        raise ExtractionFailed("unsupported_type", f"content type {media!r} is not supported")
    claimed = by_type or by_extension or by_magic
    if claimed is None:
        raise ExtractionFailed(
            "unsupported_type",
            f"cannot tell the type of {filename!r} (content type {media or 'none'!r})",
        )
    if by_type is not None and by_extension is not None and not _compatible(by_type, by_extension):
        raise ExtractionFailed(
            "type_mismatch", f"content type {media!r} does not match the name {filename!r}"
        )
    if claimed in TEXT_KINDS:
        if by_magic is not None or looks_binary(data):
            found = by_magic or "binary data"
            raise ExtractionFailed(
                "type_mismatch", f"declared as {claimed} but the content is {found}"
            )
        # text/plain for a .md file is what most clients send
        if claimed == "txt" and by_extension == "md":
            claimed = "md"
        return claimed, charset
    if by_magic != claimed:
        raise ExtractionFailed(
            "type_mismatch",
            f"declared as {claimed} but the content does not start like a {claimed} file",
        )
    return claimed, charset


def _compatible(by_type: DocumentKind, by_extension: DocumentKind) -> bool:
    return by_type == by_extension or (by_type in TEXT_KINDS and by_extension in TEXT_KINDS)
