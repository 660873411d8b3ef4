"""``GET /v1/status``: the embedding model (and whether a change of model awaits `make
reembed`) and the caller's documents by status."""

from __future__ import annotations

from litestar import Controller, get
from litestar.di import NamedDependency

from xtyl_common.auth import UserPrincipal
from xtyl_common.identity import USER
from xtyl_rag.routes import RAG
from xtyl_rag.routes.schemas import EmbeddingStatusOut, ModelOut, StatusOut
from xtyl_rag.service import RagService


class StatusController(Controller):
    path = "/v1/status"
    tags = ["status"]
    dependencies = {**USER, **RAG}

    @get("/", summary="Indexing status")
    async def status(
        self, rag: NamedDependency[RagService], user: NamedDependency[UserPrincipal]
    ) -> StatusOut:
        status = await rag.status(user.user_id)
        active = status.active
        return StatusOut(
            embedding=EmbeddingStatusOut(
                active=ModelOut(model=active.model, dimension=active.dimension) if active else None,
                configured=ModelOut(
                    model=status.configured_model, dimension=status.configured_dimension
                ),
                reembed_needed=status.reembed_needed,
            ),
            documents=status.documents,
        )
