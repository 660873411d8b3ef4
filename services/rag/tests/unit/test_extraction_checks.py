"""Extraction's checks made in the calling process, before any child is started: which parser
a document gets, and what is refused outright (no child process here)."""

from __future__ import annotations

import pytest

from xtyl_rag.adapters.extraction import (
    ExtractionFailed,
    ExtractionLimits,
    ExtractorPool,
    detect_kind,
)

PDF = "application/pdf"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


async def test_oversized_input_is_refused_without_a_child() -> None:
    limits = ExtractionLimits(max_input_bytes=10)
    async with ExtractorPool(limits) as pool:
        with pytest.raises(ExtractionFailed) as failed:
            await pool.extract_text(b"x" * 11, "text/plain", "a.txt")

    assert failed.value.reason == "too_large"


@pytest.mark.parametrize(
    ("data", "content_type", "filename", "kind"),
    [
        (b"%PDF-1.7 ...", "application/octet-stream", "scan.pdf", "pdf"),
        (b"%PDF-1.7 ...", "", "no-extension", "pdf"),
        (b"PK\x03\x04...", DOCX, "Letter.DOCX", "docx"),
        (b"# hi", "text/plain", "readme.md", "md"),
        (b"<p>hi</p>", "text/html; charset=utf-8", "page.htm", "html"),
        (b"hi", "text/plain", "notes", "txt"),
    ],
)
def test_detects_kind(data: bytes, content_type: str, filename: str, kind: str) -> None:
    assert detect_kind(data, content_type, filename)[0] == kind


@pytest.mark.parametrize(
    ("data", "content_type", "filename", "reason"),
    [
        (b"<html>not a pdf</html>", PDF, "fake.pdf", "type_mismatch"),
        (b"%PDF-1.4 ...", "text/plain", "notes.txt", "type_mismatch"),
        (b"PK\x03\x04...", "text/html", "page.html", "type_mismatch"),
        (b"%PDF-1.4 ...", DOCX, "report.pdf", "type_mismatch"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR\x00\x00\x00", "", "image.txt", "type_mismatch"),
        (b"GIF89a", "image/gif", "cat.gif", "unsupported_type"),
        (b"data", "application/octet-stream", "archive.tar", "unsupported_type"),
    ],
)
def test_rejects_unsupported_and_mismatched_types(
    data: bytes, content_type: str, filename: str, reason: str
) -> None:
    with pytest.raises(ExtractionFailed) as failed:
        detect_kind(data, content_type, filename)

    assert failed.value.reason == reason
    assert failed.value.to_problem()["reason"] == reason
