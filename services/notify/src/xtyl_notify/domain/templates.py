"""The emails, as plain text and HTML. Pure functions: no I/O, no settings lookups.

Everything that comes from a user or another service (names, document titles, reasons) is
HTML-escaped in the HTML version and stripped of control characters in both. Links are built
from the frontend's base URL (``APP_URL``): ``<app>/`` and ``<app>/documents/<id>``.
"""

from __future__ import annotations

import html
import uuid

import msgspec

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
#: The footer of every email a user can turn off.
WHY_SENT = f"You get this email because you added documents to {PRODUCT}."
UNSUBSCRIBE_LABEL = "Stop these emails"
#: A digest lists at most this many documents (and says how many more there are).
MAX_DIGEST_ITEMS = 1000


def _clean(text: str, limit: int) -> str:
    printable = "".join(ch for ch in text if ch.isprintable())
    collapsed = " ".join(printable.split())
    return collapsed if len(collapsed) <= limit else collapsed[: limit - 1].rstrip() + "…"


def _greeting(full_name: str | None) -> str:
    name = display_name(full_name)
    return f"Hi {name}," if name else "Hello,"


def _link(app_url: str, path: str = "") -> str:
    return app_url.rstrip("/") + "/" + path.lstrip("/")


def _html_page(
    title: str,
    paragraphs: list[str],
    action: tuple[str, str] | None,
    *,
    unsubscribe_url: str | None = None,
    items: str = "",
) -> str:
    """A minimal, client-safe layout; ``paragraphs`` and ``items`` are already escaped HTML."""
    body = "".join(f'<p style="margin:0 0 16px">{p}</p>' for p in paragraphs) + items
    if action is not None:
        label, url = action
        body += (
            f'<p style="margin:24px 0"><a href="{html.escape(url, quote=True)}"'
            ' style="background:#111827;color:#ffffff;padding:12px 20px;border-radius:6px;'
            f'text-decoration:none;display:inline-block">{html.escape(label)}</a></p>'
        )
    footer = ""
    if unsubscribe_url is not None:
        footer = (
            f'<p style="margin:16px 0 0;color:#6b7280;font-size:12px">{html.escape(WHY_SENT)}'
            f' <a href="{html.escape(unsubscribe_url, quote=True)}" style="color:#6b7280">'
            f"{html.escape(UNSUBSCRIBE_LABEL)}</a></p>"
        )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title></head>"
        '<body style="margin:0;padding:24px;background:#f9fafb;font-family:-apple-system,'
        "Segoe UI,Roboto,Helvetica,Arial,sans-serif;color:#111827;font-size:16px;"
        'line-height:1.5"><div style="max-width:560px;margin:0 auto;background:#ffffff;'
        f'padding:32px;border-radius:8px">{body}'
        f'<p style="margin:32px 0 0;color:#6b7280;font-size:13px">The {PRODUCT} team</p>'
        f"{footer}</div></body></html>"
    )


def _text_page(
    lines: list[str], action: tuple[str, str] | None, *, unsubscribe_url: str | None = None
) -> str:
    parts = list(lines)
    if action is not None:
        label, url = action
        parts.append(f"{label}: {url}")
    parts.append(f"The {PRODUCT} team")
    if unsubscribe_url is not None:
        parts.append(f"{WHY_SENT} {UNSUBSCRIBE_LABEL}: {unsubscribe_url}")
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
    *,
    full_name: str | None,
    title: str | None,
    document_id: uuid.UUID,
    app_url: str,
    unsubscribe_url: str | None = None,
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
        html=_html_page(subject, paragraphs, action, unsubscribe_url=unsubscribe_url),
        text=_text_page(
            [greeting, f"{intro} “{name}”.", outro], action, unsubscribe_url=unsubscribe_url
        ),
        tags=("document_ready",),
    )


def document_failed_email(
    *,
    full_name: str | None,
    reason: str,
    document_id: uuid.UUID,
    app_url: str,
    unsubscribe_url: str | None = None,
) -> RenderedEmail:
    """For ``document.failed``; ``reason`` is rag's code, explained when it is a known one."""
    subject = "We could not process your document"
    greeting = _greeting(full_name)
    explanation = explain_failure(reason)
    lines = [
        greeting,
        "We could not process a document you uploaded.",
        explanation,
        "You can try again with another copy of the file, or a different format.",
    ]
    action = ("See the document", _link(app_url, f"documents/{document_id}"))
    return RenderedEmail(
        subject=subject,
        html=_html_page(
            subject,
            [html.escape(line) for line in lines],
            action,
            unsubscribe_url=unsubscribe_url,
        ),
        text=_text_page(lines, action, unsubscribe_url=unsubscribe_url),
        tags=("document_failed",),
    )


def explain_failure(reason: str) -> str:
    """rag's failure code in words (a generic sentence for codes we do not know)."""
    return FAILURE_EXPLANATIONS.get(reason.strip(), GENERIC_FAILURE)


class DigestItem(msgspec.Struct, frozen=True, kw_only=True):
    """One document a digest tells about: ready (with its title) or failed (with rag's
    reason; failure events carry no title)."""

    document_id: uuid.UUID
    ready: bool
    title: str | None = None
    reason: str | None = None


def _counted(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


def document_digest_email(
    *,
    full_name: str | None,
    items: list[DigestItem],
    app_url: str,
    unsubscribe_url: str | None = None,
) -> RenderedEmail:
    """Several document events of one window in one email: every document, ready ones first
    (at most :data:`MAX_DIGEST_ITEMS` listed, then how many more)."""
    ready = [item for item in items if item.ready]
    failed = [item for item in items if not item.ready]
    parts: list[str] = []
    if ready:
        parts.append(f"{_counted(len(ready), 'document is', 'documents are')} ready")
    if failed:
        parts.append(f"{_counted(len(failed), 'document', 'documents')} could not be processed")
    subject = "Your documents: " + ", ".join(parts)
    greeting = _greeting(full_name)
    listed = (ready + failed)[:MAX_DIGEST_ITEMS]
    more = len(items) - len(listed)
    lines: list[str] = []
    rows: list[str] = []
    for item in listed:
        url = _link(app_url, f"documents/{item.document_id}")
        if item.ready:
            name = _title_or_default(item.title)
            lines.append(f"- Ready: {name} ({url})")
            rows.append(
                f'<li style="margin:0 0 8px">Ready: <a href="{html.escape(url, quote=True)}">'
                f"{html.escape(name)}</a></li>"
            )
        else:
            why = explain_failure(item.reason or "")
            lines.append(f"- Could not be processed: {why} ({url})")
            rows.append(
                f'<li style="margin:0 0 8px">Could not be processed: {html.escape(why)}'
                f' <a href="{html.escape(url, quote=True)}">See the document</a></li>'
            )
    if more > 0:
        lines.append(f"- and {more} more")
        rows.append(f'<li style="margin:0 0 8px">and {more} more</li>')
    intro = "Here is what happened to your documents since our last email:"
    action = (f"Open {PRODUCT}", _link(app_url))
    listing = f'<ul style="margin:0 0 16px;padding-left:20px">{"".join(rows)}</ul>'
    return RenderedEmail(
        subject=subject,
        html=_html_page(
            subject,
            [html.escape(greeting), html.escape(intro)],
            action,
            unsubscribe_url=unsubscribe_url,
            items=listing,
        ),
        text=_text_page(
            [greeting, intro, "\n".join(lines)], action, unsubscribe_url=unsubscribe_url
        ),
        tags=("document_digest",),
    )
