"""What the route handlers reach through ``app.state`` (built once, in the lifespan)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from litestar import Request

from xtyl_rag.adapters.jobs import JobQueue
from xtyl_rag.bootstrap import RagCore
from xtyl_rag.retrieval import Retriever

STATE_KEY = "rag"


@dataclass(frozen=True, slots=True)
class ApiServices:
    core: RagCore
    retriever: Retriever
    jobs: JobQueue


def services_of(request: Request[Any, Any, Any]) -> ApiServices:
    services: ApiServices = request.app.state[STATE_KEY]
    return services
