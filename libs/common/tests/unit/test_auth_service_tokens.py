"""Service tokens both ways, the Authorization header helper, and configuration refusals."""

from __future__ import annotations

import time
import uuid
from typing import Any

import aiohttp
import jwt
import pytest

from xtyl_common.auth import (
    AuthConfig,
    ServicePrincipal,
    TokenVerifier,
    bearer_token,
    issue_service_token,
)
from xtyl_common.errors import Unauthorized
from xtyl_devstack.issuer import mint_legacy_access_token

JWT_SECRET = "legacy-supabase-jwt-secret-0123456789abcdef"
INTERNAL_SECRET = "internal-service-secret-0123456789abcdefgh"
NOW = int(time.time())


def make_verifier(
    *, now: float = NOW, jwks_session: aiohttp.ClientSession | None = None
) -> TokenVerifier:
    """HS256 legacy secret; or, given a session, JWKS only (never reached by these tests)."""
    config = AuthConfig(
        jwt_secret=None if jwks_session else JWT_SECRET,
        supabase_url="https://project-ref.supabase.co" if jwks_session else None,
        internal_secret=INTERNAL_SECRET,
    )
    return TokenVerifier(config, jwks_session, clock=lambda: now)


async def test_service_token_round_trip() -> None:
    user_id = uuid.uuid4()
    token = issue_service_token(INTERNAL_SECRET, service="rag-worker", user_id=user_id, now=NOW)

    principal = await make_verifier().verify_service_token(token)

    assert principal == ServicePrincipal(service="rag-worker", expires_at=NOW + 60, user_id=user_id)


async def test_service_token_expires() -> None:
    token = issue_service_token(INTERNAL_SECRET, service="notify-worker", ttl_s=30, now=NOW)

    with pytest.raises(Unauthorized) as caught:
        await make_verifier(now=NOW + 41).verify_service_token(token)

    assert caught.value.code == "token_expired"


async def test_service_token_is_never_a_user_token() -> None:
    token = issue_service_token(INTERNAL_SECRET, service="gateway", now=NOW)

    with pytest.raises(Unauthorized) as caught:
        await make_verifier().verify_user_token(token)

    assert caught.value.code == "invalid_signature"


async def test_service_token_is_never_a_user_token_without_a_legacy_secret() -> None:
    token = issue_service_token(INTERNAL_SECRET, service="gateway", now=NOW)
    async with aiohttp.ClientSession() as session:
        verifier = make_verifier(jwks_session=session)

        with pytest.raises(Unauthorized) as caught:
            await verifier.verify_user_token(token)

    assert caught.value.code == "unsupported_algorithm"
    assert verifier.stats.jwks_fetches == 0


async def test_user_token_is_never_a_service_token() -> None:
    token = mint_legacy_access_token(
        JWT_SECRET,
        supabase_url="https://project-ref.supabase.co",
        user_id=uuid.uuid4(),
        email=None,
        issued_at=NOW,
    )

    with pytest.raises(Unauthorized) as caught:
        await make_verifier().verify_service_token(token)

    assert caught.value.code == "invalid_signature"


def _internal(claims: dict[str, Any], alg: str = "HS256") -> str:
    base = {"iss": "xtyl-internal", "aud": "xtyl-internal", "sub": "service:gateway"}
    base |= {"iat": NOW, "exp": NOW + 60}
    payload = {k: v for k, v in (base | claims).items() if v is not None}
    key = INTERNAL_SECRET * 2 if alg == "HS512" else INTERNAL_SECRET
    return jwt.encode(payload, key, algorithm=alg)


