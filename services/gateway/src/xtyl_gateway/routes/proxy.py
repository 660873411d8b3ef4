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
from xtyl_gateway.adapters.upstream import Proxy, client_host, scope_header
from xtyl_gateway.domain.admission import InFlightLimit
from xtyl_gateway.domain.routing import (
    ROUTES,
    BadRequestFraming,
    is_suspect_path,
    match_route,
)

log = structlog.stdlib.get_logger("xtyl.gateway.edge")


class Edge:
    """What every public request goes through: the token, the user's limits, the proxy."""

    def __init__(
        self,
        verifier: TokenVerifier,
        limiter: RateLimiter,
        proxy: Proxy,
        *,
        default_limit: Limit,
        route_limits: dict[str, Limit],
        in_flight: InFlightLimit,
    ) -> None:
        self.verifier = verifier
        self.limiter = limiter
        self.proxy = proxy
        self.in_flight = in_flight
        self.default_limit = default_limit
        self.route_limits = route_limits
        self._limiter_down_logged = 0.0

    async def authenticate(self, scope: Scope) -> UserPrincipal:
        token = bearer_token(scope_header(scope, b"authorization"))
        user = await self.verifier.verify_user_token(token)
        structlog.contextvars.bind_contextvars(user_id=str(user.user_id))
        return user

    async def limit(self, user: UserPrincipal, route_prefix: str) -> None:
        await self.limit_subject(str(user.user_id), route_prefix)

    async def limit_subject(self, subject: str, route_prefix: str) -> None:
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

    async def handle(
        self, scope: Scope, receive: Receive, send: Send, prefix: str, upstream: str
    ) -> None:
        # Litestar mounts match by string prefix: /v1/files also catches /v1/filesystem.
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        path = raw_path.decode("latin-1")
        route = match_route(path)
        if route is None or route.prefix != prefix or is_suspect_path(path):
            raise NotFound()
        host = client_host(scope)
        if route.anonymous:
            subject = f"ip:{host}"
            await self.limit_subject(subject, prefix)
        else:
            user = await self.authenticate(scope)
            subject = str(user.user_id)
            await self.limit(user, prefix)
        with self.in_flight.hold(subject):
            await self._forward(scope, receive, send, upstream, host)

    async def _forward(
        self, scope: Scope, receive: Receive, send: Send, upstream: str, host: str | None
    ) -> None:
        extra = [
            (b"x-request-id", (current_request_id() or "").encode()),
            (b"x-forwarded-proto", str(scope.get("scheme", "http")).encode()),
        ]
        if host is not None:
            extra.append((b"x-forwarded-for", host.encode()))
        try:
            await self.proxy.forward(scope, receive, send, upstream, extra)
        except BadRequestFraming as exc:
            raise ClientError(str(exc), code=exc.code) from None


def proxy_handlers() -> list[ASGIRouteHandler]:
    """One mounted ASGI handler per public prefix (``/v1/files`` and everything below it)."""
    return [_mounted(prefix, upstream) for prefix, upstream in ROUTES]


def _mounted(prefix: str, upstream: str) -> ASGIRouteHandler:
    async def forward(scope: Scope, receive: Receive, send: Send) -> None:
        edge: Edge = scope["app"].state.edge
        await edge.handle(scope, receive, send, prefix, upstream)

    return asgi(prefix, is_mount=True, copy_scope=False, name=f"proxy:{prefix}")(forward)
