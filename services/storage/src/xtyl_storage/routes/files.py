"""``/v1/files``: a user's files. Every handler takes the verified ``user``; ids of other users'
files answer 404 exactly like ids that do not exist."""

from __future__ import annotations

import functools
import uuid
from typing import Annotated, Any

from litestar import Controller, Request, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from litestar.response import Redirect, Stream
from litestar.status_codes import HTTP_201_CREATED, HTTP_204_NO_CONTENT

from xtyl_common.auth import UserPrincipal
from xtyl_common.errors import ClientDisconnected, InvalidInput, XtylError
from xtyl_common.identity import USER
from xtyl_common.pagination import DEFAULT_LIMIT, MAX_LIMIT
from xtyl_common.text import check_storable
from xtyl_storage.domain.files import FileStatus, StoredFile
from xtyl_storage.domain.idempotency import HEADER, REPLAYED_HEADER, parse_idempotency_key
from xtyl_storage.domain.names import content_disposition
from xtyl_storage.routes.bodies import (
    MULTIPART_OVERHEAD_BYTES,
    RequestBody,
    StreamingForm,
    multipart_boundary,
)
from xtyl_storage.routes.schemas import (
    DownloadOperation,
    FileListOut,
    FileOut,
    PresignOut,
    PresignRequest,
    UploadOperation,
)
from xtyl_storage.service import StorageService, Upload

#: Query parameters an upload may carry; anything else (``owner_id``, ``key``…) is 422.
_UPLOAD_QUERY = frozenset({"filename"})
#: How long a refused upload's remaining body is read and dropped before the answer.
DRAIN_TIMEOUT_S = 10.0


#: Where the app's lifespan keeps the service.
SERVICE_STATE_KEY = "storage"


def service_of(request: Request[Any, Any, Any]) -> StorageService:
    service: StorageService = request.app.state[SERVICE_STATE_KEY]
    return service


async def file_out(service: StorageService, file: StoredFile) -> FileOut:
    url = await service.url_for(file) if file.status is FileStatus.READY else None
    return FileOut.of(file, url)


def download_headers(file: StoredFile, size: int) -> dict[str, str]:
    return {
        "Content-Length": str(size),
        "Content-Disposition": content_disposition(file.name),
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "private, no-store",
    }


async def _receive_upload(
    request: Request[Any, Any, Any],
    service: StorageService,
    user: UserPrincipal,
    body: RequestBody,
) -> Upload:
    raw_key = request.headers.get(HEADER)
    idempotency_key = None if raw_key is None else parse_idempotency_key(raw_key)
    unexpected = sorted(set(request.query_params) - _UPLOAD_QUERY)
    if unexpected:
        raise InvalidInput(
            f"unexpected query parameter {unexpected[0]!r}",
            code="unexpected_field",
            extra={"field": unexpected[0]},
        )
    limit = service.settings.max_upload_bytes
    header_type = request.headers.get("content-type", "")
    boundary = multipart_boundary(header_type) if header_type else None
    declared = request.content_length
    keyed = idempotency_key is not None
    if boundary is None:
        service.check_declared_size(declared)
        filename = request.query_params.get("filename")
        if not filename:
            raise InvalidInput(
                "send multipart/form-data, or the raw body with ?filename=",
                code="missing_filename",
            )
        check_storable(filename, at="filename", source="query")
        content_type = service.accepted_content_type(header_type)
        async with service.upload_quota(user.user_id, declared=declared, keyed=keyed) as hold:
            return await service.upload(
                user.user_id,
                raw_name=filename,
                content_type=content_type,
                chunks=body.chunks(max_bytes=limit, file_limit=limit),
                idempotency_key=idempotency_key,
                hold=hold,
            )
    service.check_declared_size(declared, overhead=MULTIPART_OVERHEAD_BYTES)
    async with service.upload_quota(
        user.user_id, declared=declared, overhead=MULTIPART_OVERHEAD_BYTES, keyed=keyed
    ) as hold:
        form = StreamingForm(
            body.chunks(max_bytes=limit + MULTIPART_OVERHEAD_BYTES, file_limit=limit), boundary
        )
        part = await form.file()
        check_storable(part.filename, at="filename")
        content_type = service.accepted_content_type(part.content_type)
        return await service.upload(
            user.user_id,
            raw_name=part.filename,
            content_type=content_type,
            chunks=part.chunks(),
            idempotency_key=idempotency_key,
            hold=hold,
        )


