"""``/internal/me/*``: the account of the user a service token names (the gateway's
``/v1/me/*``): their quotas, their erasure, their documents' export. Service tokens only; a
user token is refused, a service token that names no user is 403 ``user_required``."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any, Literal

import msgspec
from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.response import Stream

from xtyl_common.erasure import ErasureState
from xtyl_common.identity import ON_BEHALF
from xtyl_common.quotas import QuotaUse
from xtyl_rag.routes import RAG
from xtyl_rag.service import RagService
from xtyl_rag.service.account import ExportedDocument

NDJSON = "application/x-ndjson"
#: Bytes of a document's text sent at a time.
TEXT_BATCH_BYTES = 64 * 1024
_encoder = msgspec.json.Encoder()


class ExportedDocumentHead(msgspec.Struct, frozen=True, kw_only=True):
    """An export line but its ``text`` (which follows, streamed)."""

    record: Literal["document"] = "document"
    id: uuid.UUID
    title: str
    source: Literal["file", "inline"]
    file_id: uuid.UUID | None
    status: str
    created_at: datetime
    metadata: dict[str, Any]


def export_line(exported: ExportedDocument) -> AsyncIterator[bytes]:
    """One NDJSON line: ``{"record": "document", id, title, source, file_id, status,
    created_at, metadata, "text": ...}``, its text encoded piece by piece (never a second
    copy of the whole text in memory)."""

    async def pieces() -> AsyncIterator[bytes]:
        document = exported.document
        head = _encoder.encode(
            ExportedDocumentHead(
                id=document.id,
                title=document.title,
                source=document.source,
                file_id=document.file_id,
                status=document.status,
                created_at=document.created_at,
                metadata=document.metadata,
            )
        )
        if exported.text is None:
            yield head[:-1] + b',"text":null}\n'
            return
        out = bytearray(head[:-1] + b',"text":"')
        for piece in exported.text:
            out += _encoder.encode(piece)[1:-1]  # a JSON string's escapes are per character
            if len(out) >= TEXT_BATCH_BYTES:
                yield bytes(out)
                out.clear()
        out += b'"}\n'
        yield bytes(out)

    return pieces()


async def _export_body(rag: RagService, user_id: uuid.UUID) -> AsyncIterator[bytes]:
    async for exported in rag.export(user_id):
        async for piece in export_line(exported):
            yield piece


async def _prepended(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    if first:
        yield first
    async for piece in rest:
        yield piece


class InternalMeController(Controller):
    path = "/internal/me"
    tags = ["internal"]
    dependencies = {**ON_BEHALF, **RAG}
    include_in_schema = False

    @get("/usage", summary="The user's quotas: documents, chunks, answers today, of their limits")
    async def usage(
        self, rag: NamedDependency[RagService], user_id: NamedDependency[uuid.UUID]
    ) -> dict[str, QuotaUse]:
        return await rag.usage(user_id)

    @get("/erasure", summary="Where the rag service is with erasing the user")
    async def erasure(
        self, rag: NamedDependency[RagService], user_id: NamedDependency[uuid.UUID]
    ) -> ErasureState:
        return await rag.erasure_state(user_id)

    @get(
        "/export",
        summary="The user's documents with their text, one JSON object a line",
        description='Each line `{"record": "document", id, title, source (`inline` or `file`),'
        " file_id, status, created_at, metadata, text}`, newest first; `text` is the"
        " document's extracted text (its chunks joined again, each overlap once), the text"
        " given for an inline document not indexed yet, or null when none is held.",
    )
    async def export(
        self, rag: NamedDependency[RagService], user_id: NamedDependency[uuid.UUID]
    ) -> Stream:
        body = _export_body(rag, user_id)
        # the first line read before the answer starts: a database that cannot answer is a
        # problem response (503), not a 200 cut short
        first = await anext(body, b"")
        return Stream(
            _prepended(first, body),
            media_type=NDJSON,
            headers={"Cache-Control": "private, no-store"},
        )
