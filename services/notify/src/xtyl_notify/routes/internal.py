"""``/internal/me/*``: the account of the user a service token names (the gateway's
``/v1/me/*``); user tokens are refused, and a service token naming no user is ``403
user_required``.

* ``GET /internal/me/erasure``: notify's erasure of the user (:class:`ErasureState`);
* ``GET /internal/me/export``: ``application/x-ndjson``, streamed: ``{"record": "recipient",
  ...}`` (when notify knows the user), ``{"record": "preferences", ...}``, then one
  ``{"record": "email", id, kind, subject, status, created_at, sent_at, to_address,
  text_body}`` per email, newest first, then one ``{"record": "document_notice", document_id,
  kind, title, reason, occurred_at, status}`` per document event kept for the user's document
  emails; read a page at a time.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.response import Stream

from xtyl_common.erasure import ErasureState
from xtyl_common.identity import ON_BEHALF
from xtyl_notify.domain.emails import EmailRecord, NoticeRecord, RecipientRecord
from xtyl_notify.domain.preferences import PreferencesRecord
from xtyl_notify.routes.notifications import service_of
from xtyl_notify.routes.schemas import (
    ExportedEmail,
    ExportedNotice,
    ExportedPreferences,
    ExportedRecipient,
)
from xtyl_notify.service import NotifyService

NDJSON = "application/x-ndjson"
_encoder = msgspec.json.Encoder()


class InternalMeController(Controller):
    path = "/internal/me"
    tags = ["internal"]
    dependencies = ON_BEHALF
    include_in_schema = False

    @get("/erasure", summary="Where notify is with erasing the user")
    async def erasure(
        self, request: Request[Any, Any, Any], user_id: NamedDependency[uuid.UUID]
    ) -> ErasureState:
        return await service_of(request).erasure_state(user_id)

    @get("/export", summary="What notify holds about the user, one JSON object a line")
    async def export(
        self, request: Request[Any, Any, Any], user_id: NamedDependency[uuid.UUID]
    ) -> Stream:
        return Stream(
            _export_lines(service_of(request), user_id),
            media_type=NDJSON,
            headers={"Cache-Control": "private, no-store"},
        )


#: Each record notify keeps -> the line the export shows of it (the fields it names, read
#: from the record's attributes of the same names).
_EXPORTED: dict[type, type[msgspec.Struct]] = {
    RecipientRecord: ExportedRecipient,
    PreferencesRecord: ExportedPreferences,
    EmailRecord: ExportedEmail,
    NoticeRecord: ExportedNotice,
}


async def _export_lines(service: NotifyService, user_id: uuid.UUID) -> AsyncIterator[bytes]:
    async for item in service.export(user_id):
        line = msgspec.convert(item, _EXPORTED[type(item)], from_attributes=True)
        yield _encoder.encode(line) + b"\n"
