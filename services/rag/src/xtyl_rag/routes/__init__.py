"""HTTP routes of the rag service: parse and validate, call :class:`RagService`, shape the
answer. A handler takes the service as ``rag`` (``dependencies = {**USER, **RAG}``)."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.di import Provide

from xtyl_rag.service import RagService

#: Where the app's lifespan keeps the service (``app.state``).
STATE_KEY = "rag"


def rag_service(request: Request[Any, Any, Any]) -> RagService:
    service: RagService = request.app.state[STATE_KEY]
    return service


#: ``dependencies={**USER, **RAG}`` on a controller gives its handlers ``rag: RagService``.
RAG = {"rag": Provide(rag_service, sync_to_thread=False)}
