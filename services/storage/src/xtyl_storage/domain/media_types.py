"""Which content types may be stored. Pure parsing of ``type/subtype`` patterns."""

from __future__ import annotations

import re

from xtyl_common.errors import InvalidInput

DEFAULT_CONTENT_TYPE = "application/octet-stream"
#: RFC 6838 restricted-name characters.
_NAME_CHARS = r"[A-Za-z0-9!#$&^_.+-]{1,127}"
_MEDIA_TYPE = re.compile(rf"^{_NAME_CHARS}/{_NAME_CHARS}$")
_PATTERN = re.compile(rf"^(\*/\*|{_NAME_CHARS}/\*|{_NAME_CHARS}/{_NAME_CHARS})$")


def normalize_media_type(raw: str | None) -> str:
    """``Text/Plain; charset=utf-8`` → ``text/plain``; an absent type is octet-stream.

    Raises :class:`InvalidInput` (``invalid_content_type``) for anything not ``type/subtype``.
    """
    if raw is None or not raw.strip():
        return DEFAULT_CONTENT_TYPE
    media_type = raw.split(";", 1)[0].strip().lower()
    if not _MEDIA_TYPE.match(media_type):
        raise InvalidInput(
            "the content type must look like type/subtype", code="invalid_content_type"
        )
    return media_type


def parse_patterns(text: str) -> tuple[str, ...]:
    """A comma-separated list of ``type/subtype``, ``type/*`` or ``*/*``, lower-cased."""
    patterns = tuple(item.strip().lower() for item in text.split(",") if item.strip())
    for pattern in patterns:
        if not _PATTERN.match(pattern):
            raise ValueError(f"{pattern!r} is not type/subtype, type/* or */*")
    if not patterns:
        raise ValueError("at least one content type must be allowed")
    return patterns


def is_allowed(media_type: str, patterns: tuple[str, ...]) -> bool:
    major = media_type.split("/", 1)[0]
    return any(p in ("*/*", media_type) or p == f"{major}/*" for p in patterns)
