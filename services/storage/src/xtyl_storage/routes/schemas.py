"""The JSON bodies of the storage API (msgspec Structs at the edge)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

import msgspec
from litestar.openapi.spec import (
    OpenAPIFormat,
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Parameter,
    RequestBody,
    Schema,
)

from xtyl_storage.domain.files import FileStatus, StoredFile
from xtyl_storage.domain.idempotency import HEADER as IDEMPOTENCY_HEADER
from xtyl_storage.domain.idempotency import KEY_PATTERN as IDEMPOTENCY_KEY_PATTERN
from xtyl_storage.domain.idempotency import REPLAYED_HEADER


class FileOut(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    #: The cleaned name the client gave (display only; never part of a path).
    name: str
    size: int
    content_type: str
    #: Hex sha256 of the bytes; None while a presigned upload is pending.
    sha256: str | None
    status: FileStatus
    #: ``R2_PUBLIC_URL/key`` for a public bucket, else a presigned GET (≤ 15 min); None while
    #: pending.
    url: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, file: StoredFile, url: str | None) -> FileOut:
        return cls(
            id=file.id,
            name=file.name,
            size=file.size,
            content_type=file.content_type,
            sha256=file.sha256,
            status=file.status,
            url=url,
            created_at=file.created_at,
            updated_at=file.updated_at,
        )


class FileListOut(msgspec.Struct, frozen=True, kw_only=True):
    items: list[FileOut]
    #: Pass as ``cursor`` for the next page; None on the last page.
    next_cursor: str | None


#: What :func:`xtyl_storage.domain.media_types.normalize_media_type` accepts, as a pattern.
MEDIA_TYPE_PATTERN = r"^\s*[A-Za-z0-9!#$&^_.+-]{1,127}/[A-Za-z0-9!#$&^_.+-]{1,127}\s*(;[\s\S]*)?$"


@dataclass
class UploadOperation(Operation):
    """``POST /v1/files`` reads its body itself, streaming: the OpenAPI document says what it
    takes. (``filename`` is required with a raw body only, which OpenAPI cannot say.)"""

    def __post_init__(self) -> None:
        binary = Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.BINARY)
        self.request_body = RequestBody(
            required=True,
            content={
                # exactly one part, `file` (any other is 422 `unexpected_field`)
                "multipart/form-data": OpenAPIMediaType(
                    schema=Schema(
                        type=OpenAPIType.OBJECT,
                        required=["file"],
                        properties={"file": binary},
                        additional_properties=False,
                    )
                ),
                # OpenAPI 3.1: raw bytes have no schema
                "application/octet-stream": OpenAPIMediaType(),
            },
        )
        self.parameters = [
            Parameter(
                name="filename",
                param_in="query",
                required=False,
                schema=Schema(type=OpenAPIType.STRING),
                description="the file's name, with a raw body (whose Content-Type is the file's)",
            ),
            Parameter(
                name=IDEMPOTENCY_HEADER,
                param_in="header",
                required=False,
                schema=Schema(type=OpenAPIType.STRING, pattern=IDEMPOTENCY_KEY_PATTERN),
                description="makes a retry safe: the same key and file again answer the first"
                " upload's file (`Idempotent-Replayed: true`), never a second copy",
            ),
        ]
        created = (self.responses or {}).get("201")
        if isinstance(created, OpenAPIResponse):
            created.headers = {
                REPLAYED_HEADER: OpenAPIHeader(
                    schema=Schema(type=OpenAPIType.STRING, const="true"),
                    description="present on a retry with the `Idempotency-Key` of an upload"
                    " that succeeded: the file is that upload's",
                )
            }


@dataclass
class DownloadOperation(Operation):
    """``GET /v1/files/{id}/content`` answers the file's bytes with the file's own type."""

    def __post_init__(self) -> None:
        self.responses = {
            **(self.responses or {}),
            "200": OpenAPIResponse(
                description="The file's bytes, with its Content-Type",
                content={"*/*": OpenAPIMediaType()},  # OpenAPI 3.1: raw bytes have no schema
            ),
        }


class PresignRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Unknown members (``owner_id``, ``key``…) are refused with 422: the server decides them."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]
    #: ``type/subtype`` (checked by the handler: 422 ``invalid_content_type``; the pattern says
    #: the same in the OpenAPI document), then against the allowed types (415).
    content_type: Annotated[
        str,
        msgspec.Meta(
            min_length=1,
            max_length=255,
            extra_json_schema={"extra": {"pattern": MEDIA_TYPE_PATTERN}},
        ),
    ]
    size: Annotated[int, msgspec.Meta(ge=1)]


class PresignOut(msgspec.Struct, frozen=True, kw_only=True):
    file: FileOut
    #: PUT the bytes here with exactly ``headers``, then call ``complete``.
    method: str
    url: str
    headers: dict[str, str]
    expires_at: datetime
    complete_url: str


class ExportedFile(msgspec.Struct, frozen=True, kw_only=True):
    """One line of ``GET /internal/me/export``."""

    record: str
    id: uuid.UUID
    name: str
    content_type: str
    size: int
    sha256: str | None
    created_at: datetime

    @classmethod
    def of(cls, file: StoredFile) -> ExportedFile:
        return cls(
            record="file",
            id=file.id,
            name=file.name,
            content_type=file.content_type,
            size=file.size,
            sha256=file.sha256,
            created_at=file.created_at,
        )


class InternalFileOut(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    owner_id: uuid.UUID
    #: The object key (internal callers only: the RAG worker's file.uploaded re-emits carry it).
    key: str
    name: str
    size: int
    content_type: str
    sha256: str | None
    created_at: datetime
