"""Extraction in capped child processes: real documents in, text out; hostile documents fail
that document with a stable reason, in bounded time, and leave the test process alone.
(Type detection and the checks made before a child is asked: ``unit/test_extraction_checks.py``.)"""

from __future__ import annotations

import io
import resource
import time
import zipfile
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from xtyl_rag.adapters.extraction import (
    ExtractionFailed,
    ExtractionLimits,
    ExtractorPool,
    extract_text,
)

pytestmark = pytest.mark.integration

PDF = "application/pdf"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
MiB = 1024 * 1024


# ---------------------------------------------------------------- documents made here


def _pdf_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def build_pdf(pages: list[str], *, title: str | None = None) -> bytes:
    """A minimal valid PDF: one line of Helvetica text per page, a flat page tree."""
    objects: dict[int, bytes] = {
        3: b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    }
    kids: list[int] = []
    next_id = 4
    for text in pages:
        content_id, page_id = next_id, next_id + 1
        next_id += 2
        stream = f"BT /F1 12 Tf 72 720 Td ({_pdf_escape(text)}) Tj ET".encode("latin-1")
        objects[content_id] = b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream"
        objects[page_id] = (
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents %d 0 R"
            b" /Resources << /Font << /F1 3 0 R >> >> >>" % content_id
        )
        kids.append(page_id)
    objects[1] = b"<< /Type /Catalog /Pages 2 0 R >>"
    objects[2] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (
        b" ".join(b"%d 0 R" % kid for kid in kids),
        len(kids),
    )
    info_id = None
    if title is not None:
        info_id = next_id
        objects[info_id] = f"<< /Title ({_pdf_escape(title)}) >>".encode("latin-1")
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets: dict[int, int] = {}
    for number in sorted(objects):
        offsets[number] = out.tell()
        out.write(b"%d 0 obj\n" % number + objects[number] + b"\nendobj\n")
    size = max(objects) + 1
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % size)
    for number in range(1, size):
        out.write(b"%010d 00000 n \n" % offsets[number])
    info = b" /Info %d 0 R" % info_id if info_id else b""
    out.write(b"trailer\n<< /Size %d /Root 1 0 R%s >>\n" % (size, info))
    out.write(b"startxref\n%d\n%%%%EOF\n" % xref)
    return out.getvalue()


_CONTENT_TYPES = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    '<Default Extension="rels" '
    'ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
    '<Default Extension="xml" ContentType="application/xml"/>'
    '<Override PartName="/word/document.xml" ContentType="application/'
    'vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/></Types>'
)
_RELS = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
    'relationships/officeDocument" Target="word/document.xml"/></Relationships>'
)
_W = 'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'


def _paragraph(text: str) -> str:
    return f'<w:p><w:r><w:t xml:space="preserve">{text}</w:t></w:r></w:p>'


def build_docx(body_xml: str, *, title: str | None = None) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", _CONTENT_TYPES)
        archive.writestr("_rels/.rels", _RELS)
        archive.writestr(
            "word/document.xml",
            f'<?xml version="1.0" encoding="UTF-8"?><w:document {_W}><w:body>'
            f"{body_xml}</w:body></w:document>",
        )
        if title is not None:
            archive.writestr(
                "docProps/core.xml",
                '<cp:coreProperties xmlns:cp="http://schemas.openxmlformats.org/package/2006/'
                'metadata/core-properties" xmlns:dc="http://purl.org/dc/elements/1.1/">'
                f"<dc:title>{title}</dc:title></cp:coreProperties>",
            )
    return out.getvalue()


