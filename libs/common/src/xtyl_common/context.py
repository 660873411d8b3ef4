"""Per-request context shared by logging and the internal HTTP client."""

from __future__ import annotations

import os
import re
from contextvars import ContextVar

REQUEST_ID_HEADER = "X-Request-ID"

_request_id: ContextVar[str | None] = ContextVar("xtyl_request_id", default=None)
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def new_request_id() -> str:
    """32 random hex digits (the shape of a uuid4's hex, at a quarter of its cost)."""
    return os.urandom(16).hex()


def accept_request_id(candidate: str | None) -> str:
    """Keep a caller's request id when it is short and plain, else make a new one.

    Request ids end up in logs and headers, so anything that could forge a log line or a header
    (spaces, CR/LF, quotes, very long values) is replaced rather than trusted.
    """
    if candidate and _VALID_REQUEST_ID.match(candidate):
        return candidate
    return new_request_id()


def current_request_id() -> str | None:
    return _request_id.get()


def set_request_id(request_id: str | None) -> None:
    _request_id.set(request_id)
