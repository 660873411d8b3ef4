"""Keyset pagination shared by every list route: opaque cursors over ``(created_at, id)``.

A cursor is the ``(created_at, id)`` of the last item of a page, newest first, as url-safe
base64 of a msgspec array; anything a service did not issue is ``invalid_cursor`` (422).

A service's use case pages with :func:`keyset_page`, its repository filters with
:func:`keyset_sql`::

    async def page(self, owner_id, *, limit, cursor) -> Page[StoredFile]:
        return await keyset_page(
            lambda n, after: self.files.list_ready(owner_id, limit=n, after=after),
            limit=limit,
            cursor=cursor,
        )

    # the repository: ... where owner_id = $1 and {keyset_sql(2)} limit $4
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Generic, Protocol, TypeVar

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


class Keyed(Protocol):
    """What a keyset page is ordered by."""

    @property
    def created_at(self) -> datetime: ...

    @property
    def id(self) -> uuid.UUID: ...


K = TypeVar("K", bound=Keyed)


class Page(msgspec.Struct, Generic[K], frozen=True, kw_only=True):
    items: list[K]
    #: the cursor of the next page; ``None`` on the last
    next_cursor: str | None


async def keyset_page(
    fetch: Callable[[int, Cursor | None], Awaitable[Sequence[K]]],
    *,
    limit: int,
    cursor: str | None,
) -> Page[K]:
    """One page of at most ``limit`` items after ``cursor``: ``fetch(limit + 1, after)`` reads
    one row more than shown, so the page knows whether another follows."""
    check_limit(limit)
    after = decode_cursor(cursor) if cursor else None
    rows = await fetch(limit + 1, after)
    items = list(rows[:limit])
    more = len(rows) > limit and bool(items)
    last = items[-1] if more else None
    return Page(
        items=items,
        next_cursor=None
        if last is None
        else encode_cursor(Cursor(created_at=last.created_at, id=last.id)),
    )


def keyset_sql(first: int) -> str:
    """The filter and order of a page, newest first: ``$first`` is the cursor's ``created_at``,
    ``$first+1`` its ``id`` (both null on the first page)."""
    return (
        f"(${first}::timestamptz is null or (created_at, id) < (${first}, ${first + 1}::uuid))"
        " order by created_at desc, id desc"
    )
