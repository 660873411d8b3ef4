"""``xtyl_storage.usage`` and ``xtyl_storage.reservations``: what each user keeps, and the room
their uploads in progress hold (see :mod:`xtyl_storage.domain.quotas`).

Every check of a user's room locks their usage row first (:func:`locked_usage`), so checks of
one user run one after the other and each sees what the previous one held or stored: twenty
uploads racing for the last megabyte get exactly the room there is. The row counts ready
files only; a trigger keeps it in the transaction of every change of ``xtyl_storage.files``.
A reservation past its ``expires_at`` (its process died) no longer counts and is purged by the
next check of that user.

:class:`QuotaHold` is one upload's reservation: held before the first byte is read, grown as
bytes arrive past it (:meth:`QuotaHold.metered`), settled by the transaction that records the
file (:func:`settle_room`), released when the upload fails.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Any

import asyncpg

from xtyl_common.db import connection
from xtyl_common.erasure import ErasureLedger
from xtyl_common.quotas import QuotaExceeded
from xtyl_storage.domain.files import too_large
from xtyl_storage.domain.quotas import (
    RENEW_AFTER_S,
    RESERVE_STEP_BYTES,
    UPLOAD_LEASE_S,
    StorageLimits,
    Usage,
    next_hold,
    room_for,
)

_LOCK_USAGE = """
insert into xtyl_storage.usage as u (owner_id) values ($1)
on conflict (owner_id) do update set owner_id = u.owner_id
returning bytes, files
"""

_HELD_BY_OTHERS = """
with purged as (
    delete from xtyl_storage.reservations where owner_id = $1 and expires_at <= now()
)
select coalesce(sum(bytes), 0)::bigint as bytes, count(*) as files
from xtyl_storage.reservations
where owner_id = $1 and id <> $2 and expires_at > now()
"""

_HOLD = """
insert into xtyl_storage.reservations as r (id, owner_id, bytes, expires_at)
values ($1, $2, $3, now() + make_interval(secs => $4))
on conflict (id) do update set bytes = excluded.bytes, expires_at = excluded.expires_at
    where r.owner_id = excluded.owner_id
"""


async def locked_usage(
    conn: asyncpg.Connection, owner_id: uuid.UUID, hold_id: uuid.UUID, *, timeout_s: float
) -> Usage:
    """Lock the owner's usage row (made when missing) until the transaction ends; what they
    store, and what uploads other than ``hold_id`` hold."""
    stored = await conn.fetchrow(_LOCK_USAGE, owner_id, timeout=timeout_s)
    held = await conn.fetchrow(_HELD_BY_OTHERS, owner_id, hold_id, timeout=timeout_s)
    assert stored is not None
    assert held is not None
    return Usage(
        bytes=stored["bytes"],
        files=stored["files"],
        held_bytes=held["bytes"],
        held_files=held["files"],
    )


async def hold_room(
    conn: asyncpg.Connection,
    owner_id: uuid.UUID,
    hold_id: uuid.UUID,
    limits: StorageLimits,
    *,
    need: int,
    want: int,
    lease_s: float,
    timeout_s: float,
) -> int:
    """Hold (or grow, or renew) ``hold_id``'s room, in the caller's transaction: the bytes held
    (``want``, or what is left down to ``need``); :class:`QuotaExceeded` when even that does
    not fit."""
    usage = await locked_usage(conn, owner_id, hold_id, timeout_s=timeout_s)
    granted = room_for(usage, limits, need=need, want=want)
    await conn.execute(_HOLD, hold_id, owner_id, granted, lease_s, timeout=timeout_s)
    return granted


async def settle_room(
    conn: asyncpg.Connection,
    owner_id: uuid.UUID,
    hold_id: uuid.UUID,
    limits: StorageLimits,
    *,
    size: int,
    timeout_s: float,
) -> None:
    """In the transaction that records a ready file of ``size`` bytes: check it fits (it does
    while its reservation was alive) and drop the reservation; the trigger then counts the
    file in the owner's usage."""
    usage = await locked_usage(conn, owner_id, hold_id, timeout_s=timeout_s)
    room_for(usage, limits, need=size, want=size)
    await drop_hold(conn, hold_id, timeout_s=timeout_s)


