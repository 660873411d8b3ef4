"""``/internal/files``: for other services (service tokens only, never user tokens)."""

from __future__ import annotations

import uuid
from typing import Any

from litestar import Controller, Request, Response, get
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.response import Stream

from xtyl_common.auth import ServicePrincipal
from xtyl_common.identity import SERVICE
from xtyl_storage.routes.files import download_headers, service_of
from xtyl_storage.routes.schemas import InternalFileOut


class InternalFilesController(Controller):
    path = "/internal/files"
    tags = ["internal"]
    dependencies = SERVICE
    include_in_schema = False

    @get("/{file_id:uuid}", summary="A file's metadata, for other services")
    async def get_file(
        self,
        request: Request[Any, Any, Any],
        service: NamedDependency[ServicePrincipal],
        file_id: FromPath[uuid.UUID],
    ) -> InternalFileOut:
        file = await service_of(request).get_for_service(file_id, service.user_id)
        return InternalFileOut(
            id=file.id,
            owner_id=file.owner_id,
            key=file.key,
            name=file.name,
            size=file.size,
            content_type=file.content_type,
            sha256=file.sha256,
            created_at=file.created_at,
        )

    @get("/{file_id:uuid}/content", summary="A file's bytes, for other services")
    async def content(
        self,
        request: Request[Any, Any, Any],
        service: NamedDependency[ServicePrincipal],
        file_id: FromPath[uuid.UUID],
    ) -> Response[Any]:
        storage = service_of(request)
        file = await storage.get_for_service(file_id, service.user_id)
        body = await storage.open_content(file)
        return Stream(
            body.chunks, media_type=file.content_type, headers=download_headers(file, body.size)
        )
