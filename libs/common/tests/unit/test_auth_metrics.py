"""What token verification counts, read as Prometheus reads it: a fixed set of outcomes and
algorithms whatever a token holds, and nothing at all for a verifier given no metrics (the
services behind the gateway)."""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import jwt
import pytest
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from xtyl_common.auth import AuthConfig, TokenVerifier, codes
from xtyl_common.auth.metrics import ALGS, OUTCOMES, TokenMetrics, alg_label, outcome_of
from xtyl_common.errors import Unauthorized

JWT_SECRET = "legacy-supabase-jwt-secret-0123456789abcdef"
INTERNAL_SECRET = "internal-service-secret-0123456789abcdefgh"
NOW = int(time.time())
CONFIG = AuthConfig(jwt_secret=JWT_SECRET, internal_secret=INTERNAL_SECRET)
CHECKS = "xtyl_gateway_token_verifications_total"
CACHE = "xtyl_gateway_token_cache_requests_total"


def user_token(**claims: Any) -> str:
    payload = {
        "sub": str(uuid.uuid4()),
        "aud": "authenticated",
        "role": "authenticated",
        "iat": NOW,
        "exp": NOW + 600,
        **claims,
    }
    return jwt.encode(payload, JWT_SECRET, algorithm="HS256")


def unsigned_token() -> str:
    def b64(value: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{b64({'alg': 'none'})}.{b64({'sub': str(uuid.uuid4())})}.c2ln"


def scraped() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every token sample this process serves, by name and labels."""
    text = generate_latest(REGISTRY).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name in (CHECKS, CACHE)
    }


def moved(
    before: dict[tuple[str, tuple[tuple[str, str], ...]], float],
    after: dict[tuple[str, tuple[tuple[str, str], ...]], float],
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        key: value - before.get(key, 0.0)
        for key, value in after.items()
        if value != before.get(key, 0.0)
    }


def check(outcome: str, alg: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return CHECKS, (("alg", alg), ("outcome", outcome))


def cache(result: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return CACHE, (("result", result),)


def test_every_refusal_code_is_one_of_a_few_outcomes() -> None:
    every_code = {value for name, value in vars(codes).items() if name.isupper()}
    assert {outcome_of(code) for code in every_code} <= set(OUTCOMES)
    assert outcome_of(codes.TOKEN_EXPIRED) == "expired"
    assert outcome_of(codes.UNKNOWN_KEY) == "unknown_key"
    assert outcome_of(codes.MALFORMED_TOKEN) == "malformed"
    assert outcome_of(codes.INVALID_SIGNATURE) == "invalid"
    assert outcome_of("a code added tomorrow") == "invalid"


@pytest.mark.parametrize(
    ("alg", "label"),
    [("HS256", "HS256"), ("ES256", "ES256"), ("RS256", "RS256"), ("nOnE", "none"),
     ("HS512", "other"), ("x" * 500, "other"), (None, "other")],
)  # fmt: skip
def test_alg_is_an_accepted_algorithm_none_or_other(alg: str | None, label: str) -> None:
    assert alg_label(alg) == label
    assert label in ALGS


async def test_a_counted_verifier_moves_outcome_alg_and_cache_counters() -> None:
    verifier = TokenVerifier(CONFIG, metrics=TokenMetrics(), clock=lambda: NOW)
    good = user_token()
    before = scraped()

    await verifier.verify_user_token(good)
    await verifier.verify_user_token(good)  # from the cache: no second check
    for bad in (
        user_token(exp=NOW - 3600, iat=NOW - 7200),
        good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB"),
        unsigned_token(),
        "x" * 9000,  # too large: refused before the cache is asked
    ):
        with pytest.raises(Unauthorized):
            await verifier.verify_user_token(bad)

    assert moved(before, scraped()) == {
        check("valid", "HS256"): 1,
        check("expired", "HS256"): 1,
        check("invalid", "HS256"): 1,
        check("invalid", "none"): 1,
        check("malformed", "other"): 1,
        cache("hit"): 1,
        cache("miss"): 4,
    }
    # every outcome and algorithm is served from the start, so increase() sees the first
    assert {labels for name, labels in scraped() if name == CHECKS} >= {
        check(outcome, alg)[1] for outcome in OUTCOMES for alg in ALGS
    }


async def test_a_verifier_without_metrics_counts_nothing() -> None:
    verifier = TokenVerifier(CONFIG, clock=lambda: NOW)
    before = scraped()
    await verifier.verify_user_token(user_token())
    with pytest.raises(Unauthorized):
        await verifier.verify_user_token("not.a.token")
    assert moved(before, scraped()) == {}