@pytest.mark.parametrize(
    ("token", "code"),
    [
        pytest.param(_internal({"aud": "authenticated"}), "invalid_audience", id="user-audience"),
        pytest.param(_internal({"aud": None}), "invalid_audience", id="no-audience"),
        pytest.param(
            _internal({"iss": "https://x.supabase.co/auth/v1"}), "invalid_issuer", id="iss"
        ),
        pytest.param(_internal({"sub": str(uuid.uuid4())}), "invalid_subject", id="user-sub"),
        pytest.param(_internal({"sub": "service:"}), "invalid_subject", id="empty-service"),
        pytest.param(_internal({"exp": NOW + 3600}), "invalid_lifetime", id="long-lived"),
        pytest.param(_internal({"user_id": "nope"}), "invalid_claims", id="bad-user-id"),
        pytest.param(_internal({}, alg="HS512"), "unsupported_algorithm", id="hs512"),
        pytest.param("x.y", "malformed_token", id="malformed"),
    ],
)
async def test_bad_service_tokens(token: str, code: str) -> None:
    with pytest.raises(Unauthorized) as caught:
        await make_verifier().verify_service_token(token)

    assert caught.value.code == code


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"service": "Gateway"}, id="uppercase"),
        pytest.param({"service": "a b"}, id="space"),
        pytest.param({"service": "gateway", "ttl_s": 301}, id="too-long"),
        pytest.param({"service": "gateway", "ttl_s": 0}, id="zero-ttl"),
    ],
)
def test_issue_service_token_refuses_bad_arguments(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"service|ttl"):
        issue_service_token(INTERNAL_SECRET, **kwargs)


def test_issue_service_token_refuses_a_short_secret() -> None:
    with pytest.raises(ValueError, match="at least 32"):
        issue_service_token("short", service="gateway")


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Bearer abc.def.ghi", "abc.def.ghi"),
        ("bearer abc.def.ghi", "abc.def.ghi"),
        ("  BEARER   abc.def.ghi  ", "abc.def.ghi"),
    ],
)
def test_bearer_token(header: str, expected: str) -> None:
    assert bearer_token(header) == expected


@pytest.mark.parametrize(
    ("header", "code"),
    [
        (None, "missing_token"),
        ("", "missing_token"),
        ("   ", "missing_token"),
        ("Basic dXNlcjpwYXNz", "malformed_authorization"),
        ("Bearer", "malformed_authorization"),
        ("Bearer a b", "malformed_authorization"),
        ("Bearer\tabc", "malformed_authorization"),
        ("abc.def.ghi", "malformed_authorization"),
    ],
)
def test_bad_authorization_header(header: str | None, code: str) -> None:
    with pytest.raises(Unauthorized) as caught:
        bearer_token(header)

    assert caught.value.code == code
    assert caught.value.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"internal_secret": INTERNAL_SECRET}, "supabase_url .* or jwt_secret"),
        ({"jwt_secret": JWT_SECRET, "internal_secret": JWT_SECRET}, "must differ"),
        ({"jwt_secret": "short", "internal_secret": INTERNAL_SECRET}, "jwt_secret must be"),
        ({"jwt_secret": JWT_SECRET, "internal_secret": "short"}, "internal_secret must be"),
        ({"jwt_secret": JWT_SECRET, "internal_secret": INTERNAL_SECRET, "leeway_s": 31}, "leeway"),
        ({"jwt_secret": JWT_SECRET, "internal_secret": INTERNAL_SECRET, "jwks_ttl_s": 601}, "ttl"),
        ({"supabase_url": "project-ref.supabase.co", "internal_secret": INTERNAL_SECRET}, "url"),
        (
            {"supabase_url": "https://u:p@x.supabase.co", "internal_secret": INTERNAL_SECRET},
            "credentials",
        ),
    ],
)
def test_bad_configuration_stops_start_up(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AuthConfig(**kwargs)


def test_configuration_does_not_print_secrets() -> None:
    config = AuthConfig(jwt_secret=JWT_SECRET, internal_secret=INTERNAL_SECRET)

    assert JWT_SECRET not in repr(config)
    assert INTERNAL_SECRET not in repr(config)


def test_issuer_and_jwks_url_come_from_the_project_url() -> None:
    config = AuthConfig(supabase_url="https://ref.supabase.co/", internal_secret=INTERNAL_SECRET)

    assert config.issuer == "https://ref.supabase.co/auth/v1"
    assert config.jwks_url == "https://ref.supabase.co/auth/v1/.well-known/jwks.json"
