"""``/v1/documents``: a user's documents. Ids of other users' documents answer 404 exactly
like ids that do not exist."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, QueryParameter
from litestar.status_codes import HTTP_202_ACCEPTED, HTTP_204_NO_CONTENT

from xtyl_common.auth import UserPrincipal
from xtyl_common.errors import InvalidInput, NotFound, PayloadTooLarge
from xtyl_common.identity import USER
from xtyl_common.pagination import DEFAULT_LIMIT, MAX_LIMIT, decode_cursor, encode_cursor
from xtyl_rag.domain.documents import clip_title, sha256_text, title_from_filename
from xtyl_rag.routes.schemas import DocumentIn, DocumentListOut, DocumentOut
from xtyl_rag.routes.services import ApiServices, services_of

MAX_METADATA_BYTES = 8 * 1024
_encoder = msgspec.json.Encoder()


def document_not_found() -> NotFound:
    return NotFound("no such document", code="document_not_found")


def check_metadata(metadata: dict[str, Any] | None) -> dict[str, Any]:
    if metadata is None:
        return {}
    if len(_encoder.encode(metadata)) > MAX_METADATA_BYTES:
        raise InvalidInput(
            f"metadata must encode to at most {MAX_METADATA_BYTES} bytes",
            code="metadata_too_large",
        )
    return metadata


class DocumentsController(Controller):
    path = "/v1/documents"
    tags = ["documents"]
    dependencies = USER

    @post(
        "/",
        status_code=HTTP_202_ACCEPTED,
        problems=(404,),  # file_id of no file of the caller's
        summary="Add a document",
        description="`{title, text, metadata?}` indexes inline text; `{file_id, title?,"
        " metadata?}` indexes a file uploaded to storage (the same document its upload"
        " created; a failed one is tried again). Answers 202 with the document: poll `GET"
        " /v1/documents/{id}` until `status` is `ready` or `failed`.",
    )
    async def create(
        self,
        request: Request[Any, Any, Any],
        user: NamedDependency[UserPrincipal],
        data: DocumentIn,
    ) -> Response[DocumentOut]:
        services = services_of(request)
        metadata = check_metadata(data.metadata)
        if (data.text is None) == (data.file_id is None):
            raise InvalidInput(
                "give either `text` (with `title`) or `file_id`", code="text_or_file_id"
            )
        if data.text is not None:
            document = await _create_inline(services, user, data, metadata)
        else:
            assert data.file_id is not None
            source = await services.core.storage.file_info(data.file_id, user.user_id)
            document = await services.core.documents.upsert_file(
                source,
                title=clip_title(data.title) if data.title else title_from_filename(source.name),
                metadata=metadata if data.metadata is not None else None,
                retry_failed=True,
            )
            if not document.final:
                await services.jobs.index_document(document.id)
        return Response(
            DocumentOut.of(document),
            status_code=HTTP_202_ACCEPTED,
            headers={"Location": f"/v1/documents/{document.id}"},
        )

    @get("/", summary="List your documents", description="Newest first, cursor-paginated.")
    async def list_documents(
        self,
        request: Request[Any, Any, Any],
        user: NamedDependency[UserPrincipal],
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
        cursor: Annotated[str | None, QueryParameter(max_length=512)] = None,
    ) -> DocumentListOut:
        after = decode_cursor(cursor) if cursor else None  # invalid_cursor (422) otherwise
        documents, following = await services_of(request).core.documents.list(
            user.user_id, limit=limit, after=after
        )
        return DocumentListOut(
            items=[DocumentOut.of(d) for d in documents],
            next_cursor=encode_cursor(following) if following else None,
        )

    @get("/{document_id:uuid}", summary="A document: status, error, chunk count")
    async def get_document(
        self,
        request: Request[Any, Any, Any],
        user: NamedDependency[UserPrincipal],
        document_id: FromPath[uuid.UUID],
    ) -> DocumentOut:
        document = await services_of(request).core.documents.get(user.user_id, document_id)
        if document is None:
            raise document_not_found()
        return DocumentOut.of(document)

    @delete(
        "/{document_id:uuid}",
        status_code=HTTP_204_NO_CONTENT,
        summary="Delete a document",
        description="Its chunks and vectors go with it; the file in storage stays.",
    )
    async def delete_document(
        self,
        request: Request[Any, Any, Any],
        user: NamedDependency[UserPrincipal],
        document_id: FromPath[uuid.UUID],
    ) -> None:
        if not await services_of(request).core.documents.delete(user.user_id, document_id):
            raise document_not_found()


async def _create_inline(
    services: ApiServices, user: UserPrincipal, data: DocumentIn, metadata: dict[str, Any]
) -> Any:
    assert data.text is not None
    if not data.title:
        raise InvalidInput("inline documents need a `title`", code="title_required")
    limit = services.core.settings.max_document_bytes
    if len(data.text.encode("utf-8", "surrogatepass")) > limit:
        raise PayloadTooLarge(f"the text is longer than {limit} bytes", code="document_too_large")
    document = await services.core.documents.create_inline(
        user.user_id,
        title=clip_title(data.title),
        text=data.text,
        sha256=sha256_text(data.text),
        metadata=metadata,
    )
    await services.jobs.index_document(document.id)
    return document
