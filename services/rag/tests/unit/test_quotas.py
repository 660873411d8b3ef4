"""The rag service's quotas as rules: which request is refused, with which code, and when the
day's answers come back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from xtyl_rag.domain.quotas import (
    Usage,
    UserLimits,
    answers_exceeded,
    chunks_exceeded,
    documents_exceeded,
    seconds_until_next_day,
    usage_report,
)

LIMITS = UserLimits(documents=3, chunks=10, answers_per_day=5)


def test_one_more_document_fits_up_to_the_limit() -> None:
    assert documents_exceeded(2, LIMITS) is None
    refused = documents_exceeded(3, LIMITS)
    assert refused is not None
    assert (refused.status, refused.code) == (403, "quota_documents")
    assert refused.to_problem()["used"] == 3
    assert refused.to_problem()["limit"] == 3


def test_chunks_fit_up_to_the_limit_and_say_which_document_did_not() -> None:
    assert chunks_exceeded(4, 6, LIMITS) is None
    assert chunks_exceeded(9, 1, LIMITS) is None
    at_limit = chunks_exceeded(10, 1, LIMITS)
    assert at_limit is not None
    assert (at_limit.code, at_limit.used) == ("quota_chunks", 10)
    too_many = chunks_exceeded(4, 7, LIMITS)
    assert too_many is not None
    assert too_many.detail is not None
    assert "7 chunks do not fit" in too_many.detail


@pytest.mark.parametrize(
    ("now", "seconds"),
    [
        (datetime(2026, 3, 1, 0, 0, 0, tzinfo=UTC), 86_400),
        (datetime(2026, 3, 1, 23, 59, 59, tzinfo=UTC), 1),
        (datetime(2026, 3, 1, 23, 59, 59, 500_000, tzinfo=UTC), 1),
        (datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC), 43_200),
        # 23:00 at UTC+2 is 21:00 UTC: three hours to go
        (datetime(2026, 3, 1, 23, 0, 0, tzinfo=timezone(timedelta(hours=2))), 10_800),
    ],
)
def test_the_day_rolls_over_at_midnight_utc(now: datetime, seconds: int) -> None:
    assert seconds_until_next_day(now) == seconds


def test_the_daily_refusal_is_429_with_retry_after() -> None:
    refused = answers_exceeded(5, LIMITS, now=datetime(2026, 3, 1, 22, 0, tzinfo=UTC))
    assert (refused.status, refused.code, refused.retry_after_s) == (
        429,
        "quota_answers_per_day",
        7200,
    )
    assert refused.headers["Retry-After"] == "7200"


def test_usage_names_every_quota() -> None:
    report = usage_report(Usage(documents=1, chunks=2, answers_today=3), LIMITS)
    assert {name: (use.used, use.limit) for name, use in report.items()} == {
        "documents": (1, 3),
        "chunks": (2, 10),
        "answers_per_day": (3, 5),
    }