class FilesController(Controller):
    path = "/v1/files"
    tags = ["files"]
    dependencies = USER

    @post(
        "/",
        status_code=HTTP_201_CREATED,
        request_max_body_size=None,  # enforced while streaming, from settings
        operation_class=UploadOperation,
        problems=(400, 403, 404, 409, 413, 415, 422),  # 404: a replay of a deleted file
        summary="Upload a file",
        description="multipart/form-data with one part named `file`, or the raw bytes as the"
        " body with `?filename=` and the file's Content-Type. Streamed to storage; 413 past"
        " the size limit, 415 for types not allowed. 504 `storage_timeout` when storage did"
        " not finish in time: nothing was stored.\n\n"
        "`Idempotency-Key` (optional: 1 to 255 visible ASCII characters, e.g. a UUID) makes a"
        " retry safe: a retry with the same key and the same file (name, type and bytes)"
        " answers the first upload's file again, 201 with `Idempotent-Replayed: true`, instead"
        " of a second copy. The same key with another file is 422 `idempotency_key_reused`;"
        " while the first upload still runs, 409 `idempotency_in_progress` with `Retry-After`;"
        " a malformed key is 422 `invalid_idempotency_key`; 404 `file_not_found` when the"
        " first upload's file was deleted since. A failed upload keeps no key: its retry"
        " uploads again. Keys are per user and expire (by default after 24 hours).\n\n"
        "Quotas: 403 `quota_storage_bytes` when the file does not fit in the bytes you may"
        " keep (refused before the body is read when its Content-Length already does not"
        " fit, else cut off when it goes past), 403 `quota_files` past the number of files;"
        " `used` and `limit` say where you stand. 403 `account_deleted` once your account was"
        " deleted.",
    )
    async def upload(
        self, request: Request[Any, Any, Any], user: NamedDependency[UserPrincipal]
    ) -> Response[FileOut]:
        service = service_of(request)
        body = RequestBody(request.receive)
        try:
            upload = await _receive_upload(request, service, user, body)
        except ClientDisconnected:
            raise
        except XtylError as exc:
            # Answer at once, then read and drop up to twice the limit of what the client is
            # still sending (a client that sent 11 MB against 10 MB, refused from its
            # Content-Length before a byte was read, still reads the 413, never a reset).
            exc.after_response = functools.partial(
                body.drain,
                max_bytes=2 * service.settings.max_upload_bytes + MULTIPART_OVERHEAD_BYTES,
                timeout_s=DRAIN_TIMEOUT_S,
            )
            raise
        return Response(
            await file_out(service, upload.file),
            status_code=HTTP_201_CREATED,
            headers={REPLAYED_HEADER: "true"} if upload.replayed else None,
        )

    @get("/", summary="List your files", description="Newest first, cursor-paginated.")
    async def list_files(
        self,
        request: Request[Any, Any, Any],
        user: NamedDependency[UserPrincipal],
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
        cursor: Annotated[str | None, QueryParameter(max_length=512)] = None,
    ) -> FileListOut:
        service = service_of(request)
        page = await service.page(user.user_id, limit=limit, cursor=cursor)
        return FileListOut(
            items=[await file_out(service, item) for item in page.items],
            next_cursor=page.next_cursor,
        )

    @get("/{file_id:uuid}", summary="A file's metadata and URL")
    async def get_file(
        self,
        request: Request[Any, Any, Any],
        user: NamedDependency[UserPrincipal],
        file_id: FromPath[uuid.UUID],
    ) -> FileOut:
        service = service_of(request)
        return await file_out(service, await service.get(user.user_id, file_id))

    @get(
        "/{file_id:uuid}/content",
        operation_class=DownloadOperation,  # the file's bytes, with its own type
        responses={307: ResponseSpec(None, description="`?redirect=true`: the file's URL")},
        problems=(409,),  # the upload is not complete
        summary="Download a file",
        description="Streams the bytes; with `?redirect=true` answers 307 to the public or"
        " presigned URL instead.",
    )
    async def download(
        self,
        request: Request[Any, Any, Any],
        user: NamedDependency[UserPrincipal],
        file_id: FromPath[uuid.UUID],
        redirect: FromQuery[bool] = False,
    ) -> Response[Any]:
        service = service_of(request)
        file = await service.get_ready(user.user_id, file_id)
        if redirect:
            return Redirect(await service.url_for(file), status_code=307)
        body = await service.open_content(file)
        return Stream(
            body.chunks,
            media_type=file.content_type,
            headers=download_headers(file, body.size),
        )

    @delete(
        "/{file_id:uuid}",
        status_code=HTTP_204_NO_CONTENT,
        summary="Delete a file",
        description="Removes the object and the file; repeating it answers 204 again.",
    )
    async def delete_file(
        self,
        request: Request[Any, Any, Any],
        user: NamedDependency[UserPrincipal],
        file_id: FromPath[uuid.UUID],
    ) -> None:
        await service_of(request).delete(user.user_id, file_id)

    @post(
        "/uploads",
        problems=(403, 413, 415),
        status_code=HTTP_201_CREATED,
        summary="Start a direct upload",
        description="For large files: answers a presigned PUT URL (content length and type"
        " signed, valid at most 15 minutes). PUT the bytes there, then call `complete_url`."
        " The size is held against your quota (403 `quota_storage_bytes` / `quota_files`)"
        " until the upload completes or its URL expired.",
    )
    async def start_upload(
        self,
        request: Request[Any, Any, Any],
        user: NamedDependency[UserPrincipal],
        data: JSONBody[PresignRequest],
    ) -> PresignOut:
        service = service_of(request)
        started = await service.start_presigned_upload(
            user.user_id, raw_name=data.name, content_type=data.content_type, size=data.size
        )
        return PresignOut(
            file=FileOut.of(started.file, None),
            method="PUT",
            url=started.url,
            headers=started.headers,
            expires_at=started.expires_at,
            complete_url=f"/v1/files/{started.file.id}/complete",
        )

    @post(
        "/{file_id:uuid}/complete",
        problems=(403, 409),
        status_code=200,
        summary="Finish a direct upload",
        description="Checks the object (size and type must match what was signed), records"
        " the file and announces it. 409 while nothing was uploaded yet.",
    )
    async def complete_upload(
        self,
        request: Request[Any, Any, Any],
        user: NamedDependency[UserPrincipal],
        file_id: FromPath[uuid.UUID],
    ) -> FileOut:
        service = service_of(request)
        file = await service.complete_presigned_upload(user.user_id, file_id)
        return await file_out(service, file)
