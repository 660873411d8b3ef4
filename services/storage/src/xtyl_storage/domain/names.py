"""File names: what a client sends is cleaned into display metadata and a key-safe slug.

A client's file name is never trusted as a path. :func:`clean_display_name` keeps a readable
name (Unicode allowed) for the ``name`` column and ``Content-Disposition``; :func:`key_slug`
makes the ASCII tail of an object key. Object keys are ``<owner id>/<file id>/<slug>``, so a
name can never reach outside its owner's prefix whatever it contains.
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from urllib.parse import quote, unquote

#: Longest display name kept, in UTF-8 bytes (most filesystems allow 255).
MAX_NAME_BYTES = 255
#: Longest slug in an object key, in characters.
MAX_SLUG_CHARS = 100
FALLBACK_NAME = "file"

_WHITESPACE = re.compile(r"\s+")
_SLUG_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_SLUG_DASHES = re.compile(r"-{2,}")
#: Unicode categories dropped from names: controls (NUL, CR, LF...), format characters
#: (right-to-left overrides, zero-width joiners, BOM), surrogates, private use, unassigned.
_DROPPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn"})


def _percent_decoded(raw: str) -> str:
    """Undo percent-encoding (repeatedly, so ``%252e`` does not survive as ``%2e``)."""
    text = raw
    for _ in range(3):
        decoded = unquote(text, errors="replace")
        if decoded == text:
            break
        text = decoded
    return text


def _truncate_utf8(text: str, max_bytes: int) -> str:
    encoded = text.encode("utf-8")
    if len(encoded) <= max_bytes:
        return text
    return encoded[:max_bytes].decode("utf-8", errors="ignore")


def _split_extension(name: str) -> tuple[str, str]:
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem or len(ext) > 16 or not ext.isalnum():
        return name, ""
    return stem, "." + ext


def clean_display_name(raw: str | None) -> str:
    """A safe, readable file name: no directories, controls, bidi overrides or dot tricks.

    Keeps the last path segment (``/`` or ``\\``, also percent-encoded), drops control and
    format characters, collapses whitespace, strips leading dots and trailing dots/spaces, and
    cuts to 255 UTF-8 bytes keeping the extension. Returns ``"file"`` when nothing is left.
    """
    text = unicodedata.normalize("NFKC", _percent_decoded(raw or ""))
    text = "".join(" " if ch in "\t\r\n" else ch for ch in text)
    text = "".join(ch for ch in text if unicodedata.category(ch) not in _DROPPED_CATEGORIES)
    text = re.split(r"[/\\]", text)[-1]
    text = _WHITESPACE.sub(" ", text).strip()
    text = text.lstrip(". ").rstrip(". ")
    if not text:
        return FALLBACK_NAME
    if len(text.encode("utf-8")) > MAX_NAME_BYTES:
        stem, ext = _split_extension(text)
        stem = _truncate_utf8(stem, MAX_NAME_BYTES - len(ext.encode("utf-8"))).rstrip(". ")
        text = (stem or FALLBACK_NAME) + ext
    return text


def key_slug(display_name: str) -> str:
    """The ASCII tail of an object key: ``[A-Za-z0-9._-]``, no leading dot, ≤ 100 chars."""
    ascii_name = (
        unicodedata.normalize("NFKD", display_name).encode("ascii", "ignore").decode("ascii")
    )
    slug = _SLUG_DASHES.sub("-", _SLUG_UNSAFE.sub("-", ascii_name)).strip("-.")
    if len(slug) > MAX_SLUG_CHARS:
        stem, ext = _split_extension(slug)
        slug = stem[: MAX_SLUG_CHARS - len(ext)].rstrip("-.") + ext
    return slug or FALLBACK_NAME


def object_key(owner_id: uuid.UUID, file_id: uuid.UUID, display_name: str) -> str:
    """``<owner id>/<file id>/<slug>``: made by the server, never by the client."""
    return f"{owner_id}/{file_id}/{key_slug(display_name)}"


def content_disposition(display_name: str, disposition: str = "attachment") -> str:
    """RFC 6266 ``Content-Disposition`` with an ASCII fallback and the UTF-8 name."""
    fallback = key_slug(display_name).replace('"', "")
    return (
        f"{disposition}; filename=\"{fallback}\"; filename*=UTF-8''{quote(display_name, safe='')}"
    )
