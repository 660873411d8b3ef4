"""The quota rules: how much room an upload may hold, and what it holds before and while its
bytes arrive."""

from __future__ import annotations

import pytest

from xtyl_common.quotas import QuotaExceeded, QuotaUse
from xtyl_storage.domain.quotas import (
    RESERVE_STEP_BYTES,
    StorageLimits,
    Usage,
    first_hold,
    next_hold,
    room_for,
    usage_report,
)

LIMITS = StorageLimits(storage_bytes=1000, files=3)


def test_room_is_what_is_wanted_or_what_is_left_down_to_what_is_needed() -> None:
    usage = Usage(bytes=600, files=1, held_bytes=100, held_files=1)
    assert room_for(usage, LIMITS, need=50, want=200) == 200
    assert room_for(usage, LIMITS, need=50, want=500) == 300  # all that is left
    assert room_for(usage, LIMITS, need=300, want=300) == 300  # exactly the limit


def test_past_the_bytes_left_is_quota_storage_bytes() -> None:
    usage = Usage(bytes=600, files=1, held_bytes=100, held_files=1)
    with pytest.raises(QuotaExceeded) as refused:
        room_for(usage, LIMITS, need=301, want=301)
    assert refused.value.code == "quota_storage_bytes"
    assert refused.value.status == 403
    assert (refused.value.used, refused.value.limit) == (600, 1000)


def test_one_file_past_the_count_is_quota_files_even_with_bytes_left() -> None:
    usage = Usage(bytes=0, files=2, held_bytes=0, held_files=1)
    with pytest.raises(QuotaExceeded) as refused:
        room_for(usage, LIMITS, need=0, want=0)
    assert refused.value.code == "quota_files"
    assert (refused.value.used, refused.value.limit) == (2, 3)


@pytest.mark.parametrize(
    ("declared", "overhead", "expected"),
    [
        (None, 0, (1, 1)),  # no length: one byte (and one file), more as bytes arrive
        (80, 0, (80, 80)),  # a raw body: its length exactly
        (10_000, 0, (100, 100)),  # never more than the largest upload
        (90, 64, (26, 90)),  # a form: between its length less the overhead, and its length
        (50, 64, (1, 50)),
    ],
)
def test_first_hold(declared: int | None, overhead: int, expected: tuple[int, int]) -> None:
    assert first_hold(declared, overhead=overhead, max_bytes=100) == expected


def test_next_hold_is_a_step_ahead_until_the_body_ended() -> None:
    big = 10 * RESERVE_STEP_BYTES
    assert next_hold(5, max_bytes=big, final=False) == (5, 5 + RESERVE_STEP_BYTES)
    assert next_hold(5, max_bytes=big, final=True) == (5, 5)
    assert next_hold(big - 1, max_bytes=big, final=False) == (big - 1, big)


def test_usage_report_names_each_quota_with_its_unit() -> None:
    assert usage_report(Usage(bytes=10, files=2, held_bytes=5, held_files=1), LIMITS) == {
        "storage_bytes": QuotaUse(used=10, limit=1000, unit="bytes"),
        "files": QuotaUse(used=2, limit=3, unit="count"),
    }