async def drop_hold(conn: asyncpg.Connection, hold_id: uuid.UUID, *, timeout_s: float) -> None:
    await conn.execute(
        "delete from xtyl_storage.reservations where id = $1", hold_id, timeout=timeout_s
    )


class UsageRepository:
    def __init__(
        self,
        pool: asyncpg.Pool,
        ledger: ErasureLedger,
        limits: StorageLimits,
        *,
        timeout_s: float = 10.0,
    ) -> None:
        self._pool = pool
        self._ledger = ledger
        self.limits = limits
        self._timeout = timeout_s

    def _connection(self, timeout_s: float | None = None) -> AbstractAsyncContextManager[Any]:
        return connection(
            self._pool,
            timeout_s=timeout_s or self._timeout,
            unavailable="the file catalogue is unavailable, try again later",
        )

    async def hold(
        self, owner_id: uuid.UUID, hold_id: uuid.UUID, *, need: int, want: int, lease_s: float
    ) -> int:
        """:func:`hold_room` in a transaction of its own, refused for a deleted user (403
        ``account_deleted``)."""
        async with self._connection() as conn, conn.transaction():
            await self._ledger.refuse_if_erased(conn, owner_id)
            return await hold_room(
                conn,
                owner_id,
                hold_id,
                self.limits,
                need=need,
                want=want,
                lease_s=lease_s,
                timeout_s=self._timeout,
            )

    async def release(self, hold_id: uuid.UUID, *, timeout_s: float) -> None:
        """Give a failed upload's room back (nothing when it was settled or lapsed)."""
        async with self._connection(timeout_s) as conn:
            await drop_hold(conn, hold_id, timeout_s=timeout_s)

    async def usage(self, owner_id: uuid.UUID) -> Usage:
        """What the owner keeps: their ready files' bytes and count."""
        async with self._connection() as conn:
            row = await conn.fetchrow(
                "select bytes, files from xtyl_storage.usage where owner_id = $1",
                owner_id,
                timeout=self._timeout,
            )
        if row is None:
            return Usage(bytes=0, files=0)
        return Usage(bytes=row["bytes"], files=row["files"])


class QuotaHold:
    """One upload's reservation (its id is the file's id)."""

    def __init__(
        self,
        usage: UsageRepository,
        owner_id: uuid.UUID,
        hold_id: uuid.UUID,
        granted: int,
        *,
        refused: QuotaExceeded | None = None,
    ) -> None:
        self._usage = usage
        self.owner_id = owner_id
        self.id = hold_id
        #: Bytes held: the upload may send this many to S3.
        self.granted = granted
        #: The quota refused the room before the upload started: raised once the upload is
        #: known not to be the replay of an earlier one (same Idempotency-Key).
        self.refused = refused
        #: The transaction that recorded the file dropped the reservation.
        self.settled = False
        self._renewed = time.monotonic()

    async def _hold(self, need: int, want: int) -> None:
        self.granted = await self._usage.hold(
            self.owner_id, self.id, need=need, want=want, lease_s=UPLOAD_LEASE_S
        )
        self._renewed = time.monotonic()

    async def metered(
        self, chunks: AsyncIterable[bytes], *, max_bytes: int
    ) -> AsyncIterator[bytes]:
        """``chunks``, each passed on only once the room for it is held: bytes past the hold
        are read ahead (up to a step) and held before they go on; past ``max_bytes`` 413
        ``file_too_large``, past the quota 403 ``quota_storage_bytes``. The lease is renewed
        while bytes flow."""
        read = 0
        ahead: list[bytes] = []
        async for chunk in chunks:
            if not chunk:
                continue
            read += len(chunk)
            if read > max_bytes:
                raise too_large(max_bytes)
            if not ahead and read <= self.granted:
                if time.monotonic() - self._renewed > RENEW_AFTER_S:
                    await self._hold(self.granted, self.granted)
                yield chunk
                continue
            ahead.append(chunk)
            if read - self.granted >= RESERVE_STEP_BYTES:
                await self._hold(*next_hold(read, max_bytes=max_bytes, final=False))
                for held in ahead:
                    yield held
                ahead.clear()
        if ahead:
            await self._hold(*next_hold(read, max_bytes=max_bytes, final=True))
            for held in ahead:
                yield held
