"""What the gateway does, whatever carries the request: the use cases behind ``routes/``, and
:func:`open_service`, the one place that builds the gateway and its adapters.

Every request with a user behind it goes through :meth:`GatewayService.admit_user` before
anything else: the bearer token verified, then the user's rate limits (every route's, and the
route's own tighter one). The proxied routes and ``GET /v1/me`` take that one path. Anonymous
routes (the webhooks, whose services check their own credential) are limited per client
address instead (:meth:`GatewayService.admit_address`).

A proxied request then: the route picked from the allow-list of public prefixes and its path
checked (:mod:`xtyl_gateway.domain.routing`), the caller's requests in flight capped
(:mod:`xtyl_gateway.domain.admission`), the headers that cross chosen and the body's framing
checked, and the exchange handed to the upstream client (:mod:`xtyl_gateway.adapters.upstream`).

The rate limiter fails open: while Redis cannot answer, requests pass unlimited (logged at most
once a second, ``/readyz`` says ``redis`` is degraded), so a Redis outage never takes the API
down with it. Each request's decision is counted: allowed, limited or failed open
(``xtyl_gateway_rate_limit_decisions_total``).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime

import msgspec
import structlog

from xtyl_common.auth import TokenVerifier, UserPrincipal, bearer_token
from xtyl_common.auth.metrics import TokenMetrics
from xtyl_common.context import current_request_id
from xtyl_common.db import DatabaseConfig, check_postgres, create_pool
from xtyl_common.erasure import ErasureState
from xtyl_common.errors import (
    ClientError,
    Forbidden,
    NotFound,
    RateLimited,
    TimedOut,
    Unavailable,
    XtylError,
)
from xtyl_common.events import EventSettings, OutboxRelay
from xtyl_common.health import Readiness
from xtyl_common.http import HttpConfig, create_session
from xtyl_common.quotas import QuotaUse
from xtyl_common.redis_client import create_redis
from xtyl_gateway.adapters.auth_admin import AuthAdmin
from xtyl_gateway.adapters.event_sources import EVENT_SOURCES, OUTBOX_SCHEMA
from xtyl_gateway.adapters.metrics import RATE_LIMIT, RATE_LIMIT_DECISIONS
from xtyl_gateway.adapters.ratelimit import Limit, RateLimiter
from xtyl_gateway.adapters.service_calls import NotServed, ServiceCalls
from xtyl_gateway.adapters.service_documents import ServiceDocuments
from xtyl_gateway.adapters.upstream import ProxyConfig, UpstreamClient
from xtyl_gateway.adapters.users import UserRepository
from xtyl_gateway.domain.account import (
    ERASING_SERVICES,
    EXPORT_README,
    TEXT_SLICE,
    DeletionProgress,
    ExportFile,
    ExportManifest,
    Usage,
    merge_usage,
    record_id,
    split_document,
)
from xtyl_gateway.domain.admission import InFlightLimit
from xtyl_gateway.domain.archive import DEFLATED, ZipStream, safe_name
from xtyl_gateway.domain.exchange import ClientConnection, IncomingRequest
from xtyl_gateway.domain.openapi import JsonObject, merge_public_api
from xtyl_gateway.domain.routing import (
    EXPORT_PATH,
    ME_PATH,
    BadRequestFraming,
    is_suspect_path,
    is_under,
    match_route,
    upstream_request_headers,
)
from xtyl_gateway.domain.users import UserProfile
from xtyl_gateway.settings import GatewaySettings

log = structlog.stdlib.get_logger("xtyl.gateway.edge")

#: How long the merged public API document is served before it is fetched again.
DOCUMENT_TTL_S = 60.0
#: A document missing a service counts as this much younger than that: refetched within 5 s.
PARTIAL_DOCUMENT_TTL_S = 5.0


class GatewayService:
    """What every public request goes through: the token, the caller's limits, the upstream."""

    def __init__(
        self,
        *,
        verifier: TokenVerifier,
        limiter: RateLimiter,
        upstreams: UpstreamClient,
        users: UserRepository,
        documents: ServiceDocuments,
        default_limit: Limit,
        route_limits: dict[str, Limit],
        in_flight: InFlightLimit,
        auth_admin: AuthAdmin,
        calls: ServiceCalls,
        deletion_max_auth_age_s: int = 900,
    ) -> None:
        self._verifier = verifier
        self._limiter = limiter
        self._upstreams = upstreams
        self._users = users
        self._documents = documents
        self._default_limit = default_limit
        self._route_limits = route_limits
        self._in_flight = in_flight
        self._auth_admin = auth_admin
        self._calls = calls
        self._deletion_max_auth_age_s = deletion_max_auth_age_s
        self._limiter_down_logged = 0.0
        self._decisions = {
            decision: RATE_LIMIT.labels(decision) for decision in RATE_LIMIT_DECISIONS
        }
        self._document: tuple[float, bytes] | None = None  # (fetched at, merged document)
        self._document_lock = asyncio.Lock()

    # -- who is calling, and may they -------------------------------------------------------

    async def authenticate(self, authorization: str | None) -> UserPrincipal:
        """The user whose Supabase access token ``authorization`` (the header) carries; 401
        problems with a stable code for anything else."""
        user = await self._verifier.verify_user_token(bearer_token(authorization))
        structlog.contextvars.bind_contextvars(user_id=str(user.user_id))
        return user

    async def admit_user(self, authorization: str | None, route_prefix: str) -> UserPrincipal:
        """The caller, authenticated and counted against their limits for ``route_prefix``:
        every route with a user behind it, proxied or ``GET /v1/me``, comes through here."""
        user = await self.authenticate(authorization)
        await self._limit(str(user.user_id), route_prefix)
        return user

    async def admit_address(self, client_host: str | None, route_prefix: str) -> str:
        """An anonymous caller, counted against the limits of its address; the subject."""
        subject = f"ip:{client_host}"
        await self._limit(subject, route_prefix)
        return subject

    async def _limit(self, subject: str, route_prefix: str) -> None:
        limits = [self._default_limit]
        tighter = self._route_limits.get(route_prefix)
        if tighter is not None:
            limits.append(tighter)
        for limit in limits:
            try:
                decision = await self._limiter.hit(subject, limit)
            except (Unavailable, TimedOut) as exc:
                # Fail open: a Redis outage must not take the whole API down with it (readyz
                # reports Redis degraded meanwhile; the outage is logged at most once a second).
                self._decisions["failed_open"].inc()
                self._log_limiter_down(exc)
                return
            if not decision.allowed:
                self._decisions["limited"].inc()
                raise RateLimited(decision.retry_after_s)
        self._decisions["allowed"].inc()

    def _log_limiter_down(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._limiter_down_logged >= 1.0:
            self._limiter_down_logged = now
            log.warning("rate_limit_skipped", reason=str(exc))

    # -- the use cases ----------------------------------------------------------------------

    async def forward(
        self, prefix: str, request: IncomingRequest, client: ClientConnection
    ) -> None:
        """``request``, which arrived under the public ``prefix``, to the service that owns
        it; the service's answer streams to ``client``."""
        # The server's mounts match by string prefix: /v1/files also catches /v1/filesystem.
        # A mount may also catch a more specific public prefix below its own
        # (/v1/notifications catches /v1/notifications/unsubscribe): the route decides.
        route = match_route(request.path)
        if route is None or not is_under(route.prefix, prefix) or is_suspect_path(request.path):
            raise NotFound()
        if route.anonymous:
            subject = await self.admit_address(request.client_host, route.prefix)
        else:
            subject = str((await self.admit_user(request.authorization, route.prefix)).user_id)
        with self._in_flight.hold(subject):
            extra = [
                (b"x-request-id", (current_request_id() or "").encode()),
                (b"x-forwarded-proto", request.scheme.encode()),
            ]
            if request.client_host is not None:
                extra.append((b"x-forwarded-for", request.client_host.encode()))
            try:
                forwarded = upstream_request_headers(request.headers, extra)
            except BadRequestFraming as exc:
                raise ClientError(str(exc), code=exc.code) from None
            await self._upstreams.forward(route.upstream, request, forwarded, client)

    async def me(self, authorization: str | None) -> UserProfile:
        """``GET /v1/me``: the caller's own profile, admitted like every other request."""
        user = await self.admit_user(authorization, ME_PATH)
        found = await self._users.get(user.user_id)
        if found is None:
            raise NotFound(
                "no profile for this user yet: public.users is filled by the auth.users trigger",
                code="user_not_found",
            )
        return found

    # -- the account: deletion, usage, export ---------------------------------------------

    async def delete_me(self, authorization: str | None) -> uuid.UUID:
        """``DELETE /v1/me``: delete the caller from Supabase Auth. The ``auth.users`` trigger
        records it and writes ``user.deleted``; each service then erases what it holds.
        Asking again (or after the deletion) is no error."""
        user = await self.admit_user(authorization, ME_PATH)
        self._check_recent_sign_in(user)
        if await self._users.deleted_at(user.user_id) is None:
            deleted = await self._auth_admin.delete_user(user.user_id)
            if not deleted and await self._users.deleted_at(user.user_id) is None:
                raise NotFound("Supabase Auth has no such user", code="user_not_found")
            log.info("account_deletion_requested", deleted_now=deleted)
        return user.user_id

    def _check_recent_sign_in(self, user: UserPrincipal) -> None:
        """A deletion needs a recent sign-in (``ACCOUNT_DELETION_MAX_AUTH_AGE_S``), not just
        a valid token: a token taken from a browser, or a session kept for weeks, cannot
        delete the account."""
        max_age = self._deletion_max_auth_age_s
        if max_age <= 0:
            return
        signed_in = user.authenticated_at
        if signed_in is None or time.time() - signed_in > max_age:
            raise Forbidden(
                f"sign in again to delete your account (a sign-in within {max_age} s is needed)",
                code="reauthentication_required",
            )

    async def deletion(self, authorization: str | None) -> DeletionProgress:
        """``GET /v1/me/deletion``: when the deletion was asked, and each service's erasure."""
        user = await self.admit_user(authorization, ME_PATH)
        requested_at = await self._users.deleted_at(user.user_id)
        if requested_at is None:
            raise NotFound("this account has not been deleted", code="deletion_not_requested")
        states = await asyncio.gather(
            *(self._erasure_of(name, user.user_id) for name in ERASING_SERVICES)
        )
        return DeletionProgress.of(
            user.user_id, requested_at, dict(zip(ERASING_SERVICES, states, strict=True))
        )

    async def _erasure_of(self, service: str, user_id: uuid.UUID) -> ErasureState | None:
        try:
            answer = await self._calls.get_json(service, "/internal/me/erasure", user_id)
            return msgspec.convert(answer, ErasureState)
        except (XtylError, NotServed, msgspec.ValidationError) as exc:
            log.warning("erasure_state_unknown", service=service, error=str(exc))
            return None

    async def usage(self, authorization: str | None) -> Usage:
        """``GET /v1/me/usage``: the caller's use of every quota, from the services that
        enforce them (a service without quotas answers 404 and is left out)."""
        user = await self.admit_user(authorization, ME_PATH)
        names = self._calls.names
        answers = await asyncio.gather(*(self._usage_of(n, user.user_id) for n in names))
        return merge_usage(
            {n: a for n, a in zip(names, answers, strict=True) if not isinstance(a, _NoQuotas)}
        )

    async def _usage_of(
        self, service: str, user_id: uuid.UUID
    ) -> dict[str, QuotaUse] | _NoQuotas | None:
        try:
            answer = await self._calls.get_json(service, "/internal/me/usage", user_id)
            return msgspec.convert(answer, dict[str, QuotaUse])
        except NotServed:
            return _NO_QUOTAS
        except (XtylError, msgspec.ValidationError) as exc:
            log.warning("usage_unknown", service=service, error=str(exc))
            return None

    async def export(self, authorization: str | None) -> AsyncIterator[bytes]:
        """``GET /v1/me/export``: admit the caller (one export at a time, its own rate-limit
        bucket) and check there is a profile, before anything is sent; then the archive's
        bytes as they are made (:meth:`_archive`)."""
        user = await self.admit_user(authorization, EXPORT_PATH)
        profile = await self._users.get(user.user_id)
        if profile is None:
            raise NotFound("no profile for this user", code="user_not_found")
        release = self._in_flight.acquire(f"export:{user.user_id}", limit=1)
        return ReleasingStream(self._archive(profile), release)

    async def _archive(self, profile: UserProfile) -> AsyncGenerator[bytes]:
        user_id = profile.id
        manifest = ExportManifest(user_id=user_id, exported_at=datetime.now(UTC))
        archive = ZipStream()
        try:
            readme = EXPORT_README.format(exported_at=manifest.exported_at.isoformat())
            now = manifest.exported_at
            yield archive.add("README.txt", readme.encode(), when=now)
            profile_json = msgspec.json.format(msgspec.json.encode(profile))
            yield archive.add("profile.json", profile_json, when=now)

            # files: their details as storage sends them, then each one's bytes
            files: list[ExportFile] = []
            entry = archive.open("files.ndjson", compression=DEFLATED, when=now)
            async for line in self._calls.lines("storage", "/internal/me/export", user_id):
                files.append(msgspec.json.decode(line, type=ExportFile))
                yield entry.write(line + b"\n")
            yield entry.close()
            for file in files:
                async for chunk in self._file_entry(archive, user_id, file, manifest):
                    yield chunk

            # documents: each one's text in its own entry, their details together after
            details: list[bytes] = []
            async for line in self._calls.lines("rag", "/internal/me/export", user_id):
                record, text, created_at = split_document(line)
                del line  # the record and its text are all that is kept of the line
                details.append(record)
                entry = archive.open(
                    f"documents/{record_id(record)}.txt", when=created_at, compression=DEFLATED
                )
                for start in range(0, len(text), TEXT_SLICE):
                    yield entry.write(text[start : start + TEXT_SLICE].encode())
                del text
                yield entry.close()
            manifest.documents = len(details)
            yield archive.add("documents.ndjson", b"".join(d + b"\n" for d in details), when=now)

            entry = archive.open("notifications.ndjson", compression=DEFLATED, when=now)
            async for line in self._calls.lines("notify", "/internal/me/export", user_id):
                manifest.notification_records += 1
                yield entry.write(line + b"\n")
            yield entry.close()

            manifest.complete = not manifest.files_missing
            manifest_json = msgspec.json.format(msgspec.json.encode(manifest))
            yield archive.add("manifest.json", manifest_json, when=now)
            yield archive.close()
            log.info(
                "export_sent",
                files=manifest.files,
                file_bytes=manifest.file_bytes,
                documents=manifest.documents,
            )
        except BaseException as exc:
            # The answer has begun: the only honest way to fail is to cut it short, so the
            # client's unzip sees a broken archive, never a complete-looking partial one.
            log.warning("export_aborted", error=str(exc) or type(exc).__name__)
            raise

    async def _file_entry(
        self, archive: ZipStream, user_id: uuid.UUID, file: ExportFile, manifest: ExportManifest
    ) -> AsyncIterator[bytes]:
        path = f"/internal/files/{file.id}/content"
        name = f"files/{file.id}/{safe_name(file.name)}"
        chunks = self._calls.chunks("storage", path, user_id)
        try:
            first = await anext(chunks, b"")
        except NotServed:
            manifest.files_missing.append(str(file.id))
            return
        entry = archive.open(name, size=file.size, when=file.created_at)
        written = len(first)
        yield entry.write(first)
        async for chunk in chunks:
            written += len(chunk)
            yield entry.write(chunk)
        yield entry.close()
        manifest.files += 1
        manifest.file_bytes += written

    async def public_api_document(self, own: JsonObject) -> bytes:
        """The whole public API as one OpenAPI document (JSON): ``own`` (the gateway's) with
        the public routes of every service that answered, cached for a minute; services that
        did not are named in ``x-xtyl-missing``."""
        async with self._document_lock:
            cached = self._document
            if cached is not None and time.monotonic() - cached[0] < DOCUMENT_TTL_S:
                return cached[1]
            services = await self._documents.fetch_all()
            merged = merge_public_api(own, services)
            missing = sorted(set(self._documents.names) - set(services))
            if missing:
                merged["x-xtyl-missing"] = missing
            body = msgspec.json.encode(merged)
            age = DOCUMENT_TTL_S - PARTIAL_DOCUMENT_TTL_S if missing else 0.0
            self._document = (time.monotonic() - age, body)
            return body


class ReleasingStream:
    """An async iterator of bytes that calls ``release`` once it ends, fails, is closed, or
    is dropped unread (a client gone before the answer began never runs a generator's
    ``finally``, and an export slot must not stay taken)."""

    def __init__(self, inner: AsyncGenerator[bytes], release: Callable[[], None]) -> None:
        self._inner = inner
        self._release = release

    def __aiter__(self) -> ReleasingStream:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await anext(self._inner)
        except BaseException:
            self._release()
            raise

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            self._release()

    def __del__(self) -> None:
        self._release()


class _NoQuotas:
    """``_usage_of``'s answer for a service with no quotas (404), unlike ``None`` (no answer)."""


_NO_QUOTAS = _NoQuotas()


@asynccontextmanager
async def open_service(
    settings: GatewaySettings,
    *,
    events: EventSettings,
    readiness: Readiness | None = None,
) -> AsyncGenerator[GatewayService]:
    """The gateway with every adapter it uses, closed again on exit; the outbox relay runs
    meanwhile. Checks of its dependencies join ``readiness``, when given."""
    async with AsyncExitStack() as stack:
        pool = await create_pool(
            DatabaseConfig(url=settings.database_url, max_size=settings.db_pool_max)
        )
        stack.push_async_callback(pool.close)
        redis = create_redis(settings.redis_url)
        stack.push_async_callback(redis.aclose)
        # JWKS fetches and the services' documents; the upstream client has a session of its own
        session = create_session(HttpConfig())
        stack.push_async_callback(session.close)
        limiter = RateLimiter.from_url(
            settings.redis_url, timeout_s=settings.rate_limit_redis_timeout_s
        )
        stack.push_async_callback(limiter.close)
        # the gateway counts its token checks; the services behind it check them again uncounted
        verifier = TokenVerifier(settings.auth_config(), session, metrics=TokenMetrics())
        stack.push_async_callback(verifier.close)
        await verifier.warm_up()
        upstreams = UpstreamClient(
            settings.upstream_urls(),
            ProxyConfig(
                connect_timeout_s=settings.upstream_connect_timeout_s,
                read_timeout_s=settings.upstream_read_timeout_s,
                pool_size=settings.upstream_pool_size,
                pool_wait_s=settings.upstream_pool_wait_s,
                body_idle_timeout_s=settings.request_body_idle_timeout_s,
            ),
        )
        stack.push_async_callback(upstreams.close)
        window = settings.rate_limit_window_s
        service = GatewayService(
            verifier=verifier,
            limiter=limiter,
            upstreams=upstreams,
            users=UserRepository(pool),
            documents=ServiceDocuments(session, settings.upstream_urls()),
            default_limit=Limit("all", settings.rate_limit_requests, window),
            route_limits={
                prefix: Limit(prefix, count, window)
                for prefix, count in settings.route_limits().items()
            },
            in_flight=InFlightLimit(settings.user_max_in_flight),
            auth_admin=AuthAdmin(
                session,
                supabase_url=settings.supabase_url,
                service_role_key=settings.supabase_service_role_key,
            ),
            calls=ServiceCalls(session, settings.upstream_urls(), settings.internal_jwt_secret),
            deletion_max_auth_age_s=settings.account_deletion_max_auth_age_s,
        )
        if readiness is not None:
            readiness.add("postgres", lambda: check_postgres(pool))
            # the limiter fails open: Redis down is "degraded", never a reason to leave the pool
            readiness.add("redis", limiter.check_health, critical=False)
        # user.created leaves auth.users through the gateway's outbox (written by the trigger)
        relay = OutboxRelay(
            pool,
            redis,
            schemas=[OUTBOX_SCHEMA],
            settings=events,
            sources=EVENT_SOURCES,  # user.created again after Redis lost what the outbox lacks
        )
        relay.start()
        stack.push_async_callback(relay.stop)
        if readiness is not None:
            readiness.add("outbox_relay", relay.check_health)
        yield service
