"""``/internal``: for other services (service tokens only, never user tokens).

``/internal/files``: any file by id (a token naming a user: only that user's files);
``/internal/me/*``: the account of the user the gateway's token names (its ``/v1/me/*``).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from litestar import Controller, Request, Response, get
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.response import Stream

from xtyl_common.auth import ServicePrincipal
from xtyl_common.erasure import ErasureState
from xtyl_common.identity import ON_BEHALF, SERVICE
from xtyl_common.quotas import QuotaUse
from xtyl_storage.routes.files import download_headers, service_of
from xtyl_storage.routes.schemas import ExportedFile, InternalFileOut
from xtyl_storage.service import StorageService

NDJSON = "application/x-ndjson"
_encoder = msgspec.json.Encoder()


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


class InternalMeController(Controller):
    """The account of the user a service token names (403 ``user_required`` for a token that
    names none; user tokens are refused)."""

    path = "/internal/me"
    tags = ["internal"]
    dependencies = ON_BEHALF
    include_in_schema = False

    @get("/usage", summary="The user's quotas: stored bytes and files, of their limits")
    async def usage(
        self, request: Request[Any, Any, Any], user_id: NamedDependency[uuid.UUID]
    ) -> dict[str, QuotaUse]:
        return await service_of(request).usage_of(user_id)

    @get("/erasure", summary="Where storage is with erasing the user")
    async def erasure(
        self, request: Request[Any, Any, Any], user_id: NamedDependency[uuid.UUID]
    ) -> ErasureState:
        return await service_of(request).erasure_state(user_id)

    @get(
        "/export",
        summary="The user's ready files' metadata, one JSON object a line",
        description='Each line `{"record": "file", id, name, content_type, size, sha256,'
        " created_at}`, newest first; the bytes of each are at"
        " `/internal/files/{id}/content` (with a token naming the user).",
    )
    async def export(
        self, request: Request[Any, Any, Any], user_id: NamedDependency[uuid.UUID]
    ) -> Stream:
        return Stream(
            _export_lines(service_of(request), user_id),
            media_type=NDJSON,
            headers={"Cache-Control": "private, no-store"},
        )


async def _export_lines(service: StorageService, user_id: uuid.UUID) -> AsyncIterator[bytes]:
    async for file in service.export(user_id):
        yield _encoder.encode(ExportedFile.of(file)) + b"\n"
