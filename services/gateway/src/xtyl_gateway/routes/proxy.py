"""The public routes served by other services: authenticate, rate-limit, stream through."""

from __future__ import annotations

import time

import structlog
from litestar.handlers import asgi
from litestar.handlers.asgi_handlers import ASGIRouteHandler
from litestar.types import Receive, Scope, Send

from xtyl_common.auth import TokenVerifier, UserPrincipal, bearer_token
from xtyl_common.context import current_request_id
from xtyl_common.errors import ClientError, NotFound, RateLimited, TimedOut, Unavailable
from xtyl_gateway.adapters.ratelimit import Limit, RateLimiter
from xtyl_gateway.adapters.upstream import UpstreamClient
from xtyl_gateway.domain.admission import InFlightLimit
from xtyl_gateway.domain.exchange import ClientConnection, IncomingRequest
from xtyl_gateway.domain.routing import (
    ROUTES,
    BadRequestFraming,
    is_suspect_path,
    match_route,
    upstream_request_headers,
)
from xtyl_gateway.routes.asgi import AsgiConnection, incoming_request

log = structlog.stdlib.get_logger("xtyl.gateway.edge")


class Edge:
    """What every public request goes through: the token, the user's limits, the proxy."""

    def __init__(
        self,
        verifier: TokenVerifier,
        limiter: RateLimiter,
        upstreams: UpstreamClient,
        *,
        default_limit: Limit,
        route_limits: dict[str, Limit],
        in_flight: InFlightLimit,
    ) -> None:
        self.verifier = verifier
        self.limiter = limiter
        self.upstreams = upstreams
        self.in_flight = in_flight
        self.default_limit = default_limit
        self.route_limits = route_limits
        self._limiter_down_logged = 0.0

    async def authenticate(self, authorization: str | None) -> UserPrincipal:
        """The user whose Supabase access token ``authorization`` (the header) carries; 401
        problems with a stable code for anything else."""
        user = await self.verifier.verify_user_token(bearer_token(authorization))
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
        limits = [self.default_limit]
        tighter = self.route_limits.get(route_prefix)
        if tighter is not None:
            limits.append(tighter)
        for limit in limits:
            try:
                decision = await self.limiter.hit(subject, limit)
            except (Unavailable, TimedOut) as exc:
                # Fail open: a Redis outage must not take the whole API down with it (readyz
                # reports Redis degraded meanwhile; the outage is logged at most once a second).
                self._log_limiter_down(exc)
                return
            if not decision.allowed:
                raise RateLimited(decision.retry_after_s)

    def _log_limiter_down(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._limiter_down_logged >= 1.0:
            self._limiter_down_logged = now
            log.warning("rate_limit_skipped", reason=str(exc))

    async def handle(self, prefix: str, request: IncomingRequest, client: ClientConnection) -> None:
        # Litestar mounts match by string prefix: /v1/files also catches /v1/filesystem.
        route = match_route(request.path)
        if route is None or route.prefix != prefix or is_suspect_path(request.path):
            raise NotFound()
        if route.anonymous:
            subject = await self.admit_address(request.client_host, prefix)
        else:
            subject = str((await self.admit_user(request.authorization, prefix)).user_id)
        with self.in_flight.hold(subject):
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
            await self.upstreams.forward(route.upstream, request, forwarded, client)


def proxy_handlers() -> list[ASGIRouteHandler]:
    """One mounted ASGI handler per public prefix (``/v1/files`` and everything below it)."""
    return [_mounted(prefix) for prefix, _ in ROUTES]


def _mounted(prefix: str) -> ASGIRouteHandler:
    async def forward(scope: Scope, receive: Receive, send: Send) -> None:
        edge: Edge = scope["app"].state.edge
        await edge.handle(prefix, incoming_request(scope), AsgiConnection(receive, send))

    return asgi(prefix, is_mount=True, copy_scope=False, name=f"proxy:{prefix}")(forward)
