"""PDF text with pypdf, page by page, with the offset where each page starts."""

from __future__ import annotations

import io
import logging

from pypdf import PdfReader
from pypdf.errors import FileNotDecryptedError, PdfReadError, PdfStreamError

from xtyl_rag.adapters.extraction.contracts import ExtractedText, ExtractionLimits
from xtyl_rag.adapters.extraction.errors import ExtractionFailed
from xtyl_rag.adapters.extraction.formats.output import TextBudget, finish
from xtyl_rag.domain.chunking import normalize_text

PAGE_SEPARATOR = "\n\n"

logging.getLogger("pypdf").setLevel(logging.ERROR)  # malformed files warn per object


def extract_pdf(data: bytes, charset: str | None, limits: ExtractionLimits) -> ExtractedText:
    del charset
    try:
        return _extract(data, limits)
    except (FileNotDecryptedError, NotImplementedError) as exc:
        # NotImplementedError: an encryption scheme pypdf cannot open
        raise ExtractionFailed("encrypted", f"the PDF is encrypted: {exc}") from None
    except (PdfReadError, PdfStreamError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise ExtractionFailed("corrupt_file", f"unreadable PDF: {exc}") from None


def _extract(data: bytes, limits: ExtractionLimits) -> ExtractedText:
    reader = PdfReader(io.BytesIO(data), strict=False)
    if reader.is_encrypted and not reader.decrypt(""):
        raise ExtractionFailed("encrypted", "the PDF needs a password")
    page_count = len(reader.pages)
    if page_count > limits.max_pages:
        raise ExtractionFailed(
            "too_many_pages", f"the PDF has {page_count} pages, the limit is {limits.max_pages}"
        )
    budget = TextBudget(limits)
    parts: list[str] = []
    starts: list[int] = []
    offset = 0
    for page in reader.pages:
        text = normalize_text(page.extract_text() or "").strip()
        if parts:
            parts.append(PAGE_SEPARATOR)
            offset += len(PAGE_SEPARATOR)
        starts.append(offset)
        parts.append(text)
        offset += len(text)
        budget.spend(len(text))
    title = None
    metadata = reader.metadata
    if metadata is not None and isinstance(metadata.title, str):
        title = metadata.title
    return finish("".join(parts), limits, title=title, pages=tuple(starts), normalised=True)
