"""Every malformed, forged or foreign token gets 401 problem JSON with a stable code.

Against a real gateway process that verifies ES256 tokens through the local issuer's JWKS (the
same path as production) and legacy HS256 tokens with the project secret.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization

from xtyl_devstack.issuer import LocalIssuer, mint_anon_key, mint_service_role_key
from xtyl_devstack.service_process import RunningService
from xtyl_devstack.testing import TEST_JWT_SECRET

pytestmark = pytest.mark.integration


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: Any, payload: Any, signature: bytes = b"sig") -> str:
    return ".".join(
        [b64(json.dumps(header).encode()), b64(json.dumps(payload).encode()), b64(signature)]
    )


@pytest.fixture(scope="module")
async def trap() -> AsyncIterator[tuple[str, list[str]]]:
    """A URL that records any fetch: tokens name it in jku/x5u, nothing may fetch it."""
    hits: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.json_response({"keys": []})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}/jwks.json", hits
    await runner.cleanup()


def cases(issuer: LocalIssuer, trap_url: str) -> dict[str, tuple[str, str]]:
    """name -> (token, expected code)."""
    user = str(uuid.uuid4())
    now = int(time.time())
    key = issuer.signing_key
    good = issuer.mint(user_id=user, email="a@example.com")
    header, payload, _ = good.split(".")
    claims = jwt.decode(good, options={"verify_signature": False})
    public_pem = key.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    public_jwk_text = json.dumps(key.public_jwk())

    def with_claims(**changes: Any) -> str:
        return issuer.mint(user_id=user, email="a@example.com", **changes)

    def hmac_with(secret: bytes) -> str:
        return forge_hmac({"alg": "HS256", "typ": "JWT", "kid": key.kid}, claims, secret)

    def forge_hmac(head: dict[str, Any], body: dict[str, Any], secret: bytes) -> str:
        import hashlib
        import hmac

        signing_input = f"{b64(json.dumps(head).encode())}.{b64(json.dumps(body).encode())}"
        mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        return f"{signing_input}.{b64(mac)}"

    def signed_headers(**extra: Any) -> str:
        return issuer.mint(user_id=user, email="a@example.com", headers=extra)

    no_sub = {k: v for k, v in claims.items() if k != "sub"}
    no_exp = {k: v for k, v in claims.items() if k != "exp"}
    return {
        "alg none": (forge({"alg": "none", "typ": "JWT"}, claims, b""), "alg_none"),
        "alg NoNe": (forge({"alg": "NoNe", "typ": "JWT"}, claims, b"x"), "alg_none"),
        "empty signature": (f"{header}.{payload}.", "missing_signature"),
        "HS256 keyed with the public key PEM": (hmac_with(public_pem), "invalid_signature"),
        "HS256 keyed with the public JWK text": (
            hmac_with(public_jwk_text.encode()),
            "invalid_signature",
        ),
        "unknown kid": (
            issuer.mint(user_id=user, headers={"kid": "not-a-known-kid"}),
            "unknown_key",
        ),
        "expired": (with_claims(issued_at=now - 7200, ttl_s=3600), "token_expired"),
        "nbf beyond leeway": (with_claims(nbf=now + 300), "token_not_yet_valid"),
        "iat beyond leeway": (with_claims(issued_at=now + 300), "token_not_yet_valid"),
        "wrong aud": (with_claims(aud="someone-else"), "invalid_audience"),
        "foreign iss": (with_claims(iss="https://evil.example.com/auth/v1"), "invalid_issuer"),
        "iss that only starts right": (
            with_claims(iss=issuer.supabase_url + "/auth/v1.evil.example.com"),
            "invalid_issuer",
        ),
        "missing sub": (
            jwt.encode(no_sub, key.private_key, "ES256", headers={"kid": key.kid}),
            "missing_claim",
        ),
        "missing exp": (
            jwt.encode(no_exp, key.private_key, "ES256", headers={"kid": key.kid}),
            "missing_claim",
        ),
        "sub not a uuid": (with_claims(sub="admin"), "invalid_subject"),
        "anon key": (mint_anon_key(TEST_JWT_SECRET), "anon_key"),
        "service-role key": (mint_service_role_key(TEST_JWT_SECRET), "service_role_key"),
        "two segments": (f"{header}.{payload}", "malformed_token"),
        "four segments": (good + ".extra", "malformed_token"),
        "bad base64": (f"{header}.{payload}.!!!***", "malformed_token"),
        "JSON array header": (forge([{"alg": "ES256"}], claims), "malformed_token"),
        "60 KB token": ("a" * 60_000, "token_too_large"),
        "jku header": (signed_headers(jku=trap_url), "forbidden_header"),
        "x5u header": (signed_headers(x5u=trap_url), "forbidden_header"),
        "jwk header": (signed_headers(jwk=key.public_jwk()), "forbidden_header"),
    }


CASE_NAMES = [
    "alg none",
    "alg NoNe",
    "empty signature",
    "HS256 keyed with the public key PEM",
    "HS256 keyed with the public JWK text",
    "unknown kid",
    "expired",
    "nbf beyond leeway",
    "iat beyond leeway",
    "wrong aud",
    "foreign iss",
    "iss that only starts right",
    "missing sub",
    "missing exp",
    "sub not a uuid",
    "anon key",
    "service-role key",
    "two segments",
    "four segments",
    "bad base64",
    "JSON array header",
    "60 KB token",
    "jku header",
    "x5u header",
    "jwk header",
]


@pytest.mark.parametrize("name", CASE_NAMES)
@pytest.mark.parametrize("path", ["/v1/me", "/v1/search"])
async def test_bad_token_is_401_problem(
    name: str,
    path: str,
    gateway: RunningService,
    issuer: LocalIssuer,
    trap: tuple[str, list[str]],
    http: aiohttp.ClientSession,
) -> None:
    trap_url, hits = trap
    token, code = cases(issuer, trap_url)[name]
    async with http.get(gateway.url + path, headers={"Authorization": f"Bearer {token}"}) as resp:
        body = await resp.json(content_type=None)
        assert resp.status == 401, body
        assert resp.headers["Content-Type"] == "application/problem+json"
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert body["code"] == code
    assert body["status"] == 401
    assert hits == [], "nothing may be fetched from a URL named in a token"


@pytest.mark.parametrize(
    ("header", "code"),
    [(None, "missing_token"), ("Basic dXNlcjpwYXNz", "malformed_authorization")],
)
async def test_missing_or_non_bearer_authorization(
    header: str | None, code: str, gateway: RunningService, http: aiohttp.ClientSession
) -> None:
    headers = {} if header is None else {"Authorization": header}
    async with http.get(gateway.url + "/v1/documents", headers=headers) as resp:
        assert resp.status == 401
        assert (await resp.json(content_type=None))["code"] == code


@pytest.mark.parametrize("kind", ["es256 via jwks", "legacy hs256"])
async def test_good_tokens_pass(
    kind: str, gateway: RunningService, issuer: LocalIssuer, http: aiohttp.ClientSession
) -> None:
    from xtyl_devstack.issuer import mint_legacy_access_token

    user = uuid.uuid4()
    mint: Callable[[], str] = (
        (lambda: issuer.mint(user_id=user, email="ok@example.com"))
        if kind == "es256 via jwks"
        else (
            lambda: mint_legacy_access_token(
                TEST_JWT_SECRET,
                supabase_url=issuer.supabase_url,
                user_id=user,
                email="ok@example.com",
            )
        )
    )
    async with http.get(
        gateway.url + "/v1/search", headers={"Authorization": f"Bearer {mint()}"}
    ) as resp:
        assert resp.status == 200
        assert resp.headers["X-Upstream"] == "fake"
