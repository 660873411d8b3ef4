"""A local Supabase Auth: GoTrue's HTTP API as supabase-js and supabase-py call it, for
``make up`` and tests. Never deployed.

    auth = LocalAuth(key_dir, database_url=..., config=load_config(path).for_local(...),
                     jwt_secret=...)
    async with auth:                       # http://127.0.0.1:<port>
        client = AsyncGoTrueClient(url=auth.supabase_url + "/auth/v1",
                                   headers={"apikey": auth.anon_key})

Routes under ``/auth/v1`` (each needs the ``apikey`` header, or ``?apikey=``, holding the
project's anon or service-role key, as Supabase's API gateway demands; the JWKS, ``/health``
and ``/verify`` do not): ``POST /signup``; ``POST /token?grant_type=password|refresh_token``;
``GET``/``PUT /user``; ``POST /logout?scope=global|local|others``; ``POST /recover``;
``POST``/``GET /verify``; ``GET /settings``; the service-role-only admin routes
(:mod:`.admin`); ``GET /.well-known/jwks.json``.

It behaves like Supabase Auth configured by ``supabase/config.toml`` (:mod:`.config`): users in
the embedded Postgres's ``auth.users`` (bcrypt ``encrypted_password``), so the gateway's
``handle_new_user`` trigger fires on sign-up; sessions, refresh tokens and sign-in methods
beside them (:mod:`.store`); ES256 access tokens with the claims Supabase puts in them;
refresh tokens that rotate, where a revoked one presented again after the reuse interval ends
its whole session; errors in GoTrue's shape and codes (:mod:`.errors`); confirmations,
password length, OTP length and expiry, email frequency and rate limits from the config; every
auth email through the Send Email Hook, called as Supabase calls it (:mod:`.hook`).
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import asyncpg
import jwt
from aiohttp import web

from xtyl_devstack.auth import store
from xtyl_devstack.auth.admin import EMAIL_EXISTS, AdminApi
from xtyl_devstack.auth.config import AuthConfig
from xtyl_devstack.auth.errors import API_VERSION_2024_01_01, API_VERSION_HEADER, AuthApiError
from xtyl_devstack.auth.inputs import (
    Handler,
    client_address,
    hash_password,
    metadata,
    password_matches,
    read_json,
    text,
)
from xtyl_devstack.auth.mail import EMAIL_CHANGE_PENDING, AuthMailer
from xtyl_devstack.auth.policy import (
    RateLimiter,
    check_password,
    checked_email,
    is_refresh_token,
    new_refresh_token,
    redirect_target,
)
from xtyl_devstack.auth.store import Conn
from xtyl_devstack.issuer import JWKS_PATH, LocalIssuer, mint_anon_key, mint_service_role_key

PREFIX = "/auth/v1"
HEALTH_PATH = PREFIX + "/health"
#: Open without an API key, as Supabase's API gateway leaves them (a link in an email is opened
#: by a browser that has no key).
_OPEN_PATHS = frozenset({JWKS_PATH, HEALTH_PATH, PREFIX + "/verify"})
_WINDOW_S = 300.0
_ADMIN_ROLES = frozenset({"service_role", "supabase_admin"})
_KEY_ROLES = frozenset({"anon", *_ADMIN_ROLES})
_NO_BEARER = "This endpoint requires a valid Bearer token"


@dataclass(frozen=True, slots=True)
class Caller:
    """The user behind a request's access token, and its session."""

    user: asyncpg.Record
    session_id: uuid.UUID | None
    claims: dict[str, Any]


