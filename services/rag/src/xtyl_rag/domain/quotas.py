"""A user's quotas in the rag service: the documents they keep, the chunks those hold, the
answers they ask a day (UTC). Each refusal names its quota in its problem code
(``xtyl_common.quotas``): 403 ``quota_documents``, 403 ``quota_chunks``, 429
``quota_answers_per_day`` with ``Retry-After`` until the day rolls over.

Where each is enforced (``adapters/postgres``), under a per-user lock or a guarded update, so
requests racing at a limit never pass it together:

* documents: the transaction that creates a document (inline text, or the first time a file is
  seen); a file whose upload would pass it gets a ``failed`` document with the reason, so the
  user is told, and nothing retries it (an explicit ``POST /v1/documents {file_id}`` does,
  once there is room);
* chunks: after chunking (before the embedding is spent) and again in the transaction that
  writes them; a document that would pass it fails with the reason;
* answers: one guarded upsert of the user's counter for the day.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec

from xtyl_common.quotas import DailyQuotaExceeded, QuotaExceeded, QuotaUse, quota_code

DOCUMENTS = "documents"
CHUNKS = "chunks"
ANSWERS_PER_DAY = "answers_per_day"
#: The error code of a document this quota refused (such documents are not counted).
DOCUMENTS_REFUSED = quota_code(DOCUMENTS)
CHUNKS_REFUSED = quota_code(CHUNKS)


class UserLimits(msgspec.Struct, frozen=True, kw_only=True):
    documents: int = 1000
    chunks: int = 200_000
    answers_per_day: int = 200


class Usage(msgspec.Struct, frozen=True, kw_only=True):
    """What one user spent: documents kept, chunks held, answers asked today (UTC)."""

    documents: int
    chunks: int
    answers_today: int


def documents_exceeded(used: int, limits: UserLimits) -> QuotaExceeded | None:
    """The refusal of one more document, or None when it fits."""
    if used + 1 <= limits.documents:
        return None
    return QuotaExceeded(
        DOCUMENTS,
        used=used,
        limit=limits.documents,
        detail=f"you keep {used} of the {limits.documents} documents allowed:"
        " delete some to add more",
    )


def chunks_exceeded(used: int, adding: int, limits: UserLimits) -> QuotaExceeded | None:
    """The refusal of ``adding`` more chunks (``adding`` 1: a new document, whose chunks are
    not known yet, when the quota is already reached), or None when they fit."""
    if used + adding <= limits.chunks:
        return None
    if adding <= 1:
        detail = f"your documents hold {used} of the {limits.chunks} chunks allowed"
    else:
        detail = (
            f"this document's {adding} chunks do not fit: your other documents hold {used}"
            f" of the {limits.chunks} chunks allowed"
        )
    return QuotaExceeded(CHUNKS, used=used, limit=limits.chunks, detail=detail)


def seconds_until_next_day(now: datetime) -> int:
    """Whole seconds from ``now`` to the next 00:00 UTC (at least 1)."""
    utc = now.astimezone(UTC)
    midnight = datetime(utc.year, utc.month, utc.day, tzinfo=UTC) + timedelta(days=1)
    return max(1, int((midnight - utc).total_seconds() + 0.999))


def answers_exceeded(used: int, limits: UserLimits, *, now: datetime) -> DailyQuotaExceeded:
    return DailyQuotaExceeded(
        ANSWERS_PER_DAY,
        used=used,
        limit=limits.answers_per_day,
        retry_after_s=seconds_until_next_day(now),
    )


def usage_report(usage: Usage, limits: UserLimits) -> dict[str, QuotaUse]:
    """``GET /internal/me/usage``: ``{quota name: QuotaUse}``."""
    return {
        DOCUMENTS: QuotaUse(used=usage.documents, limit=limits.documents),
        CHUNKS: QuotaUse(used=usage.chunks, limit=limits.chunks),
        ANSWERS_PER_DAY: QuotaUse(used=usage.answers_today, limit=limits.answers_per_day),
    }
