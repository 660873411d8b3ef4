"""``Idempotency-Key`` on ``POST /v1/files``: what a key may be, what makes two uploads "the
same request", and what a retry gets.

A key belongs to one owner. The first upload under it claims it; a retry with the same key and
the same request (file name and content type as sent, then the bytes: size and sha256) gets the
first result, the same file, instead of a second copy. A key reused for a different request is
422 ``idempotency_key_reused``; a retry while the first upload still runs is 409
``idempotency_in_progress``. An upload that fails gives its key back: nothing was stored, so the
retry runs again. Keys expire (``IDEMPOTENCY_KEY_TTL_S``).
"""

from __future__ import annotations

import hashlib
import re
import uuid

import msgspec

from xtyl_common.errors import Conflict, InvalidInput

HEADER = "Idempotency-Key"
#: Answer header of a retry that got the first upload's result.
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255
#: Visible ASCII without spaces, quotes or backslashes (a UUID, a ULID, base64url …).
_KEY = re.compile(rf"[!#-\[\]-~]{{1,{MAX_KEY_LENGTH}}}")
#: What the header may be, as the OpenAPI document says it: bare or a structured-field string.
KEY_PATTERN = rf'^\s*(?:{_KEY.pattern}|"{_KEY.pattern}")\s*$'
#: An in-progress claim lapses this long after its last renewal (its upload process died).
LEASE_S = 15.0
#: A running upload renews its claim this often.
RENEW_EVERY_S = LEASE_S / 3
#: What a 409 ``idempotency_in_progress`` asks the client to wait before trying again.
IN_PROGRESS_RETRY_AFTER_S = 2


def parse_idempotency_key(raw: str) -> str:
    """The key of an ``Idempotency-Key`` header: 1 to 255 visible ASCII characters, bare
    (``Idempotency-Key: 4f0c…``) or as a structured-field string (``"4f0c…"``, the IETF
    draft's form). Anything else is 422 ``invalid_idempotency_key``."""
    value = raw.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    if not _KEY.fullmatch(value):
        raise InvalidInput(
            f"{HEADER} must be 1 to {MAX_KEY_LENGTH} visible ASCII characters"
            " (no spaces, quotes or backslashes)",
            code="invalid_idempotency_key",
            extra={"field": HEADER},
        )
    return value


def request_fingerprint(raw_name: str | None, content_type: str) -> str:
    """What identifies an upload before its bytes arrive: the file name as sent and the
    normalized content type (hex sha256; the bytes are compared by size and sha256 after)."""
    digest = hashlib.sha256()
    digest.update((raw_name or "").encode("utf-8", "surrogatepass"))
    digest.update(b"\x00")
    digest.update(content_type.encode("utf-8"))
    return digest.hexdigest()


class KeyClaim(msgspec.Struct, frozen=True, kw_only=True):
    """This request holds the key: it completes it with its file, or gives it back."""

    owner_id: uuid.UUID
    key: str
    token: uuid.UUID


class KeyRecord(msgspec.Struct, frozen=True, kw_only=True):
    """The key is held by an earlier request: in progress (no ``file_id``) or completed."""

    fingerprint: str
    file_id: uuid.UUID | None
    size: int | None
    sha256: str | None


def key_reused() -> InvalidInput:
    return InvalidInput(
        f"this {HEADER} was used for a different upload; use a new key for a new upload",
        code="idempotency_key_reused",
        extra={"field": HEADER},
    )


def in_progress() -> Conflict:
    return Conflict(
        f"an upload with this {HEADER} is still in progress; retry after it has finished",
        code="idempotency_in_progress",
        headers={"Retry-After": str(IN_PROGRESS_RETRY_AFTER_S)},
    )


def same_bytes(record: KeyRecord, size: int, sha256: str) -> bool:
    return record.size == size and record.sha256 == sha256