class LocalAuth(LocalIssuer):
    """GoTrue's API on 127.0.0.1 over the embedded Postgres; ``port=0`` picks a free port."""

    what = "the local Auth signs anyone in: it"
    local_token_route = False

    def __init__(
        self,
        key_dir: Path,
        *,
        database_url: str,
        config: AuthConfig,
        jwt_secret: str,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(key_dir, host=host, port=port)
        self.config = config
        self.jwt_secret = jwt_secret
        self._database_url = database_url
        self._pool: asyncpg.Pool | None = None
        self._session: aiohttp.ClientSession | None = None
        self.limiter = RateLimiter()
        #: The project's API keys (long-lived HS256 JWTs, as Supabase's legacy keys).
        self.anon_key = mint_anon_key(jwt_secret)
        self.service_role_key = mint_service_role_key(jwt_secret)

    @property
    def api_url(self) -> str:
        """``<url>/auth/v1``: what supabase-py's ``AsyncGoTrueClient(url=...)`` takes."""
        return self.url + PREFIX

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("LocalAuth is not started")
        return self._pool

    @property
    def mailer(self) -> AuthMailer:
        assert self._session is not None
        return AuthMailer(self._session, self.config, external_url=self.api_url)

    async def make_app(self) -> web.Application:
        app = await super().make_app()
        self._pool = await asyncpg.create_pool(
            self._database_url, min_size=1, max_size=5, init=store.init_connection, timeout=10
        )
        try:
            await store.install_schema(self._pool)
        except BaseException:
            await self._pool.close()
            self._pool = None
            raise
        self._session = aiohttp.ClientSession()
        app.middlewares.append(self._middleware)
        routes = [
            ("GET", "/health", self._health),
            ("GET", "/settings", self._settings),
            ("POST", "/signup", self._signup),
            ("POST", "/token", self._token_grant),
            ("GET", "/user", self._get_user),
            ("PUT", "/user", self._put_user),
            ("POST", "/logout", self._logout),
            ("POST", "/recover", self._recover),
            ("POST", "/verify", self._verify_post),
            ("GET", "/verify", self._verify_get),
            *AdminApi(self).routes(),
        ]
        for method, path, handler in routes:
            app.router.add_route(method, PREFIX + path, handler)
        return app

    async def stop(self) -> None:
        await super().stop()
        session, self._session = self._session, None
        if session is not None:
            await session.close()
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    # --- the edge: API keys, errors -------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        version = request.headers.get(API_VERSION_HEADER)
        try:
            if request.path not in _OPEN_PATHS:
                self._check_api_key(request)
            response = await handler(request)
        except AuthApiError as exc:
            headers = {"x-sb-error-code": exc.code} if exc.code else {}
            if version is not None and version >= API_VERSION_2024_01_01:
                headers[API_VERSION_HEADER] = API_VERSION_2024_01_01
            return web.json_response(exc.body(version), status=exc.status, headers=headers)
        if version is not None and version >= API_VERSION_2024_01_01:
            response.headers[API_VERSION_HEADER] = API_VERSION_2024_01_01
        return response

    def _key_role(self, token: str) -> str | None:
        try:
            claims = jwt.decode(token, self.jwt_secret, algorithms=["HS256"])
        except jwt.PyJWTError:
            return None
        role = claims.get("role")
        return role if role in _KEY_ROLES and "sub" not in claims else None

    def _check_api_key(self, request: web.Request) -> None:
        key = request.headers.get("apikey") or request.query.get("apikey")
        if not key:
            raise _KongError("No API key found in request")
        if self._key_role(key) is None:
            raise _KongError("Invalid API key")

    # --- tokens and sessions --------------------------------------------------------------

    def _access_token(
        self, user: asyncpg.Record, session_id: uuid.UUID, methods: list[tuple[str, int]]
    ) -> tuple[str, int]:
        shown = store.user_json(user)
        token = self.mint(
            user_id=user["id"],
            email=user["email"],
            ttl_s=self.config.jwt_expiry_s,
            phone=user["phone"] or "",
            app_metadata=shown["app_metadata"],
            user_metadata=shown["user_metadata"],
            role=user["role"] or "authenticated",
            session_id=str(session_id),
            amr=[{"method": m, "timestamp": at} for m, at in methods],
            is_anonymous=bool(user["is_anonymous"]),
        )
        claims = jwt.decode(token, options={"verify_signature": False})
        return token, int(claims["exp"])

    async def _token_response(
        self, conn: Conn, user_id: uuid.UUID, session_id: uuid.UUID, refresh: str
    ) -> dict[str, Any]:
        user = await store.find_user(conn, user_id)
        assert user is not None
        methods = await store.session_methods(conn, session_id)
        access, expires_at = self._access_token(user, session_id, methods)
        return {
            "access_token": access,
            "token_type": "bearer",
            "expires_in": self.config.jwt_expiry_s,
            "expires_at": expires_at,
            "refresh_token": refresh,
            "user": store.user_json(user),
        }

    async def _sign_in(
        self, conn: Conn, request: web.Request, user_id: uuid.UUID, method: str
    ) -> dict[str, Any]:
        refresh = new_refresh_token()
        session_id = await store.create_session(
            conn,
            user_id=user_id,
            method=method,
            refresh_token=refresh,
            user_agent=request.headers.get("User-Agent"),
            ip=request.remote,
        )
        return await self._token_response(conn, user_id, session_id, refresh)

    async def _caller(self, request: web.Request) -> Caller:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthApiError(401, "no_authorization", _NO_BEARER)
        claims = self._verify_jwt(token.strip())
        try:
            user_id = uuid.UUID(str(claims.get("sub", "")))
        except ValueError:
            raise AuthApiError(403, "bad_jwt", "invalid claim: missing sub claim") from None
        async with self.pool.acquire() as conn:
            user = await store.find_user(conn, user_id)
            if user is None:
                raise AuthApiError(
                    403, "user_not_found", "User from sub claim in JWT does not exist"
                )
            session_id: uuid.UUID | None = None
            if claims.get("session_id"):
                session_id = uuid.UUID(str(claims["session_id"]))
                found = await conn.fetchval("select 1 from auth.sessions where id = $1", session_id)
                if found is None:
                    raise AuthApiError(
                        403,
                        "session_not_found",
                        "Session from session_id claim in JWT does not exist",
                    )
        return Caller(user=user, session_id=session_id, claims=claims)

    def _verify_jwt(self, token: str) -> dict[str, Any]:
        try:
            algorithm = jwt.get_unverified_header(token).get("alg")
            key: Any = (
                self.jwt_secret
                if algorithm == "HS256"
                else self.signing_key.private_key.public_key()
            )
            return jwt.decode(
                token, key, algorithms=["HS256", "ES256"], audience="authenticated", leeway=10
            )
        except jwt.ExpiredSignatureError:
            raise AuthApiError(403, "bad_jwt", "invalid JWT: token is expired") from None
        except jwt.PyJWTError as exc:
            raise AuthApiError(
                403, "bad_jwt", f"invalid JWT: unable to parse or verify signature, {exc}"
            ) from None

    def require_admin(self, request: web.Request) -> None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthApiError(401, "no_authorization", _NO_BEARER)
        if self._key_role(token.strip()) not in _ADMIN_ROLES:
            raise AuthApiError(403, "not_admin", "User not allowed")

    # --- public routes --------------------------------------------------------------------

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"version": "xtyl-local", "name": "GoTrue", "description": "local Supabase Auth"}
        )

    async def _settings(self, request: web.Request) -> web.Response:
        providers = ("anonymous_users", "apple", "azure", "github", "google", "phone", "saml")
        external: dict[str, bool] = dict.fromkeys(providers, False)
        external["email"] = True
        return web.json_response(
            {
                "external": external,
                "disable_signup": not self.config.enable_signup,
                "mailer_autoconfirm": not self.config.enable_confirmations,
                "phone_autoconfirm": False,
                "sms_provider": "",
                "saml_enabled": False,
            }
        )

    async def _signup(self, request: web.Request) -> web.Response:
        config = self.config
        self.limiter.check(
            "sign_in_sign_ups",
            client_address(request),
            config.rate_limits.sign_in_sign_ups,
            _WINDOW_S,
        )
        if not config.enable_signup:
            raise AuthApiError(422, "signup_disabled", "Signups not allowed for this instance")
        body = await read_json(request)
        password = text(body, "password")
        if not password:
            raise AuthApiError(422, "validation_failed", "Signup requires a valid password")
        check_password(password, config)
        if text(body, "phone") and not text(body, "email"):
            raise AuthApiError(400, "phone_provider_disabled", "Phone signups are disabled")
        email = checked_email(text(body, "email"))
        data = metadata(body, "data")
        encrypted = await asyncio.to_thread(hash_password, password)
        confirmed = not config.enable_confirmations
        async with self.pool.acquire() as conn, conn.transaction():
            await store.lock_email(conn, email)
            existing = await store.find_user_by_email(conn, email)
            if existing is not None:
                if confirmed or existing["email_confirmed_at"] is not None:
                    raise AuthApiError(422, "user_already_exists", "User already registered")
                return web.json_response(store.user_json(existing))
            user = await store.insert_user(
                conn,
                email=email,
                encrypted_password=encrypted,
                user_metadata=data,
                app_metadata={"provider": "email", "providers": ["email"]},
                confirmed=confirmed,
            )
            if confirmed:
                return web.json_response(await self._sign_in(conn, request, user["id"], "password"))
            user = await self.mailer.send(conn, request, user, "signup")
            return web.json_response(store.user_json(user))

    async def _token_grant(self, request: web.Request) -> web.Response:
        grant = request.query.get("grant_type", "")
        if grant == "password":
            return await self._password_grant(request)
        if grant == "refresh_token":
            return await self._refresh_grant(request)
        raise AuthApiError(400, "invalid_credentials", "unsupported_grant_type")

    async def _password_grant(self, request: web.Request) -> web.Response:
        self.limiter.check(
            "sign_in_sign_ups",
            client_address(request),
            self.config.rate_limits.sign_in_sign_ups,
            _WINDOW_S,
        )
        body = await read_json(request)
        email, password = text(body, "email"), text(body, "password")
        if not email:
            if text(body, "phone"):
                raise AuthApiError(422, "phone_provider_disabled", "Phone logins are disabled")
            raise AuthApiError(400, "validation_failed", "missing email or phone")
        async with self.pool.acquire() as conn:
            user = await store.find_user_by_email(conn, email)
        invalid = AuthApiError(400, "invalid_credentials", "Invalid login credentials")
        if user is None:
            raise invalid
        if not await asyncio.to_thread(password_matches, password, user["encrypted_password"]):
            raise invalid
        if user["banned_until"] is not None:
            async with self.pool.acquire() as conn:
                if await conn.fetchval("select $1 > now()", user["banned_until"]):
                    raise AuthApiError(400, "user_banned", "User is banned")
        if user["email_confirmed_at"] is None:
            raise AuthApiError(400, "email_not_confirmed", "Email not confirmed")
        async with self.pool.acquire() as conn, conn.transaction():
            return web.json_response(await self._sign_in(conn, request, user["id"], "password"))

    async def _refresh_grant(self, request: web.Request) -> web.Response:
        self.limiter.check(
            "token_refresh",
            client_address(request),
            self.config.rate_limits.token_refresh,
            _WINDOW_S,
        )
        token = text(await read_json(request), "refresh_token")
        if not token:
            raise AuthApiError(400, "validation_failed", "refresh_token required")
        if not is_refresh_token(token):
            raise AuthApiError(400, "validation_failed", "Refresh token is not valid")
        ended: AuthApiError | None = None
        answer: dict[str, Any] = {}
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "select rt.id, rt.token, rt.revoked, rt.parent, rt.session_id, rt.updated_at,"
                " s.user_id, now() > rt.updated_at + make_interval(secs => $2) as past_reuse"
                " from auth.refresh_tokens rt left join auth.sessions s on s.id = rt.session_id"
                " where rt.token = $1 for update of rt",
                token,
                float(self.config.refresh_token_reuse_interval_s),
            )
            if row is None:
                raise AuthApiError(
                    400,
                    "refresh_token_not_found",
                    "Invalid Refresh Token: Refresh Token Not Found",
                )
            if row["user_id"] is None:
                raise AuthApiError(
                    400, "session_not_found", "Invalid Refresh Token: No Valid Session Found"
                )
            session_id: uuid.UUID = row["session_id"]
            user_id: uuid.UUID = row["user_id"]
            await conn.execute("select 1 from auth.sessions where id = $1 for update", session_id)
            issued: str | None = None
            if row["revoked"]:
                active = await conn.fetchrow(
                    "select token, parent from auth.refresh_tokens"
                    " where session_id = $1 and revoked is false order by id desc limit 1",
                    session_id,
                )
                if active is not None and active["parent"] == token:
                    issued = str(active["token"])  # the client lost the answer: same again
                elif row["past_reuse"] and self.config.refresh_token_rotation:
                    # a token reused after its rotation: someone else has it; end the session
                    await conn.execute("delete from auth.sessions where id = $1", session_id)
                    ended = AuthApiError(
                        400, "refresh_token_already_used", "Invalid Refresh Token: Already Used"
                    )
            if ended is None:
                if issued is None:
                    issued = new_refresh_token()
                    await conn.execute(
                        "update auth.refresh_tokens set revoked = true, updated_at = now()"
                        " where id = $1",
                        row["id"],
                    )
                    await store.insert_refresh_token(
                        conn, user_id, session_id, issued, parent=token
                    )
                await conn.execute(
                    "update auth.sessions set refreshed_at = now() at time zone 'utc',"
                    " updated_at = now() where id = $1",
                    session_id,
                )
                answer = await self._token_response(conn, user_id, session_id, issued)
        if ended is not None:
            raise ended
        return web.json_response(answer)

    async def _get_user(self, request: web.Request) -> web.Response:
        caller = await self._caller(request)
        return web.json_response(store.user_json(caller.user))

    async def _put_user(self, request: web.Request) -> web.Response:
        caller = await self._caller(request)
        body = await read_json(request)
        user = caller.user
        password = body.get("password")
        async with self.pool.acquire() as conn, conn.transaction():
            if isinstance(password, str) and password:
                check_password(password, self.config)
                if await asyncio.to_thread(password_matches, password, user["encrypted_password"]):
                    raise AuthApiError(
                        422,
                        "same_password",
                        "New password should be different from the old password.",
                    )
                encrypted = await asyncio.to_thread(hash_password, password)
                await conn.execute(
                    "update auth.users set encrypted_password = $2, updated_at = now()"
                    " where id = $1",
                    user["id"],
                    encrypted,
                )
            data = body.get("data")
            if isinstance(data, dict):
                await store.merge_user_metadata(conn, user["id"], data)  # pyright: ignore[reportUnknownArgumentType]
            new_email = text(body, "email")
            if new_email and new_email.lower() != (user["email"] or "").lower():
                new_email = checked_email(new_email)
                if await store.find_user_by_email(conn, new_email) is not None:
                    raise AuthApiError(
                        422,
                        "email_exists",
                        EMAIL_EXISTS,
                    )
                fresh = await store.find_user(conn, user["id"])
                assert fresh is not None
                await self.mailer.send_email_change(conn, request, fresh, new_email)
            updated = await store.find_user(conn, user["id"])
        assert updated is not None
        return web.json_response(store.user_json(updated))

    async def _logout(self, request: web.Request) -> web.Response:
        caller = await self._caller(request)
        scope = request.query.get("scope", "global")
        if scope not in ("global", "local", "others"):
            raise AuthApiError(
                400,
                "validation_failed",
                "Unsupported logout scope, must be global, local or others",
            )
        async with self.pool.acquire() as conn:
            if scope == "local" and caller.session_id is not None:
                await conn.execute("delete from auth.sessions where id = $1", caller.session_id)
            elif scope == "others":
                await conn.execute(
                    "delete from auth.sessions where user_id = $1 and id is distinct from $2",
                    caller.user["id"],
                    caller.session_id,
                )
            else:
                await conn.execute(
                    "delete from auth.sessions where user_id = $1", caller.user["id"]
                )
        return web.Response(status=204)

    async def _recover(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        email = checked_email(text(body, "email"))
        async with self.pool.acquire() as conn, conn.transaction():
            user = await store.find_user_by_email(conn, email)
            if user is not None:
                await self.mailer.send(conn, request, user, "recovery")
        return web.json_response({})

    async def _verify_post(self, request: web.Request) -> web.Response:
        self.limiter.check(
            "token_verifications",
            client_address(request),
            self.config.rate_limits.token_verifications,
            _WINDOW_S,
        )
        body = await read_json(request)
        async with self.pool.acquire() as conn, conn.transaction():
            verified = await self.mailer.verify(
                conn,
                kind=text(body, "type"),
                email=text(body, "email"),
                token=text(body, "token"),
                token_hash=text(body, "token_hash"),
            )
            if verified is None:
                return web.json_response({"msg": EMAIL_CHANGE_PENDING, "code": "200"})
            user_id, method = verified
            return web.json_response(await self._sign_in(conn, request, user_id, method))

    async def _verify_get(self, request: web.Request) -> web.Response:
        self.limiter.check(
            "token_verifications",
            client_address(request),
            self.config.rate_limits.token_verifications,
            _WINDOW_S,
        )
        kind = request.query.get("type", "")
        target = redirect_target(request.query.get("redirect_to"), self.config)
        session: dict[str, Any] | None = None
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                verified = await self.mailer.verify(
                    conn, kind=kind, email="", token="", token_hash=request.query.get("token", "")
                )
                if verified is not None:
                    user_id, method = verified
                    session = await self._sign_in(conn, request, user_id, method)
        except AuthApiError as exc:
            fragment = {
                "error": "access_denied",
                "error_code": exc.code,
                "error_description": "Email link is invalid or has expired",
            }
            raise web.HTTPSeeOther(f"{target}#{urlencode(fragment)}") from None
        if session is None:  # one address of an email change confirmed (committed), not both
            raise web.HTTPSeeOther(f"{target}#{urlencode({'message': EMAIL_CHANGE_PENDING})}")
        fragment = {
            "access_token": session["access_token"],
            "expires_at": str(session["expires_at"]),
            "expires_in": str(session["expires_in"]),
            "refresh_token": session["refresh_token"],
            "token_type": "bearer",
            "type": kind,
        }
        raise web.HTTPSeeOther(f"{target}#{urlencode(fragment)}")


class _KongError(AuthApiError):
    """Supabase's API gateway refusing a request without a valid ``apikey``."""

    def __init__(self, message: str) -> None:
        super().__init__(401, "", message)

    def body(self, api_version: str | None) -> dict[str, Any]:
        return {
            "message": self.message,
            "hint": "Double check your Supabase `anon` or `service_role` API key.",
        }
