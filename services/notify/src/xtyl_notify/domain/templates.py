"""The emails, as plain text and HTML. Pure functions: no I/O, no settings lookups.

Everything that comes from a user or another service (names, document titles, reasons) is
HTML-escaped in the HTML version and stripped of control characters in both. Links are built
from the frontend's base URL (``APP_URL``): ``<app>/`` and ``<app>/documents/<id>``.
"""

from __future__ import annotations

import html
import uuid

from xtyl_notify.domain.addresses import display_name
from xtyl_notify.domain.emails import RenderedEmail

PRODUCT = "xtyl"
MAX_TITLE_CHARS = 200

#: What ``document.failed`` reasons (rag's stable codes) mean to a person.
FAILURE_EXPLANATIONS: dict[str, str] = {
    "too_large": "The file is larger than we can process.",
    "too_many_pages": "The document has more pages than we can process.",
    "timeout": "Reading the document took too long.",
    "memory_limit": "The document needed more memory than we allow for one file.",
    "unsupported_type": "We cannot read this type of file yet.",
    "type_mismatch": "The file's content does not match its name or type.",
    "corrupt_file": "The file seems to be damaged.",
    "encrypted": "The file is password-protected.",
    "no_text": "We found no text in it (a scanned document without text, perhaps).",
}
GENERIC_FAILURE = "Something went wrong on our side while reading it."


def _clean(text: str, limit: int) -> str:
    printable = "".join(ch for ch in text if ch.isprintable())
    collapsed = " ".join(printable.split())
    return collapsed if len(collapsed) <= limit else collapsed[: limit - 1].rstrip() + "…"


def _greeting(full_name: str | None) -> str:
    name = display_name(full_name)
    return f"Hi {name}," if name else "Hello,"


def _link(app_url: str, path: str = "") -> str:
    return app_url.rstrip("/") + "/" + path.lstrip("/")


def _html_page(title: str, paragraphs: list[str], action: tuple[str, str] | None) -> str:
    """A minimal, client-safe layout; ``paragraphs`` are already escaped HTML."""
    body = "".join(f'<p style="margin:0 0 16px">{p}</p>' for p in paragraphs)
    if action is not None:
        label, url = action
        body += (
            f'<p style="margin:24px 0"><a href="{html.escape(url, quote=True)}"'
            ' style="background:#111827;color:#ffffff;padding:12px 20px;border-radius:6px;'
            f'text-decoration:none;display:inline-block">{html.escape(label)}</a></p>'
        )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title></head>"
        '<body style="margin:0;padding:24px;background:#f9fafb;font-family:-apple-system,'
        "Segoe UI,Roboto,Helvetica,Arial,sans-serif;color:#111827;font-size:16px;"
        'line-height:1.5"><div style="max-width:560px;margin:0 auto;background:#ffffff;'
        f'padding:32px;border-radius:8px">{body}'
        f'<p style="margin:32px 0 0;color:#6b7280;font-size:13px">The {PRODUCT} team</p>'
        "</div></body></html>"
    )


def _text_page(lines: list[str], action: tuple[str, str] | None) -> str:
    parts = list(lines)
    if action is not None:
        label, url = action
        parts.append(f"{label}: {url}")
    parts.append(f"The {PRODUCT} team")
    return "\n\n".join(parts) + "\n"


def welcome_email(*, full_name: str | None, app_url: str) -> RenderedEmail:
    """For ``user.created``."""
    subject = f"Welcome to {PRODUCT}"
    greeting = _greeting(full_name)
    lines = [
        greeting,
        f"Thanks for signing up for {PRODUCT}. Upload a document and ask it anything:"
        " answers come with the passages they are based on.",
    ]
    action = (f"Open {PRODUCT}", _link(app_url))
    return RenderedEmail(
        subject=subject,
        html=_html_page(subject, [html.escape(line) for line in lines], action),
        text=_text_page(lines, action),
        tags=("welcome",),
    )


def _title_or_default(title: str | None) -> str:
    cleaned = _clean(title or "", MAX_TITLE_CHARS)
    return cleaned or "Your document"


def document_ready_email(
    *, full_name: str | None, title: str | None, document_id: uuid.UUID, app_url: str
) -> RenderedEmail:
    """For ``document.indexed``."""
    name = _title_or_default(title)
    subject = f"Your document is ready: {name}"
    greeting = _greeting(full_name)
    intro = "We have finished reading"
    outro = "You can now search it and ask questions about it."
    action = ("Open the document", _link(app_url, f"documents/{document_id}"))
    paragraphs = [
        html.escape(greeting),
        f"{intro} <strong>{html.escape(name)}</strong>.",
        html.escape(outro),
    ]
    return RenderedEmail(
        subject=subject,
        html=_html_page(subject, paragraphs, action),
        text=_text_page([greeting, f"{intro} “{name}”.", outro], action),
        tags=("document_ready",),
    )


def document_failed_email(
    *, full_name: str | None, reason: str, document_id: uuid.UUID, app_url: str
) -> RenderedEmail:
    """For ``document.failed``; ``reason`` is rag's code, explained when it is a known one."""
    subject = "We could not process your document"
    greeting = _greeting(full_name)
    explanation = FAILURE_EXPLANATIONS.get(reason.strip(), GENERIC_FAILURE)
    lines = [
        greeting,
        "We could not process a document you uploaded.",
        explanation,
        "You can try again with another copy of the file, or a different format.",
    ]
    action = ("See the document", _link(app_url, f"documents/{document_id}"))
    return RenderedEmail(
        subject=subject,
        html=_html_page(subject, [html.escape(line) for line in lines], action),
        text=_text_page(lines, action),
        tags=("document_failed",),
    )
