"""The gateway's own metrics (docs/metrics.md, "Gateway"): its exchanges with the services
behind it and its rate limiter's decisions. The token metrics are
:mod:`xtyl_common.auth.metrics` (the verifier is shared code); the per-request ones
(``xtyl_http_*``) :mod:`xtyl_common.metrics`.
"""

from __future__ import annotations

from typing import Final, Literal

from prometheus_client import Counter, Histogram

from xtyl_common.metrics import HTTP_BUCKETS

UpstreamFailure = Literal["connect", "timeout", "reset", "busy"]
#: ``connect``: refused or unreachable; ``timeout``: connecting or a read took too long;
#: ``reset``: the connection broke mid-exchange (before or during the answer); ``busy``: no
#: pooled connection free within ``UPSTREAM_POOL_WAIT_S``.
UPSTREAM_FAILURES: Final[tuple[UpstreamFailure, ...]] = ("connect", "timeout", "reset", "busy")
#: The ``status`` of an exchange that failed before the service answered.
NO_ANSWER: Final = "error"

RateLimitDecision = Literal["allowed", "limited", "failed_open"]
RATE_LIMIT_DECISIONS: Final[tuple[RateLimitDecision, ...]] = ("allowed", "limited", "failed_open")

UPSTREAM_DURATION = Histogram(
    "xtyl_gateway_upstream_request_duration_seconds",
    "Time of one proxied exchange with an upstream (until its answer was relayed).",
    ["upstream", "status"],
    buckets=HTTP_BUCKETS,
)
UPSTREAM_ERRORS = Counter(
    "xtyl_gateway_upstream_errors",
    "Proxied exchanges that failed: connect, timeout, reset or busy.",
    ["upstream", "reason"],
)
RATE_LIMIT = Counter(
    "xtyl_gateway_rate_limit_decisions",
    "Rate limiter outcomes: allowed, limited (answered 429), failed_open (Redis down or slow).",
    ["decision"],
)
