"""The verified-token cache: a busy user costs one verification, and expiry still bites."""

from __future__ import annotations

import time
import uuid

import pytest

from xtyl_common.auth import AuthConfig, TokenVerifier
from xtyl_common.errors import Unauthorized
from xtyl_devstack.issuer import mint_legacy_access_token

JWT_SECRET = "legacy-supabase-jwt-secret-0123456789abcdef"
INTERNAL_SECRET = "internal-service-secret-0123456789abcdefgh"
SUPABASE_URL = "https://project-ref.supabase.co"
NOW = int(time.time())


class FakeClock:
    def __init__(self) -> None:
        self.now = float(NOW)

    def time(self) -> float:
        return self.now


def make_verifier(
    clock: FakeClock, *, leeway_s: int = 10, verified_cache_size: int = 10_000
) -> TokenVerifier:
    # HS256 only: these tests need no JWKS and do no I/O.
    config = AuthConfig(
        jwt_secret=JWT_SECRET,
        internal_secret=INTERNAL_SECRET,
        leeway_s=leeway_s,
        verified_cache_size=verified_cache_size,
    )
    return TokenVerifier(config, clock=clock.time)


def token(*, ttl_s: int = 3600, user_id: uuid.UUID | None = None) -> str:
    return mint_legacy_access_token(
        JWT_SECRET,
        supabase_url=SUPABASE_URL,
        user_id=user_id or uuid.uuid4(),
        email="ada@example.com",
        ttl_s=ttl_s,
        issued_at=NOW,
    )


async def test_many_requests_with_one_token_cost_one_verification() -> None:
    verifier = make_verifier(FakeClock())
    user_token = token()

    users = [await verifier.verify_user_token(user_token) for _ in range(100)]

    assert {u.access_token for u in users} == {user_token}
    assert (verifier.stats.verified, verifier.stats.cache_hits) == (1, 99)


async def test_a_cached_token_still_expires() -> None:
    clock = FakeClock()
    verifier = make_verifier(clock, leeway_s=10)
    user_token = token(ttl_s=60)
    await verifier.verify_user_token(user_token)

    clock.now = NOW + 60 + 9  # inside the leeway: still served from the cache
    await verifier.verify_user_token(user_token)
    clock.now = NOW + 60 + 10
    with pytest.raises(Unauthorized) as caught:
        await verifier.verify_user_token(user_token)

    assert caught.value.code == "token_expired"
    assert (verifier.stats.verified, verifier.stats.cache_hits) == (1, 1)


async def test_cached_tokens_are_checked_again_after_the_jwks_ttl() -> None:
    clock = FakeClock()
    verifier = make_verifier(clock)
    user_token = token(ttl_s=3600)
    await verifier.verify_user_token(user_token)

    clock.now = NOW + 600
    await verifier.verify_user_token(user_token)

    assert verifier.stats.verified == 2


async def test_the_cache_is_bounded_and_evicts_the_least_recent() -> None:
    verifier = make_verifier(FakeClock(), verified_cache_size=2)
    first, second, third = token(), token(), token()

    for t in (first, second, first, third, first, second):
        await verifier.verify_user_token(t)

    # second was evicted by third (first had been used more recently), then verified again
    assert (verifier.stats.verified, verifier.stats.cache_hits) == (4, 2)


async def test_a_cached_user_token_is_still_not_a_service_token() -> None:
    verifier = make_verifier(FakeClock())
    user_token = token()
    await verifier.verify_user_token(user_token)

    with pytest.raises(Unauthorized) as caught:
        await verifier.verify_service_token(user_token)

    assert caught.value.code == "invalid_signature"


async def test_rejections_are_not_cached_as_successes() -> None:
    clock = FakeClock()
    verifier = make_verifier(clock)
    early = mint_legacy_access_token(
        JWT_SECRET,
        supabase_url=SUPABASE_URL,
        user_id=uuid.uuid4(),
        email=None,
        issued_at=NOW + 60,
    )

    with pytest.raises(Unauthorized) as caught:
        await verifier.verify_user_token(early)
    assert caught.value.code == "token_not_yet_valid"

    clock.now = NOW + 60
    assert (await verifier.verify_user_token(early)).role == "authenticated"
