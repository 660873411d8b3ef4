"""Small real documents built in code: PDF (hand-written objects), DOCX (a zip of WordML),
Markdown and HTML, each about a topic of its own so search can tell them apart."""

from __future__ import annotations

import io
import zipfile
from xml.sax.saxutils import escape

TOPICS: dict[str, list[str]] = {
    "pdf": [
        "Photosynthesis takes place in the chloroplasts of plant cells.",
        "Light reactions in the thylakoid membranes split water and release oxygen.",
        "The Calvin cycle fixes carbon dioxide into sugars using ATP and NADPH.",
        "Chlorophyll absorbs red and blue light and reflects green light.",
    ],
    "docx": [
        "The Peace of Westphalia ended the Thirty Years War in 1648.",
        "Its treaties were signed in Osnabrueck and Muenster by the Holy Roman Emperor.",
        "Historians often describe it as the origin of state sovereignty in Europe.",
    ],
    "md": [
        "# Sourdough starter",
        "A sourdough starter is a culture of wild yeast and lactic acid bacteria.",
        "Feed the starter with equal weights of flour and water every day.",
        "Fermentation at a warm temperature makes the bread more sour.",
    ],
    "html": [
        "TCP congestion control adjusts the sending window to the capacity of the network.",
        "Slow start doubles the congestion window every round trip until a loss occurs.",
        "Packet loss makes the sender halve its window, which is called multiplicative decrease.",
    ],
}

QUERIES = {
    "pdf": "how do plants turn light into sugar in chloroplasts",
    "docx": "which treaty ended the thirty years war",
    "md": "how to feed a sourdough starter",
    "html": "what does slow start do to the congestion window",
}


def _pdf_string(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def make_pdf(pages: list[list[str]], *, title: str | None = None, padding: int = 0) -> bytes:
    """A PDF with one text line per item; ``padding`` bytes of comment make it large."""
    objects: list[bytes] = []
    kids = " ".join(f"{4 + 2 * i} 0 R" for i in range(len(pages)))
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>".encode())
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    for index, lines in enumerate(pages):
        content_ref = 5 + 2 * index
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792]"
            f" /Resources << /Font << /F1 3 0 R >> >> /Contents {content_ref} 0 R >>".encode()
        )
        ops = ["BT", "/F1 11 Tf", "14 TL", "50 740 Td"]
        for line in lines:
            ops.append(f"({_pdf_string(line)}) Tj T*")
        ops.append("ET")
        stream = "\n".join(ops).encode()
        objects.append(
            b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream"
        )
    info_ref = None
    if title:
        objects.append(f"<< /Title ({_pdf_string(title)}) >>".encode())
        info_ref = len(objects)
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(f"{number} 0 obj\n".encode() + body + b"\nendobj\n")
    if padding:
        out.write(b"%" + b"x" * padding + b"\n")
    xref = out.tell()
    out.write(f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode())
    for offset in offsets:
        out.write(f"{offset:010d} 00000 n \n".encode())
    trailer = f"<< /Size {len(objects) + 1} /Root 1 0 R"
    if info_ref:
        trailer += f" /Info {info_ref} 0 R"
    out.write(f"trailer\n{trailer} >>\nstartxref\n{xref}\n%%EOF\n".encode())
    return out.getvalue()


_CONTENT_TYPES = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    '<Default Extension="rels"'
    ' ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
    '<Default Extension="xml" ContentType="application/xml"/>'
    '<Override PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-'
    'officedocument.wordprocessingml.document.main+xml"/></Types>'
)
_RELS = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
    'relationships/officeDocument" Target="word/document.xml"/></Relationships>'
)


def docx_xml(paragraphs: list[str]) -> str:
    body = "".join(f"<w:p><w:r><w:t>{escape(p)}</w:t></w:r></w:p>" for p in paragraphs)
    return (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        '<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
        f"<w:body>{body}</w:body></w:document>"
    )


def make_docx(paragraphs: list[str]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", _CONTENT_TYPES)
        archive.writestr("_rels/.rels", _RELS)
        archive.writestr("word/document.xml", docx_xml(paragraphs))
    return out.getvalue()


def make_zip_bomb_docx(inflated_bytes: int = 64 * 1024 * 1024) -> bytes:
    """A DOCX whose document.xml inflates ~1000:1 (64 MiB of spaces inside the body)."""
    head, _, tail = docx_xml(["boom"]).partition("<w:body>")
    xml = head.encode() + b"<w:body>" + b" " * inflated_bytes + tail.encode()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", _CONTENT_TYPES)
        archive.writestr("_rels/.rels", _RELS)
        archive.writestr("word/document.xml", xml)
    return out.getvalue()


def make_markdown(lines: list[str]) -> bytes:
    return "\n\n".join(lines).encode()


def make_html(paragraphs: list[str], title: str) -> bytes:
    body = "".join(f"<p>{escape(p)}</p>" for p in paragraphs)
    return (
        f"<!doctype html><html><head><title>{escape(title)}</title>"
        f"<script>var ignored = 1;</script></head><body><h1>{escape(title)}</h1>{body}"
        "</body></html>"
    ).encode()


#: kind -> (file name, content type, bytes)
def sample_files() -> dict[str, tuple[str, str, bytes]]:
    return {
        "pdf": (
            "photosynthesis.pdf",
            "application/pdf",
            make_pdf([TOPICS["pdf"][:2], TOPICS["pdf"][2:]], title="Photosynthesis"),
        ),
        "docx": (
            "westphalia.docx",
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            make_docx(TOPICS["docx"]),
        ),
        "md": ("sourdough.md", "text/markdown", make_markdown(TOPICS["md"])),
        "html": ("tcp.html", "text/html", make_html(TOPICS["html"], "TCP congestion control")),
    }


_VOCABULARY = (
    "river mountain lantern copper harbor meadow engine violin glacier orchard signal marble"
    " thunder compass velvet canyon beacon falcon timber prairie quartz saddle harvest ember"
    " anchor island bridge candle desert forest garden hollow meteor needle ocean pepper"
)
_WORDS = _VOCABULARY.split()


def make_text(chunks: int, seed: int) -> bytes:
    """Plain text of about ``chunks`` chunks (~200 words each), different for every ``seed``."""
    words = [_WORDS[(seed * 7 + i * i + i // 5) % len(_WORDS)] for i in range(200 * chunks)]
    sentences = [" ".join(words[i : i + 12]).capitalize() + "." for i in range(0, len(words), 12)]
    return f"Document {seed}. ".encode() + " ".join(sentences).encode()
