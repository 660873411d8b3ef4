"""The storage service app: ``create_app(settings)`` wires every adapter once, in the lifespan."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager

from litestar import Litestar

from xtyl_common.db import DatabaseConfig, check_postgres, create_pool
from xtyl_common.health import readiness_of
from xtyl_common.logging import configure_logging
from xtyl_common.settings import load_settings_or_exit
from xtyl_common.web import build_service_app
from xtyl_storage.adapters.s3 import check_bucket, open_s3_client
from xtyl_storage.settings import StorageSettings

VERSION = "0.1.0"


def create_app(settings: StorageSettings) -> Litestar:
    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncGenerator[None]:
        pool = await create_pool(
            DatabaseConfig(url=settings.database_url, max_size=settings.db_pool_max)
        )
        try:
            async with open_s3_client(settings) as s3:
                readiness = readiness_of(app)
                readiness.add("postgres", lambda: check_postgres(pool))
                readiness.add("s3", lambda: check_bucket(s3, settings.r2_bucket))
                app.state.pool = pool
                app.state.s3 = s3
                yield
        finally:
            await pool.close()

    return build_service_app(
        title="xtyl storage service",
        version=VERSION,
        description="Files in R2 and who owns them.",
        route_handlers=[],
        lifespan=[lifespan],
    )


def app_from_env() -> Litestar:
    """granian's factory: runs in each worker process."""
    settings = load_settings_or_exit(StorageSettings, program="xtyl-storage")
    configure_logging(settings.log_level, json_logs=settings.log_json)
    return create_app(settings)
