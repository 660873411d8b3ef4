"""JWKS fetching as a caller sees it: one fetch serves many requests, unknown kids cannot make
us hammer the endpoint, and an outage turns into 401s for unknown keys, never 500s.

The JWKS is served by the devstack's local issuer on 127.0.0.1, which counts fetches, checks each
request, and can be switched to fail or hang. Time moves through an injected clock.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from xtyl_common.auth import AuthConfig, TokenVerifier
from xtyl_common.auth.jwks import JwksUnavailableError, parse_jwks
from xtyl_common.errors import Unauthorized
from xtyl_devstack.issuer import LocalIssuer, mint_access_token

INTERNAL_SECRET = "internal-service-secret-0123456789abcdefgh"
NOW = int(time.time())
COOLDOWN_S = 30.0
TTL_S = 600.0


class FakeClock:
    def __init__(self) -> None:
        self.now = float(NOW)
        self.mono = 1_000.0

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.mono += seconds


@dataclass
class Stack:
    issuer: LocalIssuer
    session: aiohttp.ClientSession
    clock: FakeClock

    def verifier(self, **overrides: Any) -> TokenVerifier:
        config = AuthConfig(
            supabase_url=self.issuer.supabase_url,
            internal_secret=INTERNAL_SECRET,
            jwks_ttl_s=TTL_S,
            jwks_refetch_cooldown_s=COOLDOWN_S,
            **overrides,
        )
        return TokenVerifier(
            config, self.session, clock=self.clock.time, monotonic=self.clock.monotonic
        )

    def token(
        self, *, kid: str | None = None, key: ec.EllipticCurvePrivateKey | None = None
    ) -> str:
        signing = self.issuer.signing_key
        return mint_access_token(
            key or signing.private_key,
            kid or signing.kid,
            supabase_url=self.issuer.supabase_url,
            user_id=uuid.uuid4(),  # a new token each time: no help from the verified cache
            email="ada@example.com",
            issued_at=int(self.clock.now),
        )


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with LocalIssuer(tmp_path) as issuer, aiohttp.ClientSession() as session:
        yield Stack(issuer, session, FakeClock())
        assert issuer.unexpected_requests == []


def random_kid_token() -> str:
    """Well-formed ES256 with a random kid and a random signature: costs us only a lookup."""

    def part(value: bytes) -> str:
        return base64.urlsafe_b64encode(value).rstrip(b"=").decode()

    header = part(json.dumps({"alg": "ES256", "typ": "JWT", "kid": str(uuid.uuid4())}).encode())
    claims = part(json.dumps({"sub": str(uuid.uuid4()), "role": "authenticated"}).encode())
    return f"{header}.{claims}.{part(uuid.uuid4().bytes * 4)}"


async def codes_of(verifier: TokenVerifier, tokens: list[str]) -> set[str]:
    results = await asyncio.gather(
        *(verifier.verify_user_token(t) for t in tokens), return_exceptions=True
    )
    assert all(isinstance(r, Unauthorized) for r in results), results[:3]
    return {r.code for r in results if isinstance(r, Unauthorized)}


async def test_one_fetch_serves_every_token_until_the_ttl(stack: Stack) -> None:
    verifier = stack.verifier()

    for _ in range(20):
        await verifier.verify_user_token(stack.token())
    stack.clock.advance(TTL_S - 1)
    await verifier.verify_user_token(stack.token())
    assert stack.issuer.jwks_requests == 1

    stack.clock.advance(1)
    await verifier.verify_user_token(stack.token())
    assert stack.issuer.jwks_requests == 2


async def test_random_kids_cost_at_most_one_fetch_per_cooldown(stack: Stack) -> None:
    verifier = stack.verifier()

    assert await codes_of(verifier, [random_kid_token() for _ in range(1000)]) == {"unknown_key"}
    assert stack.issuer.jwks_requests == 1

    stack.clock.advance(COOLDOWN_S - 1)
    assert await codes_of(verifier, [random_kid_token() for _ in range(1000)]) == {"unknown_key"}
    assert stack.issuer.jwks_requests == 1

    stack.clock.advance(1)
    assert await codes_of(verifier, [random_kid_token() for _ in range(1000)]) == {"unknown_key"}
    assert stack.issuer.jwks_requests == 2
    # and the real key still works throughout
    assert (await verifier.verify_user_token(stack.token())).role == "authenticated"
    assert stack.issuer.jwks_requests == 2


async def test_concurrent_misses_wait_for_one_shared_fetch(stack: Stack) -> None:
    verifier = stack.verifier()
    stack.issuer.jwks_mode = "hang"
    pending = [asyncio.ensure_future(verifier.verify_user_token(stack.token())) for _ in range(200)]
    async with asyncio.timeout(5):
        await stack.issuer.wait_for_jwks_requests(1)

    stack.issuer.jwks_mode = "ok"
    stack.issuer.release_hung_requests()
    users = await asyncio.gather(*pending)

    assert {u.role for u in users} == {"authenticated"}
    assert stack.issuer.jwks_requests == 1


async def test_a_cancelled_request_does_not_cancel_the_shared_fetch(stack: Stack) -> None:
    verifier = stack.verifier()
    stack.issuer.jwks_mode = "hang"
    first = asyncio.ensure_future(verifier.verify_user_token(stack.token()))
    second = asyncio.ensure_future(verifier.verify_user_token(stack.token()))
    async with asyncio.timeout(5):
        await stack.issuer.wait_for_jwks_requests(1)

    first.cancel()
    stack.issuer.jwks_mode = "ok"
    stack.issuer.release_hung_requests()

    assert (await second).role == "authenticated"
    assert first.cancelled()


async def test_hanging_endpoint_times_out_into_a_401(stack: Stack) -> None:
    verifier = stack.verifier(jwks_timeout_s=0.2)
    stack.issuer.jwks_mode = "hang"

    started = time.perf_counter()
    with pytest.raises(Unauthorized) as caught:
        await verifier.verify_user_token(stack.token())
    assert caught.value.code == "unknown_key"
    assert time.perf_counter() - started < 1.5

    # within the cooldown nobody waits again
    started = time.perf_counter()
    assert await codes_of(verifier, [stack.token() for _ in range(50)]) == {"unknown_key"}
    assert time.perf_counter() - started < 0.5
    assert stack.issuer.jwks_requests == 1
    stack.issuer.release_hung_requests()


async def test_endpoint_down_at_start_gives_401_then_recovers(stack: Stack) -> None:
    verifier = stack.verifier()
    stack.issuer.jwks_mode = "fail"

    assert await verifier.warm_up() is False
    assert await codes_of(verifier, [stack.token()]) == {"unknown_key"}
    assert stack.issuer.jwks_requests == 1

    stack.issuer.jwks_mode = "ok"
    stack.clock.advance(COOLDOWN_S)
    assert (await verifier.verify_user_token(stack.token())).role == "authenticated"
    assert stack.issuer.jwks_requests == 2


async def test_endpoint_down_at_start_is_retried_with_a_short_backoff_not_the_cooldown(
    stack: Stack,
) -> None:
    verifier = stack.verifier()
    stack.issuer.jwks_mode = "fail"
    assert await verifier.warm_up() is False  # fetch 1 fails: next try 0.5 s later

    stack.clock.advance(0.4)
    assert await codes_of(verifier, [stack.token() for _ in range(50)]) == {"unknown_key"}
    assert stack.issuer.jwks_requests == 1
    stack.clock.advance(0.1)
    assert await codes_of(verifier, [stack.token() for _ in range(50)]) == {"unknown_key"}
    assert stack.issuer.jwks_requests == 2  # failed again: next try 1 s later

    stack.clock.advance(0.9)
    assert await codes_of(verifier, [stack.token()]) == {"unknown_key"}
    assert stack.issuer.jwks_requests == 2
    for _ in range(5):  # 1 s, then 2 s, 2 s …: the backoff stops growing at 2 s
        stack.clock.advance(2)
        assert await codes_of(verifier, [stack.token()]) == {"unknown_key"}
    assert stack.issuer.jwks_requests == 7

    stack.issuer.jwks_mode = "ok"
    stack.clock.advance(2)
    assert (await verifier.verify_user_token(stack.token())).role == "authenticated"
    assert stack.issuer.jwks_requests == 8

    # keys known: unknown kids are back to one fetch per cooldown, even when it fails
    stack.issuer.jwks_mode = "fail"
    stack.clock.advance(COOLDOWN_S)
    assert await codes_of(verifier, [random_kid_token() for _ in range(10)]) == {"unknown_key"}
    assert stack.issuer.jwks_requests == 9
    stack.clock.advance(COOLDOWN_S - 1)
    assert await codes_of(verifier, [random_kid_token() for _ in range(10)]) == {"unknown_key"}
    assert stack.issuer.jwks_requests == 9
    assert (await verifier.verify_user_token(stack.token())).role == "authenticated"


async def test_endpoint_down_later_keeps_cached_keys_working(stack: Stack) -> None:
    verifier = stack.verifier(jwks_max_stale_s=3600)
    assert await verifier.warm_up() is True
    stack.issuer.jwks_mode = "fail"
    stack.clock.advance(TTL_S + 1)

    assert (await verifier.verify_user_token(stack.token())).role == "authenticated"
    assert await codes_of(verifier, [random_kid_token() for _ in range(100)]) == {"unknown_key"}
    assert stack.issuer.jwks_requests == 2  # the warm-up, then one failed refresh

    stack.clock.advance(3600)  # beyond max staleness, still down: keys no longer trusted
    assert await codes_of(verifier, [stack.token()]) == {"unknown_key"}


async def test_rotated_in_key_is_picked_up_after_the_cooldown(stack: Stack) -> None:
    verifier = stack.verifier()
    await verifier.verify_user_token(stack.token())
    new_key = ec.generate_private_key(ec.SECP256R1())
    stack.issuer.extra_jwks.append(
        {**json.loads(ECAlgorithm.to_jwk(new_key.public_key())), "kid": "k2"}
    )

    stack.clock.advance(COOLDOWN_S)
    user = await verifier.verify_user_token(stack.token(kid="k2", key=new_key))

    assert user.role == "authenticated"
    assert stack.issuer.jwks_requests == 2


async def test_revoked_key_stops_working_after_the_ttl(stack: Stack) -> None:
    verifier = stack.verifier()
    old_key = ec.generate_private_key(ec.SECP256R1())
    stack.issuer.extra_jwks.append(
        {**json.loads(ECAlgorithm.to_jwk(old_key.public_key())), "kid": "old"}
    )
    token = stack.token(kid="old", key=old_key)
    await verifier.verify_user_token(token)

    stack.issuer.extra_jwks.clear()
    stack.clock.advance(TTL_S)

    assert await codes_of(verifier, [token, stack.token(kid="old", key=old_key)]) == {"unknown_key"}


async def test_nothing_is_fetched_from_urls_named_in_a_token(stack: Stack, tmp_path: Path) -> None:
    verifier = stack.verifier()
    async with LocalIssuer(tmp_path / "attacker") as attacker:
        forged = attacker.signing_key
        named_by_iss = mint_access_token(
            forged.private_key,
            forged.kid,
            supabase_url=attacker.supabase_url,
            user_id=uuid.uuid4(),
            email=None,
        )
        named_by_jku = jwt.encode(
            {"sub": str(uuid.uuid4())},
            forged.private_key,
            algorithm="ES256",
            headers={"kid": forged.kid, "jku": attacker.jwks_url},
        )

        assert await codes_of(verifier, [named_by_iss]) == {"unknown_key"}
        assert await codes_of(verifier, [named_by_jku]) == {"forbidden_header"}
        assert attacker.jwks_requests == 0
    assert stack.issuer.jwks_requests == 1


def test_bad_entries_in_a_jwks_are_skipped() -> None:
    good = ec.generate_private_key(ec.SECP256R1()).public_key()
    document = {
        "keys": [
            {**json.loads(ECAlgorithm.to_jwk(good)), "kid": "good"},
            {"kty": "oct", "kid": "secret", "k": "c2VjcmV0"},
            {"kty": "EC", "kid": "off-curve", "crv": "P-256", "x": "A" * 43, "y": "A" * 43},
            {"kty": "RSA", "kid": "small", "n": "AQAB", "e": "AQAB"},
            {"kid": "no-kty"},
            "not an object",
        ]
    }

    assert list(parse_jwks(json.dumps(document).encode())) == ["good"]


@pytest.mark.parametrize("body", [b"", b"[]", b'{"keys": {}}', b"<html>", b'{"keys": 1}'])
def test_a_jwks_that_is_not_a_key_set_is_refused(body: bytes) -> None:
    with pytest.raises(JwksUnavailableError):
        parse_jwks(body)