def build_docx_bomb(inflated_bytes: int) -> bytes:
    """A DOCX whose document.xml inflates to ``inflated_bytes`` of one run of text, streamed
    into the zip so the test never holds it in memory."""
    out = io.BytesIO()
    block = b"a" * MiB
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr("[Content_Types].xml", _CONTENT_TYPES)
        archive.writestr("_rels/.rels", _RELS)
        with archive.open("word/document.xml", "w", force_zip64=True) as member:
            member.write(f"<w:document {_W}><w:body><w:p><w:r><w:t>".encode())
            for _ in range(inflated_bytes // MiB):
                member.write(block)
            member.write(b"</w:t></w:r></w:p></w:body></w:document>")
    return out.getvalue()


@pytest.fixture(scope="module")
def docx_bomb() -> bytes:
    return build_docx_bomb(400 * MiB)


@pytest.fixture(scope="module")
def huge_pdf() -> bytes:
    return build_pdf([f"Page {n} of a very long report." for n in range(1, 10_001)])


@pytest_asyncio.fixture(scope="module")
async def pool() -> AsyncIterator[ExtractorPool]:
    async with ExtractorPool(ExtractionLimits(timeout_s=30)) as extractor:
        await extractor.start()
        yield extractor


async def _reason(pool: ExtractorPool, *args: object, **kwargs: object) -> str:
    with pytest.raises(ExtractionFailed) as failed:
        await pool.extract_text(*args, **kwargs)  # type: ignore[arg-type]
    return failed.value.reason


# ---------------------------------------------------------------- formats


async def test_pdf_gives_text_title_and_page_offsets(pool: ExtractorPool) -> None:
    pages = ["The first page talks about apples.", "The second (and last) page: pears."]
    data = build_pdf(pages, title="Fruit report")

    extracted = await pool.extract_text(data, PDF, "fruit.pdf")

    assert extracted.title == "Fruit report"
    assert extracted.pages is not None
    assert len(extracted.pages) == 2
    first = extracted.text[extracted.pages[0] : extracted.pages[1]]
    second = extracted.text[extracted.pages[1] :]
    assert "apples" in first
    assert "pears" not in first
    assert "(and last) page: pears." in second


async def test_docx_gives_paragraphs_in_order_and_title(pool: ExtractorPool) -> None:
    body = (
        _paragraph("Quarterly plan")
        + '<w:p><w:r><w:t>Ship the</w:t></w:r><w:r><w:t xml:space="preserve"> search'
        " feature</w:t></w:r></w:p>"
        + "<w:tbl><w:tr><w:tc>"
        + _paragraph("cell one")
        + "</w:tc><w:tc>"
        + _paragraph("cell &amp; two")
        + "</w:tc></w:tr></w:tbl>"
    )
    extracted = await pool.extract_text(build_docx(body, title="Plan Q3"), DOCX, "plan.docx")

    assert extracted.title == "Plan Q3"
    assert extracted.pages is None
    assert extracted.text.split("\n\n") == [
        "Quarterly plan",
        "Ship the search feature",
        "cell one",
        "cell & two",
    ]


async def test_markdown_keeps_text_takes_heading_as_title(pool: ExtractorPool) -> None:
    data = "# Release notes\r\n\r\nFaster search.\x00\r\nCafe\u0301 menu.\r\n".encode()

    extracted = await pool.extract_text(data, "text/markdown; charset=utf-8", "notes.md")

    assert extracted.title == "Release notes"
    assert extracted.text == "# Release notes\n\nFaster search.\nCaf\u00e9 menu."


async def test_plain_text_in_windows_1252_is_decoded(pool: ExtractorPool) -> None:
    extracted = await pool.extract_text(
        "na\u00efve caf\u00e9".encode("cp1252"), "text/plain", "a.txt"
    )

    assert extracted.text == "na\u00efve caf\u00e9"
    assert extracted.title is None


async def test_html_drops_scripts_and_styles_keeps_title(pool: ExtractorPool) -> None:
    html = b"""<!doctype html><html><head><meta charset="utf-8"><title>Pricing &amp; plans</title>
    <style>body { color: red }</style><script>var secret = "do not index";</script></head>
    <body><nav>Home</nav><h1>Plans</h1><p>The <b>Pro</b> plan costs 10&nbsp;&euro;.</p>
    <ul><li>One seat</li><li>Email support</li></ul><noscript>enable js</noscript>
    <table><tr><td>a</td><td>b</td></tr></table></body></html>"""

    extracted = await pool.extract_text(html, "text/html", "pricing.html")

    assert extracted.title == "Pricing & plans"
    assert "do not index" not in extracted.text
    assert "color" not in extracted.text
    assert "enable js" not in extracted.text
    assert "The Pro plan costs 10\u00a0\u20ac." in extracted.text
    assert "One seat\nEmail support" in extracted.text


async def test_pool_reuses_its_child(pool: ExtractorPool) -> None:
    await pool.extract_text(b"one", "text/plain", "1.txt")
    pids = {child.process.pid for child in pool._idle}
    await pool.extract_text(b"two", "text/plain", "2.txt")

    assert {child.process.pid for child in pool._idle} == pids


# ---------------------------------------------------------------- hostile documents


async def test_zip_bomb_docx_fails_before_inflating(pool: ExtractorPool, docx_bomb: bytes) -> None:
    assert len(docx_bomb) < 2 * MiB
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()

    reason = await _reason(pool, docx_bomb, DOCX, "bomb.docx")

    assert reason == "too_large"
    assert time.perf_counter() - started < 5
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before < 50 * 1024
    assert (await pool.extract_text(b"still here", "text/plain", "a.txt")).text == "still here"


async def test_zip_bomb_past_the_checks_hits_the_memory_cap(docx_bomb: bytes) -> None:
    """With the zip checks off, the child inflates the bomb and dies of its memory cap."""
    limits = ExtractionLimits(
        memory_bytes=256 * MiB,
        max_docx_uncompressed_bytes=10**12,
        max_docx_ratio=10**9,
        max_text_chars=10**12,
        timeout_s=60,
    )
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    async with ExtractorPool(limits) as own:
        reason = await _reason(own, docx_bomb, DOCX, "bomb.docx")
        after = await own.extract_text(b"fresh child", "text/plain", "a.txt")

    assert reason == "memory_limit"
    assert after.text == "fresh child"
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before < 50 * 1024


async def test_text_bomb_fails_as_too_large(pool: ExtractorPool) -> None:
    limits = ExtractionLimits(max_text_chars=1000)

    reason = await _reason(pool, b"word " * 1000, "text/plain", "long.txt", limits)

    assert reason == "too_large"


async def test_ten_thousand_page_pdf_fails_on_page_count(
    pool: ExtractorPool, huge_pdf: bytes
) -> None:
    started = time.perf_counter()

    reason = await _reason(pool, huge_pdf, PDF, "report.pdf")

    assert reason == "too_many_pages"
    assert time.perf_counter() - started < 10


async def test_slow_document_is_killed_at_the_time_limit(
    pool: ExtractorPool, huge_pdf: bytes
) -> None:
    limits = ExtractionLimits(max_pages=100_000, timeout_s=0.5)
    started = time.perf_counter()

    reason = await _reason(pool, huge_pdf, PDF, "report.pdf", limits)

    assert reason == "timeout"
    assert time.perf_counter() - started < 3
    assert (await pool.extract_text(b"next one", "text/plain", "a.txt")).text == "next one"


@pytest.mark.parametrize(
    ("data", "content_type", "filename", "reason"),
    [
        (b"%PDF-1.4\nnot really a pdf", PDF, "broken.pdf", "corrupt_file"),
        (b"PK\x03\x04 not a zip at all", DOCX, "broken.docx", "corrupt_file"),
        (b"   ", "text/plain", "blank.txt", "no_text"),
    ],
)
async def test_unreadable_documents_fail_with_a_reason(
    pool: ExtractorPool, data: bytes, content_type: str, filename: str, reason: str
) -> None:
    assert await _reason(pool, data, content_type, filename) == reason


async def test_zip_that_is_not_a_word_document(pool: ExtractorPool) -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("xl/workbook.xml", "<workbook/>")

    assert await _reason(pool, out.getvalue(), DOCX, "sheet.docx") == "unsupported_type"


async def test_extract_text_without_a_pool_uses_a_child_of_its_own() -> None:
    extracted = await extract_text(b"<p>hello</p>", "text/html", "a.html", ExtractionLimits())

    assert extracted.text == "hello"
