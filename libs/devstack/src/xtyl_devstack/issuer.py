"""A local stand-in for Supabase Auth's token side: an ES256 key, a JWKS, and tokens shaped
exactly like Supabase's access tokens. For tests only (tokens for any user, no sign-in); never
deployed. ``make up`` runs the local Auth (:mod:`xtyl_devstack.auth`), which builds on it.

    issuer = LocalIssuer(Path(".data/auth"))
    await issuer.start()                       # http://127.0.0.1:<port>
    config = AuthConfig(supabase_url=issuer.supabase_url, internal_secret=...)
    token = issuer.mint(user_id=uuid.uuid4(), email="a@example.com")
    await issuer.stop()

HTTP (loopback only):
    GET  /auth/v1/.well-known/jwks.json   the public key
    POST /auth/v1/local/token             {"sub": "<uuid>", "email": "..."} -> {"access_token": ...}

Like the other stand-ins it checks what it receives and keeps a record tests can read:
``jwks_requests`` counts JWKS fetches, ``unexpected_requests`` lists every JWKS request that is
not what Supabase's endpoint expects (a GET with no query, body or credentials), and
``jwks_mode`` switches the endpoint to ``"fail"`` (503) or ``"hang"`` (never answers) to play an
outage. ``extra_jwks`` publishes more public keys (rotation, RS256).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import jwt
import msgspec
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from xtyl_devstack.loopback import LoopbackServer, serve_until_signal

KEY_FILE = "local-issuer-es256.jwk.json"
JWKS_PATH = "/auth/v1/.well-known/jwks.json"
TOKEN_PATH = "/auth/v1/local/token"  # noqa: S105 - a URL path
DEFAULT_TTL_S = 3600
API_KEY_TTL_S = 10 * 365 * 86_400
MAX_LOCAL_TTL_S = 7 * 86_400


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    private_key: ec.EllipticCurvePrivateKey

    def public_jwk(self) -> dict[str, Any]:
        """The public half, in the shape Supabase publishes."""
        jwk: dict[str, Any] = json.loads(ECAlgorithm.to_jwk(self.private_key.public_key()))
        return {
            "alg": "ES256",
            "crv": jwk["crv"],
            "ext": True,
            "key_ops": ["verify"],
            "kid": self.kid,
            "kty": "EC",
            "use": "sig",
            "x": jwk["x"],
            "y": jwk["y"],
        }


def load_or_create_signing_key(directory: Path) -> SigningKey:
    """The issuer's key from ``directory``, created on first use (mode 0600) and reused after.

    Safe when several processes (pytest-xdist workers) race to create it: one wins, all read it.
    """
    path = directory / KEY_FILE
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        jwk: dict[str, Any] = json.loads(ECAlgorithm.to_jwk(key))
        jwk.update({"kid": str(uuid.uuid4()), "alg": "ES256", "use": "sig"})
        tmp = directory / f".{KEY_FILE}.{os.getpid()}.{uuid.uuid4().hex}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as file:
            json.dump(jwk, file)
        try:
            os.link(tmp, path)  # atomic, and fails if another process got there first
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    jwk = json.loads(path.read_text())
    private_key = ECAlgorithm.from_jwk(jwk)
    if not isinstance(private_key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{path} does not hold an EC private key")
    return SigningKey(kid=str(jwk["kid"]), private_key=private_key)


def _apply(claims: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Overrides replace claims; an override of None removes the claim."""
    for name, value in overrides.items():
        if value is None:
            claims.pop(name, None)
        else:
            claims[name] = value
    return claims


