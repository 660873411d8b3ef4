"""How many requests one caller may have in flight at once, in this gateway process. Pure logic.

A rate limit counts requests over a window; it does not stop one caller from opening hundreds
of slow uploads at once and holding every connection to a service. This cap does: past it, the
caller's next request is 429 ``too_many_in_flight`` until one of theirs ends, and nobody else
is affected.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from contextlib import contextmanager

from xtyl_common.errors import RateLimited


class InFlightLimit:
    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("the in-flight limit must be at least 1")
        self.limit = limit
        self._counts: dict[str, int] = {}

    def in_flight(self, subject: str) -> int:
        return self._counts.get(subject, 0)

    @contextmanager
    def hold(self, subject: str, *, limit: int | None = None) -> Generator[None]:
        """One request of ``subject`` for the duration of the block, or 429 at the cap (this
        limit's, or ``limit`` for a subject of its own, e.g. one export per user)."""
        release = self.acquire(subject, limit=limit)
        try:
            yield
        finally:
            release()

    def acquire(self, subject: str, *, limit: int | None = None) -> Callable[[], None]:
        """Count one request of ``subject`` (429 at the cap); the function given back ends it
        (calling it again does nothing)."""
        cap = self.limit if limit is None else limit
        count = self._counts.get(subject, 0)
        if count >= cap:
            raise RateLimited(
                1,
                f"at most {cap} such requests at once per caller: wait for one to finish",
                code="too_many_in_flight",
            )
        self._counts[subject] = count + 1
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            remaining = self._counts[subject] - 1
            if remaining:
                self._counts[subject] = remaining
            else:
                del self._counts[subject]

        return release
