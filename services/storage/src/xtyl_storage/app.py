"""The storage service app: ``create_app(settings)`` wires every adapter once, in the lifespan."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager

from litestar import Litestar

from xtyl_common.auth import TokenVerifier
from xtyl_common.db import DatabaseConfig, check_postgres, create_pool
from xtyl_common.events.relay import OutboxRelay
from xtyl_common.events.settings import ENV_PREFIX, EventSettings
from xtyl_common.health import readiness_of
from xtyl_common.http import create_session
from xtyl_common.identity import VERIFIER_STATE_KEY
from xtyl_common.logging import configure_logging
from xtyl_common.redis_client import check_redis, create_redis
from xtyl_common.settings import load_settings, load_settings_or_exit
from xtyl_common.web import build_service_app
from xtyl_storage.adapters.event_sources import EVENT_SOURCES
from xtyl_storage.adapters.events import OUTBOX_SCHEMA
from xtyl_storage.adapters.idempotency import IdempotencyKeyRepository
from xtyl_storage.adapters.orphans import OrphanSweeper
from xtyl_storage.adapters.postgres import FileRepository
from xtyl_storage.adapters.s3 import ObjectStore, check_bucket, open_s3_client
from xtyl_storage.routes.files import FilesController
from xtyl_storage.routes.internal import InternalFilesController
from xtyl_storage.service import StorageService
from xtyl_storage.settings import StorageSettings

VERSION = "0.1.0"


def create_app(
    settings: StorageSettings,
    *,
    event_settings: EventSettings | None = None,
    run_relay: bool = True,
) -> Litestar:
    """``run_relay=False`` leaves outbox rows unpublished (tests that read the outbox)."""
    events = event_settings or EventSettings()

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncGenerator[None]:
        pool = await create_pool(
            DatabaseConfig(url=settings.database_url, max_size=settings.db_pool_max)
        )
        redis = create_redis(settings.redis_url)
        session = create_session()
        verifier = TokenVerifier(settings.auth_config(), session)
        relay = OutboxRelay(
            pool,
            redis,
            schemas=[OUTBOX_SCHEMA],
            settings=events,
            sources=EVENT_SOURCES,  # file events again after Redis lost what the outbox lacks
        )
        try:
            await verifier.warm_up()
            async with open_s3_client(settings) as s3:
                readiness = readiness_of(app)
                readiness.add("postgres", lambda: check_postgres(pool))
                readiness.add("redis", lambda: check_redis(redis))
                readiness.add("s3", lambda: check_bucket(s3, settings.r2_bucket))
                store = ObjectStore(
                    s3,
                    settings.r2_bucket,
                    public_url=settings.r2_public_url,
                    presign_ttl_s=settings.presign_ttl_s,
                )
                files = FileRepository(pool)
                orphans = OrphanSweeper(
                    store,
                    files,
                    attempt_timeout_s=settings.s3_connect_timeout_s + settings.s3_read_timeout_s,
                )
                app.state.storage = StorageService(
                    store,
                    files,
                    settings,
                    keys=IdempotencyKeyRepository(pool),
                    orphans=orphans,
                )
                app.state[VERIFIER_STATE_KEY] = verifier
                if run_relay:
                    relay.start()
                    readiness.add("outbox_relay", relay.check_health)
                try:
                    yield
                finally:
                    await orphans.close()
                    if run_relay:
                        await relay.stop()
        finally:
            await verifier.close()
            await session.close()
            await redis.aclose()
            await pool.close()

    return build_service_app(
        title="xtyl storage service",
        version=VERSION,
        description="Files in R2 and who owns them. Every /v1 route takes the user's Supabase"
        " access token; /internal routes take a service token.",
        route_handlers=[FilesController, InternalFilesController],
        lifespan=[lifespan],
        # Upload routes lift this and enforce MAX_UPLOAD_BYTES while streaming.
        request_max_body_size=1024 * 1024,
    )


def app_from_env() -> Litestar:
    """granian's factory: runs in each worker process."""
    settings = load_settings_or_exit(StorageSettings, program="xtyl-storage")
    configure_logging(settings.log_level, json_logs=settings.log_json)
    return create_app(settings, event_settings=load_settings(EventSettings, prefix=ENV_PREFIX))
