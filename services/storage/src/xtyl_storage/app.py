"""The storage service app: ``create_app(settings)`` opens the service
(:func:`~xtyl_storage.service.open_service`) in its lifespan and mounts the routes."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager

from litestar import Litestar

from xtyl_common.auth import TokenVerifier
from xtyl_common.events.settings import ENV_PREFIX, EventSettings
from xtyl_common.health import readiness_of
from xtyl_common.http import create_session
from xtyl_common.identity import VERIFIER_STATE_KEY
from xtyl_common.logging import configure_logging
from xtyl_common.settings import load_settings, load_settings_or_exit
from xtyl_common.web import build_service_app
from xtyl_storage.routes.files import SERVICE_STATE_KEY, FilesController
from xtyl_storage.routes.internal import InternalFilesController, InternalMeController
from xtyl_storage.service import open_service
from xtyl_storage.settings import StorageSettings

VERSION = "0.1.0"


def create_app(
    settings: StorageSettings,
    *,
    event_settings: EventSettings | None = None,
    run_relay: bool = True,
) -> Litestar:
    """``run_relay=False`` leaves outbox rows unpublished (tests that read the outbox)."""

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncGenerator[None]:
        session = create_session()
        verifier = TokenVerifier(settings.auth_config(), session)
        try:
            await verifier.warm_up()
            async with open_service(
                settings, events=event_settings, run_relay=run_relay
            ) as service:
                readiness = readiness_of(app)
                for name, check in service.readiness.items():
                    readiness.add(name, check)
                app.state[SERVICE_STATE_KEY] = service
                app.state[VERIFIER_STATE_KEY] = verifier
                yield
        finally:
            await verifier.close()
            await session.close()

    return build_service_app(
        title="xtyl storage service",
        version=VERSION,
        description="Files in R2 and who owns them. Every /v1 route takes the user's Supabase"
        " access token; /internal routes take a service token.",
        route_handlers=[FilesController, InternalFilesController, InternalMeController],
        lifespan=[lifespan],
        # Upload routes lift this and enforce MAX_UPLOAD_BYTES while streaming.
        request_max_body_size=1024 * 1024,
        service="storage",
    )


def app_from_env() -> Litestar:
    """granian's factory: runs in each worker process."""
    settings = load_settings_or_exit(StorageSettings, program="xtyl-storage")
    configure_logging(settings.log_level, json_logs=settings.log_json)
    return create_app(settings, event_settings=load_settings(EventSettings, prefix=ENV_PREFIX))