def supabase_claims(
    *,
    supabase_url: str,
    user_id: uuid.UUID | str,
    email: str | None,
    ttl_s: int = DEFAULT_TTL_S,
    issued_at: int | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """The claims of a Supabase access token for an email/password user."""
    iat = int(time.time()) if issued_at is None else issued_at
    claims: dict[str, Any] = {
        "iss": supabase_url.rstrip("/") + "/auth/v1",
        "sub": str(user_id),
        "aud": "authenticated",
        "exp": iat + ttl_s,
        "iat": iat,
        "email": email or "",
        "phone": "",
        "app_metadata": {"provider": "email", "providers": ["email"]},
        "user_metadata": {
            "email": email or "",
            "email_verified": True,
            "phone_verified": False,
            "sub": str(user_id),
        },
        "role": "authenticated",
        "aal": "aal1",
        "amr": [{"method": "password", "timestamp": iat}],
        "session_id": str(uuid.uuid4()),
        "is_anonymous": False,
    }
    return _apply(claims, overrides)


def mint_access_token(
    private_key: ec.EllipticCurvePrivateKey,
    kid: str,
    *,
    supabase_url: str,
    user_id: uuid.UUID | str,
    email: str | None,
    ttl_s: int = DEFAULT_TTL_S,
    issued_at: int | None = None,
    headers: dict[str, Any] | None = None,
    **overrides: Any,
) -> str:
    """An ES256 access token as Supabase signs it with an asymmetric key (header alg, kid, typ).

    ``overrides`` replace claims (None removes one); ``headers`` adds or replaces header fields.
    """
    claims = supabase_claims(
        supabase_url=supabase_url,
        user_id=user_id,
        email=email,
        ttl_s=ttl_s,
        issued_at=issued_at,
        **overrides,
    )
    return jwt.encode(
        claims,
        private_key,
        algorithm="ES256",
        headers={"kid": kid, "typ": "JWT", **(headers or {})},
    )


def mint_legacy_access_token(
    jwt_secret: str,
    *,
    supabase_url: str,
    user_id: uuid.UUID | str,
    email: str | None,
    ttl_s: int = DEFAULT_TTL_S,
    issued_at: int | None = None,
    kid: str | None = None,
    **overrides: Any,
) -> str:
    """An HS256 access token as Supabase signs it with the legacy JWT secret."""
    claims = supabase_claims(
        supabase_url=supabase_url,
        user_id=user_id,
        email=email,
        ttl_s=ttl_s,
        issued_at=issued_at,
        **overrides,
    )
    headers: dict[str, Any] = {"typ": "JWT"} if kid is None else {"typ": "JWT", "kid": kid}
    return jwt.encode(claims, jwt_secret, algorithm="HS256", headers=headers)


def _api_key(jwt_secret: str, role: str, project_ref: str, issued_at: int | None) -> str:
    iat = int(time.time()) if issued_at is None else issued_at
    claims = {"iss": "supabase", "ref": project_ref, "role": role, "iat": iat}
    claims["exp"] = iat + API_KEY_TTL_S
    return jwt.encode(claims, jwt_secret, algorithm="HS256", headers={"typ": "JWT"})


def mint_anon_key(
    jwt_secret: str, *, project_ref: str = "local", issued_at: int | None = None
) -> str:
    """A legacy anon key: an HS256 JWT with ``role: anon`` and no ``sub``."""
    return _api_key(jwt_secret, "anon", project_ref, issued_at)


def mint_service_role_key(
    jwt_secret: str, *, project_ref: str = "local", issued_at: int | None = None
) -> str:
    """A legacy service-role key: an HS256 JWT with ``role: service_role`` and no ``sub``."""
    return _api_key(jwt_secret, "service_role", project_ref, issued_at)


class TokenRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    sub: uuid.UUID
    email: str | None = None
    ttl_s: int = DEFAULT_TTL_S


_token_request = msgspec.json.Decoder(TokenRequest)


JwksMode = Literal["ok", "fail", "hang"]
_CREDENTIAL_HEADERS = ("Authorization", "apikey", "Cookie")


class LocalIssuer(LoopbackServer):
    """The JWKS and token endpoint on 127.0.0.1; ``port=0`` picks a free port."""

    what = "the local issuer mints tokens for anyone: it"
    #: ``POST /auth/v1/local/token`` (tokens for anyone); the local Auth has real sign-ins.
    local_token_route = True

    def __init__(self, key_dir: Path, *, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host=host, port=port)
        self._key_dir = key_dir
        self._key: SigningKey | None = None
        self._release = asyncio.Event()
        self._requested = asyncio.Event()
        self.jwks_mode: JwksMode = "ok"
        self.jwks_requests = 0
        self.unexpected_requests: list[str] = []
        self.extra_jwks: list[dict[str, Any]] = []

    @property
    def signing_key(self) -> SigningKey:
        if self._key is None:
            raise RuntimeError("LocalIssuer is not started")
        return self._key

    @property
    def supabase_url(self) -> str:
        """What ``SUPABASE_URL`` is for the services: tokens' ``iss`` is this + ``/auth/v1``."""
        return self.url

    @property
    def jwks_url(self) -> str:
        return self.url + JWKS_PATH

    def mint(
        self,
        *,
        user_id: uuid.UUID | str,
        email: str | None = None,
        ttl_s: int = DEFAULT_TTL_S,
        **overrides: Any,
    ) -> str:
        key = self.signing_key
        return mint_access_token(
            key.private_key,
            key.kid,
            supabase_url=self.supabase_url,
            user_id=user_id,
            email=email,
            ttl_s=ttl_s,
            **overrides,
        )

    async def make_app(self) -> web.Application:
        self._key = await asyncio.to_thread(load_or_create_signing_key, self._key_dir)
        app = web.Application()
        app.router.add_get(JWKS_PATH, self._jwks, allow_head=False)
        if self.local_token_route:
            app.router.add_post(TOKEN_PATH, self._token)
        return app

    async def wait_for_jwks_requests(self, count: int = 1) -> None:
        """Return once the JWKS endpoint has been asked ``count`` times in all."""
        while self.jwks_requests < count:
            self._requested.clear()
            await self._requested.wait()

    def release_hung_requests(self) -> None:
        """Let requests held by ``jwks_mode = "hang"`` go (they get a 503)."""
        self._release.set()
        self._release = asyncio.Event()

    async def stop(self) -> None:
        self.release_hung_requests()
        await super().stop()

    async def _jwks(self, request: web.Request) -> web.Response:
        self.jwks_requests += 1
        self._requested.set()
        problems = [f"header {name}" for name in _CREDENTIAL_HEADERS if name in request.headers]
        if request.query_string:
            problems.append("query string")
        if request.body_exists:
            problems.append("request body")
        if problems:
            self.unexpected_requests.append(f"GET {request.path_qs}: {', '.join(problems)}")
            return web.json_response({"code": "bad_request"}, status=400)
        if self.jwks_mode == "hang":
            await self._release.wait()
        if self.jwks_mode != "ok":
            return web.json_response({"code": "unavailable"}, status=503)
        return web.json_response(
            {"keys": [self.signing_key.public_jwk(), *self.extra_jwks]},
            headers={"Cache-Control": "public, max-age=600"},
        )

    async def _token(self, request: web.Request) -> web.Response:
        try:
            body = _token_request.decode(await request.read())
        except msgspec.MsgspecError as exc:
            return _invalid(str(exc))
        if not 0 < body.ttl_s <= MAX_LOCAL_TTL_S:
            return _invalid(f"ttl_s must be in (0, {MAX_LOCAL_TTL_S}]")
        issued_at = int(time.time())
        token = self.mint(user_id=body.sub, email=body.email, ttl_s=body.ttl_s, issued_at=issued_at)
        return web.json_response(
            {
                "access_token": token,
                "token_type": "bearer",
                "expires_in": body.ttl_s,
                "expires_at": issued_at + body.ttl_s,
            }
        )


def _invalid(detail: str) -> web.Response:
    expected = 'body must be {"sub": "<uuid>", "email": "..."}'
    return web.json_response(
        {"code": "invalid_input", "detail": f"{expected}: {detail}"}, status=422
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m xtyl_devstack.issuer --key-dir DIR --port PORT``: serve until SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m xtyl_devstack.issuer")
    parser.add_argument("--key-dir", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    issuer = LocalIssuer(args.key_dir, port=args.port)
    asyncio.run(
        serve_until_signal(issuer, lambda: f"local Supabase issuer: JWKS at {issuer.jwks_url}")
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
