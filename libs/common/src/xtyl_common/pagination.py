"""Keyset pagination shared by every list route: opaque cursors over ``(created_at, id)``.

A cursor is the ``(created_at, id)`` of the last item of a page, newest first, as url-safe
base64 of a msgspec array; anything a service did not issue is ``invalid_cursor`` (422).
"""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import datetime

import msgspec

from xtyl_common.errors import InvalidInput

MAX_LIMIT = 100
DEFAULT_LIMIT = 50


class Cursor(msgspec.Struct, frozen=True, array_like=True):
    created_at: datetime
    id: uuid.UUID


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Cursor)


def encode_cursor(cursor: Cursor) -> str:
    return base64.urlsafe_b64encode(_encoder.encode(cursor)).rstrip(b"=").decode("ascii")


def decode_cursor(text: str) -> Cursor:
    """The cursor, or :class:`InvalidInput` (``invalid_cursor``) for anything we did not make."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        cursor = _decoder.decode(raw)
    except (binascii.Error, ValueError, msgspec.DecodeError):
        raise InvalidInput(
            "the cursor is not one this service issued", code="invalid_cursor"
        ) from None
    if cursor.created_at.tzinfo is None:
        raise InvalidInput("the cursor is not one this service issued", code="invalid_cursor")
    return cursor


def check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit must be between 1 and {MAX_LIMIT}", code="invalid_limit")
    return limit
