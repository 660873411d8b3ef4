"""Text out of uploaded documents (txt, md, html, pdf, docx), in capped child processes.

pool = ExtractorPool(ExtractionLimits(), size=1)
extracted = await pool.extract_text(data, content_type, filename)
# ExtractedText(text, title, pages) or ExtractionFailed(reason)
"""

from xtyl_rag.adapters.extraction.contracts import DocumentKind, ExtractedText, ExtractionLimits
from xtyl_rag.adapters.extraction.detect import detect_kind
from xtyl_rag.adapters.extraction.errors import REASONS, ExtractionFailed, ExtractionReason
from xtyl_rag.adapters.extraction.pool import ExtractorPool, extract_text

__all__ = [
    "REASONS",
    "DocumentKind",
    "ExtractedText",
    "ExtractionFailed",
    "ExtractionLimits",
    "ExtractionReason",
    "ExtractorPool",
    "detect_kind",
    "extract_text",
]
