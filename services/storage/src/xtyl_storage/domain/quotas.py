"""Storage quotas: the bytes and files one user may keep, and how an upload holds its room.

A user's room is ``limit - stored - held``: ``stored`` counts their ready files
(``xtyl_storage.usage``), ``held`` the reservations of their uploads in progress (one file each,
and the bytes each holds). An upload holds room before any of its bytes go to S3: its declared
size when it has one, else what it read so far plus :data:`RESERVE_STEP_BYTES`; it holds more
as it reads past that, and the transaction that records the file checks once more with the
real size. So however many uploads race, what is stored never passes the limit.
"""

from __future__ import annotations

import msgspec

from xtyl_common.quotas import QuotaExceeded, QuotaUse
from xtyl_storage.domain.parts import MIB

STORAGE_BYTES = "storage_bytes"
FILES = "files"
#: A body with no declared size (or read past it) holds room this much ahead of what it read.
RESERVE_STEP_BYTES = 1 * MIB
#: An upload through the service holds its room this long, renewed while its bytes flow: the
#: room of a process that died is free again at the latest this long after its last renewal.
UPLOAD_LEASE_S = 120.0
#: How often a running upload renews its lease (at most; only while bytes arrive).
RENEW_AFTER_S = 30.0
#: A presigned upload holds its room until its URL expired plus this (a PUT started just before
#: the URL expired may still be sending; completing it later checks the room again).
PRESIGN_HOLD_GRACE_S = 3600.0


class StorageLimits(msgspec.Struct, frozen=True, kw_only=True):
    storage_bytes: int
    files: int


class Usage(msgspec.Struct, frozen=True, kw_only=True):
    """One user's stored bytes and files, and what other uploads in progress hold."""

    bytes: int
    files: int
    held_bytes: int = 0
    held_files: int = 0


def room_for(usage: Usage, limits: StorageLimits, *, need: int, want: int) -> int:
    """The bytes an upload may hold: ``want``, or less down to ``need`` when that is all that
    is left; :class:`QuotaExceeded` when not even ``need`` (or one more file) fits."""
    if usage.files + usage.held_files + 1 > limits.files:
        raise QuotaExceeded(
            FILES,
            used=usage.files,
            limit=limits.files,
            detail=f"you keep {usage.files} of the {limits.files} files allowed"
            + (f" ({usage.held_files} more uploading)" if usage.held_files else "")
            + ": delete some to upload more",
        )
    left = limits.storage_bytes - usage.bytes - usage.held_bytes
    if need > left:
        raise QuotaExceeded(
            STORAGE_BYTES,
            used=usage.bytes,
            limit=limits.storage_bytes,
            detail=f"{need} more bytes do not fit: {usage.bytes} of the"
            f" {limits.storage_bytes} bytes allowed are stored"
            + (f" and {usage.held_bytes} held by uploads in progress" if usage.held_bytes else ""),
        )
    return max(need, min(want, left))


def first_hold(declared: int | None, *, overhead: int, max_bytes: int) -> tuple[int, int]:
    """``(need, want)`` of an upload before a byte is read: a raw body's ``Content-Length``
    exactly (``overhead`` 0); a form's between its length less the most its boundaries and
    part headers may take (``overhead``) and its length; no declared size: one byte (and one
    file), more as the bytes arrive."""
    if declared is None:
        return 1, 1
    want = min(declared, max_bytes)
    if overhead == 0:
        return want, want
    return max(1, min(declared - overhead, want)), want


def next_hold(read: int, *, max_bytes: int, final: bool) -> tuple[int, int]:
    """``(need, want)`` once an upload read ``read`` bytes past what it holds: exactly what it
    read at the end of the body, else that and a step ahead (never past ``max_bytes``)."""
    if final:
        return read, read
    return read, min(read + RESERVE_STEP_BYTES, max_bytes)


def usage_report(usage: Usage, limits: StorageLimits) -> dict[str, QuotaUse]:
    """``GET /internal/me/usage``: what the user keeps (uploads in progress not counted)."""
    return {
        STORAGE_BYTES: QuotaUse(used=usage.bytes, limit=limits.storage_bytes, unit="bytes"),
        FILES: QuotaUse(used=usage.files, limit=limits.files),
    }
