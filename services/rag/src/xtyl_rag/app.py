"""The rag service app: ``create_app(settings)``; its lifespan opens the service
(:func:`~xtyl_rag.service.open_service`) and the token verifier, the routes call the service."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager

from litestar import Litestar

from xtyl_common.auth import TokenVerifier
from xtyl_common.events import EventSettings
from xtyl_common.events.settings import ENV_PREFIX
from xtyl_common.health import readiness_of
from xtyl_common.http import create_session
from xtyl_common.identity import VERIFIER_STATE_KEY
from xtyl_common.logging import configure_logging
from xtyl_common.settings import load_settings, load_settings_or_exit
from xtyl_common.web import build_service_app
from xtyl_rag.routes import STATE_KEY
from xtyl_rag.routes.documents import DocumentsController
from xtyl_rag.routes.internal import InternalMeController
from xtyl_rag.routes.search import SearchController
from xtyl_rag.routes.status import StatusController
from xtyl_rag.service import open_service
from xtyl_rag.settings import MiB, RagSettings

VERSION = "0.1.0"


def create_app(settings: RagSettings, *, event_settings: EventSettings | None = None) -> Litestar:
    events = event_settings or EventSettings()

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncGenerator[None]:
        session = create_session()  # the process's one: the service's clients and the verifier
        verifier = TokenVerifier(settings.auth_config(), session)
        try:
            async with open_service(settings, events, session=session) as service:
                await verifier.warm_up()
                readiness = readiness_of(app)
                readiness.add("postgres", service.check_postgres)
                readiness.add("redis", service.check_redis)
                app.state[STATE_KEY] = service
                app.state[VERIFIER_STATE_KEY] = verifier
                # the HNSW index read ahead of the first searches, in the background
                prewarm = asyncio.create_task(service.prewarm())
                try:
                    yield
                finally:
                    prewarm.cancel()
        finally:
            await verifier.close()
            await session.close()

    return build_service_app(
        title="xtyl RAG service",
        version=VERSION,
        description="Documents, chunks, embeddings, search and answers. Every /v1 route takes"
        " the user's Supabase access token and reads only the caller's documents.",
        route_handlers=[
            DocumentsController,
            SearchController,
            StatusController,
            InternalMeController,
        ],
        lifespan=[lifespan],
        # inline documents carry their text in the body (MAX_DOCUMENT_BYTES is checked too)
        request_max_body_size=max(10 * MiB, settings.max_document_bytes + MiB),
        service="rag",
    )


def app_from_env() -> Litestar:
    """granian's factory: runs in each worker process."""
    settings = load_settings_or_exit(RagSettings, program="xtyl-rag")
    configure_logging(settings.log_level, json_logs=settings.log_json)
    return create_app(settings, event_settings=load_settings(EventSettings, prefix=ENV_PREFIX))
