"""DOCX text from ``word/document.xml``, read with the standard library's zipfile and a
streaming, DTD-refusing XML parser (defusedxml).

A DOCX is a zip: before anything is inflated, every member's declared size is checked (count,
total and compression ratio), so a zip bomb fails as ``too_large`` without being expanded.
zipfile never inflates a member past its declared size (a lying header ends in a CRC error),
and the XML is parsed as a stream, element by element, so memory stays small.
"""

from __future__ import annotations

import io
import zipfile
from typing import IO
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import iterparse

from xtyl_rag.adapters.extraction.contracts import ExtractedText, ExtractionLimits, MiB
from xtyl_rag.adapters.extraction.errors import ExtractionFailed
from xtyl_rag.adapters.extraction.formats.output import TextBudget, finish

W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
DC_TITLE = "{http://purl.org/dc/elements/1.1/}title"
DOCUMENT = "word/document.xml"
CORE = "docProps/core.xml"
_RATIO_CHECK_BYTES = 1 * MiB


def extract_docx(data: bytes, charset: str | None, limits: ExtractionLimits) -> ExtractedText:
    del charset
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            check_members(archive, limits)
            if DOCUMENT not in archive.NameToInfo:
                raise ExtractionFailed(
                    "unsupported_type", "a zip file but not a Word document (no word/document.xml)"
                )
            with archive.open(DOCUMENT) as stream:
                text = document_text(stream, TextBudget(limits))
            title = core_title(archive)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
        raise ExtractionFailed("corrupt_file", f"unreadable DOCX: {exc}") from None
    except (ParseError, DefusedXmlException) as exc:
        raise ExtractionFailed("corrupt_file", f"invalid XML in the DOCX: {exc}") from None
    except NotImplementedError as exc:  # e.g. an unsupported compression method
        raise ExtractionFailed("corrupt_file", f"unreadable DOCX: {exc}") from None
    return finish(text, limits, title=title)


def check_members(archive: zipfile.ZipFile, limits: ExtractionLimits) -> None:
    members = archive.infolist()
    if len(members) > limits.max_docx_members:
        raise ExtractionFailed("too_large", f"the DOCX has {len(members)} parts")
    total = 0
    for member in members:
        total += member.file_size
        if total > limits.max_docx_uncompressed_bytes:
            raise ExtractionFailed(
                "too_large",
                f"the DOCX inflates to more than {limits.max_docx_uncompressed_bytes} bytes",
            )
        ratio = member.file_size / max(1, member.compress_size)
        if member.file_size > _RATIO_CHECK_BYTES and ratio > limits.max_docx_ratio:
            raise ExtractionFailed(
                "too_large",
                f"{member.filename} is compressed {ratio:.0f}:1 (a zip bomb?)",
            )


def document_text(stream: IO[bytes], budget: TextBudget) -> str:
    """Paragraphs (body, tables, text boxes) in document order, a blank line between them."""
    parts: list[str] = []
    for _event, element in iterparse(stream, events=("end",), forbid_dtd=True):
        tag = element.tag
        if tag == f"{W}t":
            text = element.text or ""
            budget.spend(len(text))
            parts.append(text)
        elif tag == f"{W}tab":
            parts.append("\t")
        elif tag in (f"{W}br", f"{W}cr"):
            parts.append("\n")
        elif tag == f"{W}p":
            parts.append("\n\n")
            _release(element)
        elif tag in (f"{W}tbl", f"{W}body"):
            _release(element)
    return "".join(parts)


def core_title(archive: zipfile.ZipFile) -> str | None:
    info = archive.NameToInfo.get(CORE)
    if info is None or info.file_size > MiB:
        return None
    with archive.open(info) as stream:
        for _event, element in iterparse(stream, events=("end",), forbid_dtd=True):
            if element.tag == DC_TITLE:
                return (element.text or "").strip() or None
    return None


def _release(element: Element) -> None:
    """Drop what was already read, so a long document does not build a tree in memory."""
    element.clear()
