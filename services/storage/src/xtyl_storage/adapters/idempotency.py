"""``xtyl_storage.idempotency_keys``: who holds which ``Idempotency-Key`` of ``POST /v1/files``.

:meth:`IdempotencyKeyRepository.claim` is one statement, safe against concurrent requests with
the same key: exactly one of them inserts (or takes over an expired or abandoned row) and holds
the key. A claim is completed by :func:`complete_claim` in the transaction that records the
file, so the key says "done, file X" exactly when file X exists.
"""

from __future__ import annotations

import uuid
from contextlib import AbstractAsyncContextManager
from typing import Any

import asyncpg
import structlog

from xtyl_common.db import connection
from xtyl_common.errors import Conflict
from xtyl_common.retry import RetryPolicy
from xtyl_storage.domain.files import StoredFile
from xtyl_storage.domain.idempotency import KeyClaim, KeyRecord

log = structlog.stdlib.get_logger("xtyl.storage.idempotency")

#: Expired keys deleted by each claim (the table stays as large as one TTL's keyed uploads).
PURGE_BATCH = 100
#: A claim that lost its race to a request giving the key back (between the claim and the read
#: of its holder) claims again at once, 3 tries in all.
CLAIM_RACES = RetryPolicy(
    attempts=3, timeout_s=None, wait_initial_s=0.0, wait_max_s=0.0, wait_jitter_s=0.0
)

_CLAIM = """
insert into xtyl_storage.idempotency_keys as k
    (owner_id, key, fingerprint, token, locked_until, expires_at)
values ($1, $2, $3, $4, now() + make_interval(secs => $5), now() + make_interval(secs => $6))
on conflict (owner_id, key) do update
    set fingerprint = excluded.fingerprint,
        token = excluded.token,
        locked_until = excluded.locked_until,
        created_at = now(),
        expires_at = excluded.expires_at,
        file_id = null,
        size = null,
        sha256 = null
    where k.expires_at <= now() or (k.file_id is null and k.locked_until <= now())
returning token
"""

_PURGE = """
delete from xtyl_storage.idempotency_keys where ctid = any(array(
    select ctid from xtyl_storage.idempotency_keys where expires_at <= now() limit $1
))
"""


class _GivenBack(Exception):
    """The key was given back between the claim and the read of its holder."""


class ClaimLost(Conflict):
    """The key was taken over (its claim lapsed unrenewed) before this upload completed."""

    default_code = "idempotency_in_progress"


class IdempotencyKeyRepository:
    def __init__(self, pool: asyncpg.Pool, *, timeout_s: float = 10.0) -> None:
        self._pool = pool
        self._timeout = timeout_s

    def _connection(self, timeout_s: float | None = None) -> AbstractAsyncContextManager[Any]:
        return connection(
            self._pool,
            timeout_s=timeout_s or self._timeout,
            unavailable="the upload catalogue is unavailable, try again later",
        )

    async def claim(
        self,
        owner_id: uuid.UUID,
        key: str,
        fingerprint: str,
        *,
        ttl_s: float,
        lease_s: float,
    ) -> KeyClaim | KeyRecord:
        """Hold ``key`` for a new upload (a :class:`KeyClaim`), or the :class:`KeyRecord` of
        the request that holds it (completed, or in progress and renewed)."""
        async with self._connection() as conn:
            await conn.execute(_PURGE, PURGE_BATCH, timeout=self._timeout)
            wanted = KeyClaim(owner_id=owner_id, key=key, token=uuid.uuid4())
            try:
                return await CLAIM_RACES.call(
                    _GivenBack,
                    self._claim_once,
                    conn,
                    wanted,
                    fingerprint,
                    ttl_s=ttl_s,
                    lease_s=lease_s,
                )
            except _GivenBack:
                raise Conflict(
                    "this Idempotency-Key is busy, retry", code="idempotency_in_progress"
                ) from None

    async def _claim_once(
        self,
        conn: asyncpg.Connection,
        wanted: KeyClaim,
        fingerprint: str,
        *,
        ttl_s: float,
        lease_s: float,
    ) -> KeyClaim | KeyRecord:
        owner_id, key, token = wanted.owner_id, wanted.key, wanted.token
        won = await conn.fetchval(
            _CLAIM, owner_id, key, fingerprint, token, lease_s, ttl_s, timeout=self._timeout
        )
        if won == token:
            return wanted
        row = await conn.fetchrow(
            "select fingerprint, file_id, size, sha256"
            " from xtyl_storage.idempotency_keys where owner_id = $1 and key = $2",
            owner_id,
            key,
            timeout=self._timeout,
        )
        if row is None:
            raise _GivenBack
        return KeyRecord(
            fingerprint=row["fingerprint"],
            file_id=row["file_id"],
            size=row["size"],
            sha256=row["sha256"],
        )

    async def renew(self, claim: KeyClaim, *, lease_s: float) -> bool:
        """Extend a running upload's hold on its key; False when it is no longer held."""
        async with self._connection() as conn:
            renewed = await conn.fetchval(
                "update xtyl_storage.idempotency_keys"
                " set locked_until = now() + make_interval(secs => $4)"
                " where owner_id = $1 and key = $2 and token = $3 and file_id is null"
                " returning true",
                claim.owner_id,
                claim.key,
                claim.token,
                lease_s,
                timeout=self._timeout,
            )
        return bool(renewed)

    async def release(self, claim: KeyClaim, *, timeout_s: float) -> None:
        """Give the key back after a failed upload (a completed key is kept)."""
        async with self._connection(timeout_s) as conn:
            await conn.execute(
                "delete from xtyl_storage.idempotency_keys"
                " where owner_id = $1 and key = $2 and token = $3 and file_id is null",
                claim.owner_id,
                claim.key,
                claim.token,
                timeout=timeout_s,
            )


async def complete_claim(
    conn: asyncpg.Connection, claim: KeyClaim, file: StoredFile, *, timeout_s: float
) -> None:
    """Record ``file`` as the key's result, in the caller's transaction (the one inserting the
    file); :class:`ClaimLost` when the key is no longer this request's, rolling it back."""
    done = await conn.fetchval(
        "update xtyl_storage.idempotency_keys"
        " set file_id = $4, size = $5, sha256 = $6, locked_until = null"
        " where owner_id = $1 and key = $2 and token = $3 and file_id is null"
        " returning true",
        claim.owner_id,
        claim.key,
        claim.token,
        file.id,
        file.size,
        file.sha256,
        timeout=timeout_s,
    )
    if not done:
        log.warning("idempotency_claim_lost", file_id=str(file.id))
        raise ClaimLost(
            "another request with this Idempotency-Key took over; retry to get its result"
        )
