"""What a user sees of their account across the services: their usage against their quotas,
their deletion's progress, the layout of their export. Pure logic: the gateway's use cases
fill these from the services' ``/internal/me/*`` answers."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

import msgspec

from xtyl_common.erasure import ErasureState
from xtyl_common.quotas import QuotaUse

#: The services that hold a user's data, each erasing it on ``user.deleted``.
ERASING_SERVICES: tuple[str, ...] = ("storage", "rag", "notify")

DeletionStatus = Literal["erasing", "erased"]


class ServiceErasure(msgspec.Struct, frozen=True, kw_only=True):
    """One service's erasure as the user sees it; ``unknown`` when it did not answer."""

    status: Literal["none", "erasing", "erased", "unknown"]
    started_at: datetime | None = None
    completed_at: datetime | None = None
    erased: dict[str, int] = msgspec.field(default_factory=dict[str, int])

    @classmethod
    def of(cls, state: ErasureState | None) -> ServiceErasure:
        if state is None:
            return cls(status="unknown")
        return cls(
            status=state.status,
            started_at=state.started_at,
            completed_at=state.completed_at,
            erased=state.erased,
        )


class DeletionProgress(msgspec.Struct, frozen=True, kw_only=True):
    user_id: uuid.UUID
    requested_at: datetime
    #: ``erased`` once every service finished; ``erasing`` until then.
    status: DeletionStatus
    services: dict[str, ServiceErasure]

    @classmethod
    def of(
        cls, user_id: uuid.UUID, requested_at: datetime, states: dict[str, ErasureState | None]
    ) -> DeletionProgress:
        services = {name: ServiceErasure.of(state) for name, state in states.items()}
        done = all(s.status == "erased" for s in services.values())
        return cls(
            user_id=user_id,
            requested_at=requested_at,
            status="erased" if done else "erasing",
            services=services,
        )


class Quota(msgspec.Struct, frozen=True, kw_only=True):
    used: int
    limit: int
    unit: str
    #: The service that enforces it.
    service: str


class Usage(msgspec.Struct, frozen=True, kw_only=True):
    quotas: dict[str, Quota]
    #: Services that did not answer: their quotas are missing above.
    unavailable: list[str] = msgspec.field(default_factory=list[str])


def merge_usage(answers: dict[str, dict[str, QuotaUse] | None]) -> Usage:
    """One view of the quotas every service reported (``None``: the service did not answer)."""
    quotas: dict[str, Quota] = {}
    unavailable: list[str] = []
    for service, reported in answers.items():
        if reported is None:
            unavailable.append(service)
            continue
        for name, use in sorted(reported.items()):
            quotas[name] = Quota(used=use.used, limit=use.limit, unit=use.unit, service=service)
    return Usage(quotas=quotas, unavailable=unavailable)


# --- the export's layout ------------------------------------------------------------------

EXPORT_README = """\
Your xtyl data, as held on {exported_at} (UTC).

  profile.json          your profile
  files.ndjson          your files' details, one JSON object per line
  files/<id>/<name>     each file's bytes, as you uploaded them
  documents.ndjson      your documents' details (search index), one per line
  documents/<id>.txt    each document's extracted text
  notifications.ndjson  your email address on file, your email preferences, the emails
                        we sent you and the document events kept for your document emails
                        (one per line, "record" says which)
  manifest.json         what this archive holds; "complete": true when nothing is missing
"""


class ExportManifest(msgspec.Struct, kw_only=True):
    user_id: uuid.UUID
    exported_at: datetime
    files: int = 0
    file_bytes: int = 0
    documents: int = 0
    notification_records: int = 0
    #: Files listed but gone before their bytes were read (deleted meanwhile).
    files_missing: list[str] = msgspec.field(default_factory=list[str])
    complete: bool = True


class ExportFile(msgspec.Struct, frozen=True, kw_only=True):
    """What the export needs of a storage ``file`` record (the line itself goes out whole)."""

    id: uuid.UUID
    name: str
    size: int
    created_at: datetime | None = None


#: A document's text goes into the archive this many characters at a time.
TEXT_SLICE = 64 * 1024


def split_document(line: bytes) -> tuple[bytes, str, datetime | None]:
    """A rag ``document`` record: its details without the text (for documents.ndjson), the
    text (its own entry) and when it was made. The line is decoded once: besides the line,
    one copy of the text is held."""
    record: dict[str, Any] = msgspec.json.decode(line)
    text = record.pop("text", None)
    created_at = _created_at(record.get("created_at"))
    return msgspec.json.encode(record), text if isinstance(text, str) else "", created_at


def record_id(record: bytes) -> uuid.UUID:
    """The ``id`` of an encoded record (a UUID: never a path of the archive's choosing)."""
    return msgspec.json.decode(record, type=_Identified).id


class _Identified(msgspec.Struct):
    id: uuid.UUID


def _created_at(value: object) -> datetime | None:
    try:
        return msgspec.convert(value, datetime | None)
    except msgspec.ValidationError:
        return None
