"""The gateway app: ``create_app(settings)`` wires every adapter once, in the lifespan."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.openapi.spec import Components, SecurityScheme

from xtyl_common.auth import TokenVerifier
from xtyl_common.db import DatabaseConfig, check_postgres, create_pool
from xtyl_common.events import EventSettings, OutboxRelay
from xtyl_common.health import readiness_of
from xtyl_common.http import HttpConfig, create_session
from xtyl_common.logging import configure_logging
from xtyl_common.openapi import BEARER_SCHEME_NAME
from xtyl_common.redis_client import create_redis
from xtyl_common.settings import load_settings, load_settings_or_exit
from xtyl_common.web import build_service_app
from xtyl_gateway.adapters.event_sources import EVENT_SOURCES, OUTBOX_SCHEMA
from xtyl_gateway.adapters.ratelimit import Limit, RateLimiter
from xtyl_gateway.adapters.upstream import ProxyConfig, UpstreamClient
from xtyl_gateway.adapters.users import UserRepository
from xtyl_gateway.domain.admission import InFlightLimit
from xtyl_gateway.routes.docs import PublicApiDocs, docs_page, public_openapi
from xtyl_gateway.routes.me import MeController
from xtyl_gateway.routes.proxy import Edge, proxy_handlers
from xtyl_gateway.settings import GatewaySettings

VERSION = "0.1.0"

#: The scheme ``GET /v1/me`` requires. xtyl_common names it in a document for the operations
#: that take its ``user`` dependency; /v1/me checks its token through the edge instead, so
#: the gateway names it here, as the services' documents do (the merged document is unchanged).
BEARER_SCHEME = SecurityScheme(
    type="http",
    scheme="bearer",
    bearer_format="JWT",
    description="A Supabase access token (internal routes: a service token)",
)


def create_app(settings: GatewaySettings, events: EventSettings | None = None) -> Litestar:
    event_settings = events or load_settings(EventSettings, prefix="EVENTS_")

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncGenerator[None]:
        pool = await create_pool(
            DatabaseConfig(url=settings.database_url, max_size=settings.db_pool_max)
        )
        redis = create_redis(settings.redis_url)
        # JWKS fetches and the OpenAPI merge; the proxy has a session of its own
        session = create_session(HttpConfig())
        limiter = RateLimiter.from_url(
            settings.redis_url, timeout_s=settings.rate_limit_redis_timeout_s
        )
        verifier = TokenVerifier(settings.auth_config(), session)
        await verifier.warm_up()
        window = settings.rate_limit_window_s
        edge = Edge(
            verifier,
            limiter,
            UpstreamClient(
                {
                    "storage": settings.storage_url,
                    "rag": settings.rag_url,
                    "notify": settings.notify_url,
                },
                ProxyConfig(
                    connect_timeout_s=settings.upstream_connect_timeout_s,
                    read_timeout_s=settings.upstream_read_timeout_s,
                    pool_size=settings.upstream_pool_size,
                    pool_wait_s=settings.upstream_pool_wait_s,
                    body_idle_timeout_s=settings.request_body_idle_timeout_s,
                ),
            ),
            default_limit=Limit("all", settings.rate_limit_requests, window),
            route_limits={
                prefix: Limit(prefix, count, window)
                for prefix, count in settings.route_limits().items()
            },
            in_flight=InFlightLimit(settings.user_max_in_flight),
        )
        readiness = readiness_of(app)
        readiness.add("postgres", lambda: check_postgres(pool))
        # the limiter fails open: Redis down is "degraded", never a reason to leave the pool
        readiness.add("redis", limiter.check_health, critical=False)
        app.state.edge = edge
        app.state.users = UserRepository(pool)
        app.state.public_docs = PublicApiDocs(
            session,
            {
                "storage": settings.storage_url,
                "rag": settings.rag_url,
                "notify": settings.notify_url,
            },
        )
        # user.created leaves auth.users through the gateway's outbox (written by the trigger)
        relay = OutboxRelay(
            pool,
            redis,
            schemas=[OUTBOX_SCHEMA],
            settings=event_settings,
            sources=EVENT_SOURCES,  # user.created again after Redis lost what the outbox lacks
        )
        relay.start()
        readiness.add("outbox_relay", relay.check_health)
        try:
            yield
        finally:
            await relay.stop()
            await edge.upstreams.close()
            await verifier.close()
            await limiter.close()
            await session.close()
            await redis.aclose()
            await pool.close()

    app = build_service_app(
        title="xtyl API",
        version=VERSION,
        description="The public API of xtyl (the whole of it, with the routes the services"
        " behind the gateway serve: /v1/openapi.json, or /docs). Every /v1 route takes a"
        " Supabase access token"
        " (Authorization: Bearer <token>); errors are RFC 9457 problem details with a stable"
        " `code`.",
        route_handlers=[MeController, public_openapi, docs_page, *proxy_handlers()],
        lifespan=[lifespan],
        cors_origins=settings.cors_origin_list,
    )
    _name_security_scheme(app)
    return app


def _name_security_scheme(app: Litestar) -> None:
    """Add :data:`BEARER_SCHEME` to the document's components (built at start-up)."""
    config = app.openapi_config
    assert config is not None, "build_service_app configures OpenAPI"
    components = config.components
    assert isinstance(components, Components), "build_service_app gives one Components"
    components.security_schemes = {
        **(components.security_schemes or {}),
        BEARER_SCHEME_NAME: BEARER_SCHEME,
    }


def app_from_env() -> Litestar:
    """granian's factory: runs in each worker process."""
    settings = load_settings_or_exit(GatewaySettings, program="xtyl-gateway")
    events = load_settings_or_exit(EventSettings, program="xtyl-gateway", prefix="EVENTS_")
    configure_logging(settings.log_level, json_logs=settings.log_json)
    return create_app(settings, events)
