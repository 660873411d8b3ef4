"""What a caller sees for every kind of bad token, and for good ones of each algorithm.

The JWKS comes from the devstack's local issuer: a real aiohttp server on 127.0.0.1 that checks
each JWKS request it receives.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from structlog.testing import capture_logs

from xtyl_common.auth import AuthConfig, TokenVerifier, UserPrincipal, issue_service_token
from xtyl_common.auth.claims import authenticated_at
from xtyl_common.errors import Unauthorized
from xtyl_devstack.issuer import (
    LocalIssuer,
    mint_access_token,
    mint_anon_key,
    mint_legacy_access_token,
    mint_service_role_key,
)

JWT_SECRET = "legacy-supabase-jwt-secret-0123456789abcdef"
INTERNAL_SECRET = "internal-service-secret-0123456789abcdefgh"
USER_ID = uuid.UUID("8d0fd2b3-9ca7-4c6b-a4e1-2a6a8b7f5c11")
NOW = int(time.time())


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now
        self.mono = 1_000.0

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.mono


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(value: object) -> str:
    return b64(json.dumps(value).encode())


def hs256(header: dict[str, Any], claims: object, key: bytes) -> str:
    """Sign by hand: PyJWT (rightly) refuses a PEM as an HMAC secret, an attacker does not."""
    signing_input = f"{b64json(header)}.{b64json(claims)}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


@dataclass
class Ctx:
    issuer: LocalIssuer
    session: aiohttp.ClientSession
    clock: FakeClock

    @property
    def key(self) -> ec.EllipticCurvePrivateKey:
        return self.issuer.signing_key.private_key

    @property
    def kid(self) -> str:
        return self.issuer.signing_key.kid

    def claims(self, **overrides: Any) -> dict[str, Any]:
        claims: dict[str, Any] = {
            "iss": self.issuer.supabase_url + "/auth/v1",
            "sub": str(USER_ID),
            "aud": "authenticated",
            "role": "authenticated",
            "iat": NOW,
            "exp": NOW + 3600,
        }
        claims.update(overrides)
        return {name: value for name, value in claims.items() if value is not None}

    def es256(self, claims: dict[str, Any] | None = None, **header: Any) -> str:
        headers = {name: v for name, v in {"kid": self.kid, **header}.items() if v is not None}
        return jwt.encode(claims or self.claims(), self.key, algorithm="ES256", headers=headers)

    def access_token(self, **overrides: Any) -> str:
        return mint_access_token(
            self.key,
            self.kid,
            supabase_url=self.issuer.supabase_url,
            user_id=USER_ID,
            email="ada@example.com",
            issued_at=NOW,
            **overrides,
        )

    def public_pem(self) -> bytes:
        return self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def public_jwk_text(self) -> bytes:
        return json.dumps(self.issuer.signing_key.public_jwk()).encode()

    def verifier(self, *, legacy_secret: bool = True) -> TokenVerifier:
        config = AuthConfig(
            supabase_url=self.issuer.supabase_url,
            jwt_secret=JWT_SECRET if legacy_secret else None,
            internal_secret=INTERNAL_SECRET,
        )
        return TokenVerifier(
            config, self.session, clock=self.clock.time, monotonic=self.clock.monotonic
        )


@pytest.fixture
async def ctx(tmp_path: Path) -> AsyncIterator[Ctx]:
    async with LocalIssuer(tmp_path) as issuer, aiohttp.ClientSession() as session:
        yield Ctx(issuer, session, FakeClock(NOW + 5))
        assert issuer.unexpected_requests == []


def _with_header(token: str, header: object) -> str:
    _, payload, signature = token.split(".")
    return f"{b64json(header)}.{payload}.{signature}"


def _tampered(token: str) -> str:
    header, _, signature = token.split(".")
    return f"{header}.{b64json({'sub': str(uuid.uuid4()), 'role': 'authenticated'})}.{signature}"


# (id, token builder, verifier has the HS256 secret, expected code)
BAD_TOKENS: list[tuple[str, Callable[[Ctx], str], bool, str]] = [
    ("empty", lambda c: "", True, "malformed_token"),
    ("alg-none", lambda c: f"{b64json({'alg': 'none'})}.{b64json(c.claims())}.", True, "alg_none"),
    (
        "alg-None-signed",
        lambda c: f"{b64json({'alg': 'None'})}.{b64json(c.claims())}.{b64(b'x' * 32)}",
        True,
        "alg_none",
    ),
    (
        "alg-NONE-kid",
        lambda c: f"{b64json({'alg': 'NONE', 'kid': c.kid})}.{b64json(c.claims())}.",
        False,
        "alg_none",
    ),
    (
        "empty-signature",
        lambda c: c.access_token().rsplit(".", 1)[0] + ".",
        True,
        "missing_signature",
    ),
    (
        "hs256-public-pem-jwks-only",
        lambda c: hs256({"alg": "HS256", "kid": c.kid}, c.claims(), c.public_pem()),
        False,
        "unsupported_algorithm",
    ),
    (
        "hs256-public-pem",
        lambda c: hs256({"alg": "HS256", "kid": c.kid}, c.claims(), c.public_pem()),
        True,
        "invalid_signature",
    ),
    (
        "hs256-public-jwk-jwks-only",
        lambda c: hs256({"alg": "HS256", "kid": c.kid}, c.claims(), c.public_jwk_text()),
        False,
        "unsupported_algorithm",
    ),
    (
        "hs256-public-jwk",
        lambda c: hs256({"alg": "HS256", "kid": c.kid}, c.claims(), c.public_jwk_text()),
        True,
        "invalid_signature",
    ),
    ("unknown-kid", lambda c: c.es256(kid="not-a-published-key"), True, "unknown_key"),
    ("es256-no-kid", lambda c: c.es256(kid=None), True, "missing_kid"),
    (
        "header-alg-rs256-on-ec-key",
        lambda c: _with_header(c.es256(), {"alg": "RS256", "kid": c.kid}),
        True,
        "algorithm_mismatch",
    ),
    (
        "hs512",
        lambda c: jwt.encode(c.claims(), JWT_SECRET * 2, algorithm="HS512"),
        True,
        "unsupported_algorithm",
    ),
    (
        "lowercase-hs256",
        lambda c: hs256({"alg": "hs256"}, c.claims(), JWT_SECRET.encode()),
        True,
        "unsupported_algorithm",
    ),
    ("tampered-payload", lambda c: _tampered(c.access_token()), True, "invalid_signature"),
    ("short-es256-signature", lambda c: c.access_token()[:-10], True, "invalid_signature"),
    (
        "other-secret",
        lambda c: hs256({"alg": "HS256"}, c.claims(), b"x" * 40),
        True,
        "invalid_signature",
    ),
    ("expired", lambda c: c.access_token(exp=NOW - 11), True, "token_expired"),
    ("nbf-beyond-leeway", lambda c: c.access_token(nbf=NOW + 16), True, "token_not_yet_valid"),
    (
        "iat-beyond-leeway",
        lambda c: c.access_token(iat=NOW + 16, exp=NOW + 3600),
        True,
        "token_not_yet_valid",
    ),
    ("exp-before-iat", lambda c: c.access_token(iat=NOW, exp=NOW), True, "invalid_lifetime"),
    ("wrong-aud", lambda c: c.access_token(aud="anon"), True, "invalid_audience"),
    ("aud-list-without-ours", lambda c: c.access_token(aud=["other"]), True, "invalid_audience"),
    ("missing-aud", lambda c: c.access_token(aud=None), True, "missing_claim"),
    (
        "foreign-iss",
        lambda c: c.access_token(iss="https://evil.supabase.co/auth/v1"),
        True,
        "invalid_issuer",
    ),
    (
        "iss-only-starts-right",
        lambda c: c.access_token(iss=c.issuer.supabase_url + "/auth/v1.evil.example"),
        True,
        "invalid_issuer",
    ),
    ("iss-missing", lambda c: c.access_token(iss=None), True, "invalid_issuer"),
    ("missing-sub", lambda c: c.access_token(sub=None), True, "missing_claim"),
    ("missing-exp", lambda c: c.es256(c.claims(exp=None)), True, "missing_claim"),
    ("missing-iat", lambda c: c.es256(c.claims(iat=None)), True, "missing_claim"),
    ("sub-not-uuid", lambda c: c.access_token(sub="user-42"), True, "invalid_subject"),
    ("sub-uuid-no-hyphens", lambda c: c.access_token(sub=USER_ID.hex), True, "invalid_subject"),
    ("role-admin", lambda c: c.access_token(role="admin"), True, "invalid_role"),
    ("missing-role", lambda c: c.access_token(role=None), True, "missing_claim"),
    ("exp-string", lambda c: c.es256(c.claims(exp="tomorrow")), True, "invalid_claims"),
    (
        "payload-array",
        lambda c: hs256({"alg": "HS256"}, [1], JWT_SECRET.encode()),
        True,
        "invalid_claims",
    ),
    ("anon-key", lambda c: mint_anon_key(JWT_SECRET), True, "anon_key"),
    ("anon-key-no-secret", lambda c: mint_anon_key(JWT_SECRET), False, "anon_key"),
    ("service-role-key", lambda c: mint_service_role_key(JWT_SECRET), True, "service_role_key"),
    ("publishable-key", lambda c: "sb_publishable_abcdefghijklmnop", True, "anon_key"),
    ("secret-key", lambda c: "sb_secret_abcdefghijklmnop", True, "service_role_key"),
    (
        "service-token",
        lambda c: issue_service_token(INTERNAL_SECRET, service="gateway", now=NOW),
        True,
        "invalid_signature",
    ),
    ("two-segments", lambda c: c.access_token().rsplit(".", 1)[0], True, "malformed_token"),
    ("four-segments", lambda c: c.access_token() + ".e30", True, "malformed_token"),
    ("bad-base64", lambda c: "e30!.e30.c2ln", True, "malformed_token"),
    ("padded-base64", lambda c: c.access_token().replace(".", "=.", 1), True, "malformed_token"),
    ("non-ascii", lambda c: c.access_token() + "é", True, "malformed_token"),
    (
        "header-json-array",
        lambda c: _with_header(c.access_token(), ["alg", "ES256"]),
        True,
        "malformed_token",
    ),
    ("header-not-json", lambda c: f"{b64(b'{alg')}.e30.c2ln", True, "malformed_token"),
    (
        "header-alg-number",
        lambda c: _with_header(c.access_token(), {"alg": 256}),
        True,
        "malformed_token",
    ),
    (
        "header-kid-number",
        lambda c: _with_header(c.es256(), {"alg": "ES256", "kid": 7}),
        True,
        "malformed_token",
    ),
    ("one-megabyte", lambda c: "a" * 1_048_576, True, "token_too_large"),
    ("jku", lambda c: c.es256(jku="https://evil.example/jwks.json"), True, "forbidden_header"),
    ("x5u", lambda c: c.es256(x5u="https://evil.example/cert.pem"), True, "forbidden_header"),
    ("jwk", lambda c: c.es256(jwk=c.issuer.signing_key.public_jwk()), True, "forbidden_header"),
    ("x5c", lambda c: c.es256(x5c=["MIIB"]), True, "forbidden_header"),
    ("crit", lambda c: c.es256(crit=["exp"]), True, "forbidden_header"),
]


@pytest.mark.parametrize(
    ("build", "legacy_secret", "code"),
    [pytest.param(build, secret, code, id=name) for name, build, secret, code in BAD_TOKENS],
)
async def test_bad_token_is_a_401_with_a_stable_code(
    ctx: Ctx, build: Callable[[Ctx], str], legacy_secret: bool, code: str
) -> None:
    verifier = ctx.verifier(legacy_secret=legacy_secret)
    token = build(ctx)
    started = time.perf_counter()

    with pytest.raises(Unauthorized) as caught:
        await verifier.verify_user_token(token)

    assert caught.value.code == code
    assert caught.value.status == 401
    assert caught.value.to_problem()["code"] == code
    assert token not in str(caught.value.detail) or not token
    assert time.perf_counter() - started < 0.5
    assert verifier.stats.rejected == 1


async def test_es256_access_token_from_the_jwks(ctx: Ctx) -> None:
    token = ctx.access_token()

    user = await ctx.verifier(legacy_secret=False).verify_user_token(token)

    assert user == UserPrincipal(
        user_id=USER_ID,
        email="ada@example.com",
        role="authenticated",
        session_id=user.session_id,
        aal="aal1",
        is_anonymous=False,
        expires_at=NOW + 3600,
        access_token=token,
        authenticated_at=NOW,  # the token's amr: signed in with a password when it was issued
    )
    assert user.session_id is not None
    assert token not in repr(user)


async def test_hs256_legacy_token(ctx: Ctx) -> None:
    token = mint_legacy_access_token(
        JWT_SECRET,
        supabase_url=ctx.issuer.supabase_url,
        user_id=USER_ID,
        email=None,
        issued_at=NOW,
        is_anonymous=True,
    )

    user = await ctx.verifier().verify_user_token(token)

    assert (user.user_id, user.email, user.is_anonymous) == (USER_ID, None, True)
    assert ctx.issuer.jwks_requests == 0  # HS256 never touches the JWKS


async def test_hs256_legacy_token_carrying_a_kid(ctx: Ctx) -> None:
    token = mint_legacy_access_token(
        JWT_SECRET,
        supabase_url=ctx.issuer.supabase_url,
        user_id=USER_ID,
        email="ada@example.com",
        issued_at=NOW,
        kid="legacy-hs256",
    )

    user = await ctx.verifier().verify_user_token(token)

    assert user.user_id == USER_ID


async def test_hs256_without_supabase_url_skips_the_issuer_check() -> None:
    config = AuthConfig(jwt_secret=JWT_SECRET, internal_secret=INTERNAL_SECRET)
    claims = {
        "iss": "anything",
        "sub": str(USER_ID),
        "aud": "authenticated",
        "role": "authenticated",
        "iat": NOW,
        "exp": NOW + 60,
    }
    token = hs256({"alg": "HS256", "typ": "JWT"}, claims, JWT_SECRET.encode())

    user = await TokenVerifier(config, clock=lambda: NOW).verify_user_token(token)

    assert user.user_id == USER_ID


async def test_rs256_access_token_from_the_jwks(ctx: Ctx) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    ctx.issuer.extra_jwks.append({**jwk, "kid": "rsa-1", "alg": "RS256", "use": "sig"})
    token = jwt.encode(ctx.claims(), key, algorithm="RS256", headers={"kid": "rsa-1"})

    user = await ctx.verifier().verify_user_token(token)

    assert user.user_id == USER_ID


async def test_es256_token_cannot_use_an_rsa_kid(ctx: Ctx) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    ctx.issuer.extra_jwks.append({**jwk, "kid": "rsa-1"})
    token = ctx.es256(kid="rsa-1")

    with pytest.raises(Unauthorized) as caught:
        await ctx.verifier().verify_user_token(token)

    assert caught.value.code == "algorithm_mismatch"


@pytest.mark.parametrize(
    "bad_jwk",
    [
        pytest.param({"kty": "oct", "k": b64(JWT_SECRET.encode())}, id="symmetric"),
        pytest.param({"alg": "HS256"}, id="ec-claiming-hs256"),
        pytest.param({"use": "enc"}, id="encryption-key"),
        pytest.param({"crv": "P-384"}, id="other-curve"),
    ],
)
async def test_unusable_published_keys_are_never_used(ctx: Ctx, bad_jwk: dict[str, Any]) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(ECAlgorithm.to_jwk(other.public_key()))
    ctx.issuer.extra_jwks.append({**jwk, "kid": "odd", **bad_jwk})
    verifier = ctx.verifier()
    hs_token = hs256({"alg": "HS256", "kid": "odd"}, ctx.claims(), JWT_SECRET.encode())

    with pytest.raises(Unauthorized) as caught:
        await verifier.verify_user_token(ctx.es256(kid="odd"))

    assert caught.value.code == "unknown_key"
    assert (
        await verifier.verify_user_token(hs_token)
    ).user_id == USER_ID  # the secret, not the JWK


async def test_leeway_accepts_small_clock_skew(ctx: Ctx) -> None:
    token = ctx.access_token(iat=NOW + 14, nbf=NOW + 14, exp=NOW - 4 + 3600)
    ctx.clock.now = NOW + 5  # iat/nbf 9 s ahead: inside the 10 s leeway

    assert (await ctx.verifier().verify_user_token(token)).user_id == USER_ID


async def test_configured_anon_key_is_named(ctx: Ctx) -> None:
    anon = "opaque-anon-key-from-config"
    config = AuthConfig(
        supabase_url=ctx.issuer.supabase_url, internal_secret=INTERNAL_SECRET, anon_key=anon
    )

    with pytest.raises(Unauthorized) as caught:
        await TokenVerifier(config, ctx.session).verify_user_token(anon)

    assert caught.value.code == "anon_key"


async def test_mangled_tokens_only_ever_get_401s(ctx: Ctx) -> None:
    """Seeded mutations of real tokens: every outcome is a deliberate 401, none comes from
    the catch-all (which would mean a parser error slipped through)."""
    rnd = random.Random(20240601)
    verifier = ctx.verifier()
    originals = [ctx.access_token(), hs256({"alg": "HS256"}, ctx.claims(), JWT_SECRET.encode())]
    alphabet = "AZaz09-_.=+/ {}[]\"'\\\x00é"
    odd_values: list[object] = [None, True, -1, 1e300, 2**70, "x", [], {}, ["a"], "\udcff"]
    seen: set[str] = set()
    invalid_utf8 = b64(b'{"sub": "\xff\xfe", "role": "authenticated"}')

    with capture_logs() as logs:
        for i in range(1500):
            chars = list(originals[i % 2])
            for _ in range(rnd.randint(1, 4)):
                chars[rnd.randrange(len(chars))] = rnd.choice(alphabet)
            claims = {k: rnd.choice(odd_values) for k in ("exp", "iat", "sub", "aud", "role")}
            for token in (
                "".join(chars),
                hs256({"alg": "HS256"}, claims, JWT_SECRET.encode()),
                f"{b64(rnd.randbytes(20))}.{invalid_utf8}.{b64(b'x')}",
                f"{b64json({'alg': 'HS256'})}.{invalid_utf8}.{b64(rnd.randbytes(32))}",
            ):
                for verify in (verifier.verify_user_token, verifier.verify_service_token):
                    try:
                        await verify(token)
                    except Unauthorized as exc:
                        seen.add(exc.code)

    assert [e for e in logs if e["event"] == "token_verification_error"] == []
    assert {"malformed_token", "invalid_signature", "invalid_claims"} <= seen


@pytest.mark.parametrize(
    ("amr", "expected"),
    [
        ([{"method": "password", "timestamp": 1700000000}], 1700000000),
        (
            [
                {"method": "password", "timestamp": 1700000000},
                {"method": "otp", "timestamp": 1700000500},
            ],
            1700000500,
        ),
        (["pwd", "mfa"], None),  # RFC 8176 strings: no time in them
        ([{"method": "password", "timestamp": True}], None),
        ([{"method": "password"}], None),
        ("password", None),
        (None, None),
    ],
)
def test_the_sign_in_time_is_read_leniently_from_amr(amr: object, expected: int | None) -> None:
    assert authenticated_at(amr) == expected
