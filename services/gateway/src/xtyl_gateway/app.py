"""The gateway app: ``create_app(settings)`` opens the service in its lifespan
(:func:`~xtyl_gateway.service.open_service`) and mounts the routes."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.openapi.spec import Components, SecurityScheme

from xtyl_common.events import EventSettings
from xtyl_common.health import readiness_of
from xtyl_common.logging import configure_logging
from xtyl_common.openapi import BEARER_SCHEME_NAME
from xtyl_common.settings import load_settings, load_settings_or_exit
from xtyl_common.web import build_service_app
from xtyl_gateway.routes.docs import docs_page, public_openapi
from xtyl_gateway.routes.me import MeController
from xtyl_gateway.routes.proxy import proxy_handlers
from xtyl_gateway.service import open_service
from xtyl_gateway.settings import GatewaySettings

VERSION = "0.1.0"

#: The scheme ``GET /v1/me`` requires. xtyl_common names it in a document for the operations
#: that take its ``user`` dependency; /v1/me checks its token through the service instead, so
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
        async with open_service(
            settings, events=event_settings, readiness=readiness_of(app)
        ) as gateway:
            app.state.gateway = gateway
            yield

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
        service="gateway",
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
