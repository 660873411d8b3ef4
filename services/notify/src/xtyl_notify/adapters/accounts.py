"""A user's account in notify: their preferences, their erasure, their export.

Erasure runs in short transactions, each idempotent, so a worker killed between two of them
finishes on redelivery: :meth:`AccountRepository.cancel_open_emails` (nothing of the user's
leaves after it), :meth:`~AccountRepository.record_brevo_logs` (once Brevo was asked to
forget the addresses), :meth:`~AccountRepository.hash_suppressions`,
:meth:`~AccountRepository.anonymise_emails` (batch after batch),
:meth:`~AccountRepository.delete_user_rows`, :meth:`~AccountRepository.complete_erasure`.
Running totals live in ``xtyl_notify.erasure_progress`` until the erasure completes.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any

import asyncpg

from xtyl_common.db import connection
from xtyl_common.erasure import ErasureState
from xtyl_notify.adapters.postgres import LEDGER, OPEN
from xtyl_notify.domain.addresses import is_address_hash
from xtyl_notify.domain.emails import DocumentKind, NoticeRecord, RecipientRecord
from xtyl_notify.domain.preferences import Preferences, PreferencesRecord

#: The erasure's counts, as ``erased`` records them.
_PROGRESS: tuple[str, ...] = (
    "emails_cancelled",
    "emails_anonymised",
    "suppressions_hashed",
    "recipients",
    "preferences",
    "document_notices",
    "brevo_logs_deleted",
    "brevo_logs_refused",
)


class AccountRepository:
    def __init__(self, pool: asyncpg.Pool, *, timeout_s: float = 10.0) -> None:
        self._pool = pool
        self._timeout = timeout_s

    def _connection(self) -> AbstractAsyncContextManager[Any]:
        return connection(
            self._pool,
            timeout_s=self._timeout,
            unavailable="the account is unavailable, try again later",
        )

    # --- preferences ----------------------------------------------------------------------

    async def preferences(self, user_id: uuid.UUID) -> PreferencesRecord:
        async with self._connection() as conn:
            row = await conn.fetchrow(
                "select document_ready, document_failed, updated_at"
                " from xtyl_notify.preferences where user_id = $1",
                user_id,
                timeout=self._timeout,
            )
        return PreferencesRecord() if row is None else PreferencesRecord(**dict(row.items()))

    async def set_preferences(self, user_id: uuid.UUID, wanted: Preferences) -> Preferences:
        """Store the user's choices; :class:`~xtyl_common.erasure.AccountDeleted` for a
        deleted user."""
        async with self._connection() as conn, conn.transaction():
            await LEDGER.refuse_if_erased(conn, user_id)
            await self._upsert(conn, user_id, wanted)
        return wanted

    async def turn_off(self, user_id: uuid.UUID, kinds: tuple[DocumentKind, ...]) -> bool:
        """Turn ``kinds`` off (the others as they were); ``False`` when the user was deleted
        (nothing written, nothing will be sent anyway)."""
        async with self._connection() as conn, conn.transaction():
            await LEDGER.lock_user(conn, user_id)
            if await LEDGER.is_erased(conn, user_id):
                return False
            row = await conn.fetchrow(
                "select document_ready, document_failed from xtyl_notify.preferences"
                " where user_id = $1 for update",
                user_id,
                timeout=self._timeout,
            )
            current = Preferences() if row is None else Preferences(**dict(row.items()))
            wanted = current.without(kinds)
            if row is None or wanted != current:
                await self._upsert(conn, user_id, wanted)
        return True

    async def _upsert(self, conn: Any, user_id: uuid.UUID, wanted: Preferences) -> None:
        await conn.execute(
            "insert into xtyl_notify.preferences (user_id, document_ready, document_failed)"
            " values ($1, $2, $3) on conflict (user_id) do update"
            " set document_ready = excluded.document_ready,"
            " document_failed = excluded.document_failed, updated_at = now()",
            user_id,
            wanted.document_ready,
            wanted.document_failed,
            timeout=self._timeout,
        )

    # --- export ---------------------------------------------------------------------------

    async def recipient_record(self, user_id: uuid.UUID) -> RecipientRecord | None:
        async with self._connection() as conn:
            row = await conn.fetchrow(
                "select user_id, email, full_name, created_at, updated_at"
                " from xtyl_notify.recipients where user_id = $1",
                user_id,
                timeout=self._timeout,
            )
        return None if row is None else RecipientRecord(**dict(row.items()))

    async def notices(
        self, user_id: uuid.UUID, *, limit: int, after: tuple[uuid.UUID, str] | None = None
    ) -> list[NoticeRecord]:
        """One page of the user's document notices, by document then kind (the primary key's
        order), those after ``after`` (the last page's last ``(document_id, kind)``)."""
        async with self._connection() as conn:
            rows = await conn.fetch(
                "select document_id, kind, title, reason, occurred_at, status"
                " from xtyl_notify.document_notices where user_id = $1"
                " and ($2::uuid is null or (document_id, kind) > ($2::uuid, $3::text))"
                " order by document_id, kind limit $4",
                user_id,
                None if after is None else after[0],
                None if after is None else after[1],
                limit,
                timeout=self._timeout,
            )
        return [NoticeRecord(**dict(row.items())) for row in rows]

    # --- erasure --------------------------------------------------------------------------

    async def erasure_state(self, user_id: uuid.UUID) -> ErasureState:
        async with self._connection() as conn:
            return await LEDGER.state(conn, user_id)

    async def begin_erasure(self, user_id: uuid.UUID, *, requested_at: datetime) -> bool:
        """Mark the user erased from now on (every write path refuses them once this commits);
        ``False`` when their erasure completed before."""
        async with self._connection() as conn, conn.transaction():
            return await LEDGER.begin(conn, user_id, requested_at=requested_at)

    async def cancel_open_emails(self, user_id: uuid.UUID) -> tuple[int, float | None]:
        """Cancel the user's emails not sent yet, but those a worker is sending right now;
        how many were cancelled, and the seconds until the last such send's lease ends
        (``None``: none is being sent). A cancelled email is final: no send path takes it."""
        async with self._connection() as conn, conn.transaction():
            status = await conn.execute(
                "update xtyl_notify.emails set status = 'cancelled', locked_until = null,"  # noqa: S608 - constant statuses
                " last_error = 'cancelled: the account was deleted', updated_at = now()"
                f" where user_id = $1 and status in {OPEN}"
                " and (locked_until is null or locked_until < now())",
                user_id,
                timeout=self._timeout,
            )
            cancelled = int(status.split()[-1])
            await self._progress(conn, user_id, emails_cancelled=cancelled)
            wait_s: float | None = await conn.fetchval(
                "select extract(epoch from max(locked_until) - now())::float8"  # noqa: S608 - constant statuses
                f" from xtyl_notify.emails where user_id = $1 and status in {OPEN}",
                user_id,
                timeout=self._timeout,
            )
        return cancelled, wait_s

    async def addresses_of(self, user_id: uuid.UUID) -> set[str]:
        """Every address notify holds for the user: the recipient's, and those their emails
        went to (an earlier address, the new one of an email change)."""
        async with self._connection() as conn:
            rows = await conn.fetch(
                "select email as address from xtyl_notify.recipients"
                " where user_id = $1 and email is not null"
                " union select distinct to_address from xtyl_notify.emails where user_id = $1",
                user_id,
                timeout=self._timeout,
            )
        return {row["address"] for row in rows if not is_address_hash(row["address"])}

    async def record_brevo_logs(self, user_id: uuid.UUID, *, deleted: int, refused: int) -> None:
        """Count the addresses whose Brevo logs were deleted (or refused) in this run."""
        async with self._connection() as conn:
            await self._progress(
                conn, user_id, brevo_logs_deleted=deleted, brevo_logs_refused=refused
            )

    async def hash_suppressions(self, user_id: uuid.UUID, hashes: Mapping[str, str]) -> int:
        """Suppressions of the user's addresses written before hashes (the lower-cased
        address) become their hash (``hashes``: lower-cased address -> hash), keeping their
        reason: the address stays suppressed, the address itself goes."""
        if not hashes:
            return 0
        plain, hashed = list(hashes), [hashes[address] for address in hashes]
        async with self._connection() as conn, conn.transaction():
            await conn.execute(
                "insert into xtyl_notify.suppressions (address, reason, source, created_at)"
                " select v.hash, s.reason, s.source, s.created_at"
                " from unnest($1::text[], $2::text[]) as v(plain, hash)"
                " join xtyl_notify.suppressions s on s.address = v.plain"
                " on conflict (address) do nothing",
                plain,
                hashed,
                timeout=self._timeout,
            )
            status = await conn.execute(
                "delete from xtyl_notify.suppressions where address = any($1::text[])",
                plain,
                timeout=self._timeout,
            )
            count = int(status.split()[-1])
            await self._progress(conn, user_id, suppressions_hashed=count)
        return count

    async def anonymise_emails(
        self, user_id: uuid.UUID, hash_address: Callable[[str], str], *, batch_size: int
    ) -> int:
        """One batch of the user's email log made anonymous: no user id, the address as its
        hash, subject, bodies, name, headers and error cleared, the dedupe key (which may name
        the user) replaced; kept for the counts. How many rows (0: none left)."""
        async with self._connection() as conn, conn.transaction():
            rows = await conn.fetch(
                "select id, to_address from xtyl_notify.emails where user_id = $1"
                " order by id limit $2 for update",
                user_id,
                batch_size,
                timeout=self._timeout,
            )
            if not rows:
                return 0
            ids = [row["id"] for row in rows]
            hashes = [hash_address(row["to_address"]) for row in rows]
            await conn.execute(
                "update xtyl_notify.emails e set user_id = null, to_address = v.hash,"
                " to_name = null, subject = '', html_body = '', text_body = '',"
                " headers = '{}'::jsonb, last_error = null, locked_until = null,"
                " dedupe_key = 'erased:' || e.id::text, updated_at = now()"
                " from unnest($1::uuid[], $2::text[]) as v(id, hash) where e.id = v.id",
                ids,
                hashes,
                timeout=self._timeout,
            )
            await self._progress(conn, user_id, emails_anonymised=len(ids))
        return len(ids)

    async def delete_user_rows(self, user_id: uuid.UUID) -> None:
        """The recipient, preferences, document notices and window of the user, gone."""
        counts: dict[str, int] = {}
        async with self._connection() as conn, conn.transaction():
            for table in ("recipients", "preferences", "document_notices", "document_windows"):
                status = await conn.execute(
                    f"delete from xtyl_notify.{table} where user_id = $1",  # noqa: S608 - constant tables
                    user_id,
                    timeout=self._timeout,
                )
                if table in _PROGRESS:
                    counts[table] = int(status.split()[-1])
            await self._progress(conn, user_id, **counts)

    async def complete_erasure(self, user_id: uuid.UUID) -> dict[str, int]:
        """Record the erasure as complete with the totals of every run (the progress row,
        dropped in the same transaction); those totals."""
        async with self._connection() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"delete from xtyl_notify.erasure_progress where user_id = $1"  # noqa: S608 - constant columns
                f" returning {', '.join(_PROGRESS)}",
                user_id,
                timeout=self._timeout,
            )
            totals: dict[str, int] = dict.fromkeys(_PROGRESS, 0)
            if row is not None:
                totals.update({name: int(row[name]) for name in _PROGRESS})
            await LEDGER.complete(conn, user_id, totals)
        return totals

    async def _progress(self, conn: Any, user_id: uuid.UUID, **counts: int) -> None:
        if not any(counts.values()):
            return
        names = list(counts)
        await conn.execute(
            f"insert into xtyl_notify.erasure_progress (user_id, {', '.join(names)})"  # noqa: S608 - constant columns
            f" values ($1, {', '.join(f'${i + 2}' for i in range(len(names)))})"
            " on conflict (user_id) do update set "
            + ", ".join(f"{n} = xtyl_notify.erasure_progress.{n} + excluded.{n}" for n in names),
            user_id,
            *counts.values(),
            timeout=self._timeout,
        )
