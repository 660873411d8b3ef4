"""Keyset pages: every item once across pages, a cursor only when more follow, and cursors we
did not issue refused."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from xtyl_common.errors import InvalidInput
from xtyl_common.pagination import Cursor, keyset_page, keyset_sql


class Row(msgspec.Struct, frozen=True):
    created_at: datetime
    id: uuid.UUID


START = datetime(2026, 1, 1, tzinfo=UTC)
# newest first; two rows share a timestamp (the id breaks the tie)
ROWS = sorted(
    [Row(START + timedelta(seconds=n // 2), uuid.uuid4()) for n in range(7)],
    key=lambda r: (r.created_at, r.id),
    reverse=True,
)


async def fetch(n: int, after: Cursor | None) -> list[Row]:
    """What the repository's ``keyset_sql`` query answers."""
    kept = [r for r in ROWS if after is None or (r.created_at, r.id) < (after.created_at, after.id)]
    return kept[:n]


async def test_pages_walk_every_item_once_in_order() -> None:
    seen: list[Row] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = await keyset_page(fetch, limit=3, cursor=cursor)
        seen += page.items
        pages += 1
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == ROWS
    assert pages == 3


async def test_an_exact_last_page_has_no_cursor() -> None:
    page = await keyset_page(fetch, limit=7, cursor=None)
    assert len(page.items) == 7
    assert page.next_cursor is None


@pytest.mark.parametrize("cursor", ["not-base64!", "W10", "WyJ4IiwieSJd"])
async def test_a_cursor_we_did_not_issue_is_invalid_cursor(cursor: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        await keyset_page(fetch, limit=3, cursor=cursor)
    assert raised.value.code == "invalid_cursor"


@pytest.mark.parametrize("limit", [0, 101])
async def test_a_limit_out_of_range_is_invalid_limit(limit: int) -> None:
    with pytest.raises(InvalidInput) as raised:
        await keyset_page(fetch, limit=limit, cursor=None)
    assert raised.value.code == "invalid_limit"


def test_the_sql_numbers_its_parameters_from_first() -> None:
    sql = keyset_sql(2)
    assert "$2::timestamptz is null" in sql
    assert "< ($2, $3::uuid)" in sql
    assert sql.endswith("order by created_at desc, id desc")
