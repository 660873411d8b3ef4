"""``/v1/documents``: a user's documents. Ids of other users' documents answer 404 exactly
like ids that do not exist."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import msgspec
from litestar import Controller, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, QueryParameter
from litestar.status_codes import HTTP_202_ACCEPTED, HTTP_204_NO_CONTENT

from xtyl_common.auth import UserPrincipal
from xtyl_common.errors import InvalidInput
from xtyl_common.identity import USER
from xtyl_common.pagination import DEFAULT_LIMIT, MAX_LIMIT
from xtyl_rag.routes import RAG
from xtyl_rag.routes.schemas import DocumentIn, DocumentListOut, DocumentOut
from xtyl_rag.service import RagService

MAX_METADATA_BYTES = 8 * 1024
_encoder = msgspec.json.Encoder()


def check_metadata(metadata: dict[str, Any] | None) -> dict[str, Any] | None:
    if metadata is not None and len(_encoder.encode(metadata)) > MAX_METADATA_BYTES:
        raise InvalidInput(
            f"metadata must encode to at most {MAX_METADATA_BYTES} bytes",
            code="metadata_too_large",
        )
    return metadata


class DocumentsController(Controller):
    path = "/v1/documents"
    tags = ["documents"]
    dependencies = {**USER, **RAG}

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
        rag: NamedDependency[RagService],
        user: NamedDependency[UserPrincipal],
        data: DocumentIn,
    ) -> Response[DocumentOut]:
        metadata = check_metadata(data.metadata)
        if (data.text is None) == (data.file_id is None):
            raise InvalidInput(
                "give either `text` (with `title`) or `file_id`", code="text_or_file_id"
            )
        if data.text is not None:
            if not data.title:
                raise InvalidInput("inline documents need a `title`", code="title_required")
            document = await rag.add_text(
                user.user_id, title=data.title, text=data.text, metadata=metadata or {}
            )
        else:
            assert data.file_id is not None
            document = await rag.add_file(
                user.user_id, data.file_id, title=data.title, metadata=metadata
            )
        return Response(
            DocumentOut.of(document),
            status_code=HTTP_202_ACCEPTED,
            headers={"Location": f"/v1/documents/{document.id}"},
        )

    @get("/", summary="List your documents", description="Newest first, cursor-paginated.")
    async def list_documents(
        self,
        rag: NamedDependency[RagService],
        user: NamedDependency[UserPrincipal],
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
        cursor: Annotated[str | None, QueryParameter(max_length=512)] = None,
    ) -> DocumentListOut:
        page = await rag.list_documents(user.user_id, limit=limit, cursor=cursor)
        return DocumentListOut(
            items=[DocumentOut.of(d) for d in page.items], next_cursor=page.next_cursor
        )

    @get("/{document_id:uuid}", summary="A document: status, error, chunk count")
    async def get_document(
        self,
        rag: NamedDependency[RagService],
        user: NamedDependency[UserPrincipal],
        document_id: FromPath[uuid.UUID],
    ) -> DocumentOut:
        return DocumentOut.of(await rag.get_document(user.user_id, document_id))

    @delete(
        "/{document_id:uuid}",
        status_code=HTTP_204_NO_CONTENT,
        summary="Delete a document",
        description="Its chunks and vectors go with it; the file in storage stays.",
    )
    async def delete_document(
        self,
        rag: NamedDependency[RagService],
        user: NamedDependency[UserPrincipal],
        document_id: FromPath[uuid.UUID],
    ) -> None:
        await rag.delete_document(user.user_id, document_id)
