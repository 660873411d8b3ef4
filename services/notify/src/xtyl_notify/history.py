"""A user's email log, newest first, in cursor pages (what ``GET /v1/notifications`` shows)."""

from __future__ import annotations

import uuid

import msgspec

from xtyl_common.pagination import Cursor, check_limit, decode_cursor, encode_cursor
from xtyl_notify.adapters.postgres import NotifyRepository
from xtyl_notify.domain.emails import EmailRecord


class EmailPage(msgspec.Struct, frozen=True, kw_only=True):
    items: list[EmailRecord]
    next_cursor: str | None


async def email_page(
    repository: NotifyRepository, user_id: uuid.UUID, *, limit: int, cursor: str | None
) -> EmailPage:
    check_limit(limit)
    after = decode_cursor(cursor) if cursor else None
    items = await repository.list_for_user(user_id, limit=limit + 1, after=after)
    more = len(items) > limit
    items = items[:limit]
    next_cursor = (
        encode_cursor(Cursor(created_at=items[-1].created_at, id=items[-1].id)) if more else None
    )
    return EmailPage(items=items, next_cursor=next_cursor)
