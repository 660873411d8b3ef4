"""The gateway app: ``create_app(settings)`` wires every adapter once, in the lifespan."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager

from litestar import Litestar

from xtyl_common.db import DatabaseConfig, check_postgres, create_pool
from xtyl_common.health import readiness_of
from xtyl_common.logging import configure_logging
from xtyl_common.redis_client import check_redis, create_redis
from xtyl_common.settings import load_settings_or_exit
from xtyl_common.web import build_service_app
from xtyl_gateway.settings import GatewaySettings

VERSION = "0.1.0"


def create_app(settings: GatewaySettings) -> Litestar:
    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncGenerator[None]:
        pool = await create_pool(
            DatabaseConfig(url=settings.database_url, max_size=settings.db_pool_max)
        )
        redis = create_redis(settings.redis_url)
        readiness = readiness_of(app)
        readiness.add("postgres", lambda: check_postgres(pool))
        readiness.add("redis", lambda: check_redis(redis))
        app.state.pool = pool
        app.state.redis = redis
        try:
            yield
        finally:
            await redis.aclose()
            await pool.close()

    return build_service_app(
        title="xtyl API",
        version=VERSION,
        description="The public API of xtyl. Every /v1 route takes a Supabase access token"
        " (Authorization: Bearer <token>).",
        route_handlers=[],
        lifespan=[lifespan],
        cors_origins=settings.cors_origin_list,
    )


def app_from_env() -> Litestar:
    """granian's factory: runs in each worker process."""
    settings = load_settings_or_exit(GatewaySettings, program="xtyl-gateway")
    configure_logging(settings.log_level, json_logs=settings.log_json)
    return create_app(settings)
