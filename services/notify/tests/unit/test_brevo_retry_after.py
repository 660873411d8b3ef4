"""How long Brevo asks us to wait: its rate-limit reset first, else a standard Retry-After."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from multidict import CIMultiDict

from xtyl_notify.adapters.brevo import retry_after_s

NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("headers", "wait_s"),
    [
        ({"x-sib-ratelimit-reset": "42"}, 42.0),
        ({"X-Sib-Ratelimit-Reset": "7", "Retry-After": "99"}, 7.0),
        ({"Retry-After": "120"}, 120.0),
        ({"retry-after": "Sat, 01 Mar 2025 12:01:30 GMT"}, 90.0),
        ({"Retry-After": "Sat, 01 Mar 2025 11:59:00 GMT"}, 0.0),  # in the past: now
        ({"x-sib-ratelimit-reset": "-3"}, 0.0),
        ({"x-sib-ratelimit-reset": "soon", "Retry-After": "5"}, 5.0),
        ({"Retry-After": "whenever"}, None),
        ({}, None),
    ],
)
def test_brevo_wait(headers: dict[str, str], wait_s: float | None) -> None:
    assert retry_after_s(CIMultiDict(headers), now=NOW) == wait_s
