"""``GET /v1/status``: the embedding model (and whether a change of model awaits `make
reembed`) and the caller's documents by status."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get
from litestar.di import NamedDependency

from xtyl_common.auth import UserPrincipal
from xtyl_common.identity import USER
from xtyl_rag.routes.schemas import EmbeddingStatusOut, ModelOut, StatusOut
from xtyl_rag.routes.services import services_of


class StatusController(Controller):
    path = "/v1/status"
    tags = ["status"]
    dependencies = USER

    @get("/", summary="Indexing status")
    async def status(
        self, request: Request[Any, Any, Any], user: NamedDependency[UserPrincipal]
    ) -> StatusOut:
        core = services_of(request).core
        active = await core.models.active()
        configured = core.embedders.configured
        return StatusOut(
            embedding=EmbeddingStatusOut(
                active=ModelOut(model=active.model, dimension=active.dimension) if active else None,
                configured=ModelOut(model=configured.model, dimension=configured.dimension),
                reembed_needed=active is None or active.model != configured.model,
            ),
            documents=await core.documents.status_counts(user.user_id),
        )
