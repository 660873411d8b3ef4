"""The rag service app: ``create_app(settings)`` wires every adapter once, in the lifespan."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager

from litestar import Litestar

from xtyl_common.auth import TokenVerifier
from xtyl_common.db import check_postgres
from xtyl_common.events import EventSettings
from xtyl_common.events.settings import ENV_PREFIX
from xtyl_common.health import readiness_of
from xtyl_common.identity import VERIFIER_STATE_KEY
from xtyl_common.logging import configure_logging
from xtyl_common.redis_client import check_redis
from xtyl_common.settings import load_settings, load_settings_or_exit
from xtyl_common.web import build_service_app
from xtyl_rag.adapters.jobs import JobQueue, open_job_queue, queue_name
from xtyl_rag.bootstrap import open_core
from xtyl_rag.routes.documents import DocumentsController
from xtyl_rag.routes.search import SearchController
from xtyl_rag.routes.services import STATE_KEY, ApiServices
from xtyl_rag.routes.status import StatusController
from xtyl_rag.settings import MiB, RagSettings

VERSION = "0.1.0"


def create_app(settings: RagSettings, *, event_settings: EventSettings | None = None) -> Litestar:
    events = event_settings or EventSettings()

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncGenerator[None]:
        async with open_core(settings, events) as core:
            verifier = TokenVerifier(settings.auth_config(), core.session)
            arq = await open_job_queue(settings.redis_url)
            prewarm: asyncio.Task[None] | None = None
            try:
                await verifier.warm_up()
                readiness = readiness_of(app)
                readiness.add("postgres", lambda: check_postgres(core.pool))
                readiness.add("redis", lambda: check_redis(arq))
                app.state[STATE_KEY] = ApiServices(
                    core=core,
                    retriever=core.retriever(),
                    jobs=JobQueue(arq, queue=queue_name(events.stream_prefix)),
                )
                app.state[VERIFIER_STATE_KEY] = verifier
                # the HNSW index read ahead of the first searches, in the background
                prewarm = asyncio.create_task(app.state[STATE_KEY].retriever.prewarm())
                yield
            finally:
                if prewarm is not None:
                    prewarm.cancel()
                await verifier.close()
                await arq.aclose()

    return build_service_app(
        title="xtyl RAG service",
        version=VERSION,
        description="Documents, chunks, embeddings, search and answers. Every /v1 route takes"
        " the user's Supabase access token and reads only the caller's documents.",
        route_handlers=[DocumentsController, SearchController, StatusController],
        lifespan=[lifespan],
        # inline documents carry their text in the body (MAX_DOCUMENT_BYTES is checked too)
        request_max_body_size=max(10 * MiB, settings.max_document_bytes + MiB),
    )


def app_from_env() -> Litestar:
    """granian's factory: runs in each worker process."""
    settings = load_settings_or_exit(RagSettings, program="xtyl-rag")
    configure_logging(settings.log_level, json_logs=settings.log_json)
    return create_app(settings, event_settings=load_settings(EventSettings, prefix=ENV_PREFIX))
