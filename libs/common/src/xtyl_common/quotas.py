"""Per-user quotas: what a user may hold or ask, enforced where the resource is spent.

Each service owns its quotas (storage: stored bytes and files; rag: documents, chunks and
answers a day) and reports them on ``GET /internal/me/usage`` as ``{name: QuotaUse}``; the
gateway merges them into ``GET /v1/me/usage``. A refusal names its quota in its problem code
(``quota_storage_bytes``, ``quota_files``, ``quota_documents``, ``quota_chunks``,
``quota_answers_per_day``) with ``used`` and ``limit`` beside it, so a client can tell the
user which limit they reached.
"""

from __future__ import annotations

import msgspec

from xtyl_common.errors import Forbidden, RateLimited

#: The problem code of a quota: ``quota_<name>``.
QUOTA_CODE_PREFIX = "quota_"


class QuotaUse(msgspec.Struct, frozen=True, kw_only=True):
    """How much of one quota a user has spent: ``used`` of ``limit`` (``unit`` for display)."""

    used: int
    limit: int
    unit: str = "count"


def quota_code(name: str) -> str:
    return QUOTA_CODE_PREFIX + name


class QuotaExceeded(Forbidden):
    """``403 quota_<name>``: the request would take the user past a quota they hold."""

    default_code = "quota_exceeded"
    title = "Quota exceeded"

    def __init__(self, name: str, *, used: int, limit: int, detail: str | None = None) -> None:
        super().__init__(
            detail or f"quota {name!r} reached: {used} of {limit} used",
            code=quota_code(name),
            extra={"quota": name, "used": used, "limit": limit},
        )
        self.quota = name
        self.used = used
        self.limit = limit


class DailyQuotaExceeded(RateLimited):
    """``429 quota_<name>`` with ``Retry-After`` until the quota's day rolls over (UTC)."""

    title = "Quota exceeded"

    def __init__(self, name: str, *, used: int, limit: int, retry_after_s: int) -> None:
        super().__init__(
            retry_after_s,
            f"daily quota {name!r} reached: {used} of {limit} used; it resets at 00:00 UTC",
            code=quota_code(name),
        )
        self.extra.update({"quota": name, "used": used, "limit": limit})
        self.quota = name
        self.used = used
        self.limit = limit
