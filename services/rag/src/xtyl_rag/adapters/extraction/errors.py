"""``ExtractionFailed``: one document could not be read, with a stable ``reason``."""

from __future__ import annotations

from typing import Literal, get_args

from xtyl_common.errors import InvalidInput

ExtractionReason = Literal[
    "too_large",  # input bytes, inflated DOCX parts or extracted text over the limit
    "too_many_pages",
    "timeout",  # the child ran past its wall-clock limit and was killed
    "memory_limit",  # the child hit its address-space cap
    "unsupported_type",
    "type_mismatch",  # content type, extension and magic bytes disagree
    "corrupt_file",
    "encrypted",
    "no_text",  # readable but nothing to index (e.g. a scanned PDF without OCR)
    "extractor_crashed",  # the child died some other way
]
REASONS: frozenset[str] = frozenset(get_args(ExtractionReason))


class ExtractionFailed(InvalidInput):
    """The document (not the service) is at fault; ``reason`` is one of :data:`REASONS`.

    Problem details: ``code`` ``extraction_failed``, the reason in the ``reason`` member.
    """

    default_code = "extraction_failed"
    title = "The document could not be read"

    def __init__(self, reason: ExtractionReason, detail: str | None = None) -> None:
        super().__init__(detail or reason.replace("_", " "), extra={"reason": reason})
        self.reason: ExtractionReason = reason

    def __reduce__(self) -> tuple[type[ExtractionFailed], tuple[ExtractionReason, str | None]]:
        return (type(self), (self.reason, self.detail))
