"""Document emails, coalesced per user (``xtyl_notify.document_notices`` and
``xtyl_notify.document_windows``).

Every accepted ``document.indexed`` / ``document.failed`` is one notice, keyed by (user,
document, kind): a redelivered event finds its notice and adds nothing. A user's window row
says when their last document email was decided (``last_email_at``) and when the notices
waiting since are due as one digest (``due_at``). Both decisions lock the user's window row
(``for update``; the digest pass skips rows another worker holds), so two workers never both
send "the first" email, nor the same digest; and all of it is in Postgres, so a restarted
worker finds every pending notice and due digest where it left them.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import asyncpg
import msgspec

from xtyl_common.db import connection
from xtyl_notify.adapters.postgres import LEDGER, insert_email
from xtyl_notify.domain.emails import DocumentKind, EmailRecord, NewEmail, Recipient
from xtyl_notify.domain.preferences import Preferences

#: Notices already told (or dropped) are kept this long, so an event replayed within it is
#: still recognised; then pruned.
NOTICE_RETENTION = timedelta(days=30)
_PRUNE_BATCH = 1_000


class DocumentNotice(msgspec.Struct, frozen=True, kw_only=True):
    """One document event for one user."""

    user_id: uuid.UUID
    document_id: uuid.UUID
    kind: DocumentKind
    occurred_at: datetime
    title: str | None = None
    reason: str | None = None


class Outcome(StrEnum):
    #: First in its window: send it now, as its own email (``email_key``), to ``recipient``.
    SEND_NOW = "send_now"
    #: Waits for the user's digest.
    PENDING = "pending"
    #: Seen before: told by the email ``email_key`` (or waiting for a digest).
    SEEN = "seen"
    #: Nothing to do: the user turned the kind off, has no address, or was deleted.
    KIND_OFF = "kind_off"
    NO_RECIPIENT = "no_recipient"
    ERASED = "erased"


class Decision(msgspec.Struct, frozen=True, kw_only=True):
    outcome: Outcome
    recipient: Recipient | None = None
    email_key: str | None = None


class DigestInput(msgspec.Struct, frozen=True, kw_only=True):
    """What a due digest is made of: the recipient as they stand and the notices it tells
    (the kinds the user still wants), oldest first."""

    recipient: Recipient
    notices: list[DocumentNotice]
    #: The digest's dedupe key (``document.digest:<user id>:<due time, ms>``).
    dedupe_key: str


#: Makes the digest's email from what is due (pure: the template and the unsubscribe link).
RenderDigest = Callable[[DigestInput], NewEmail]


class DigestTaken(msgspec.Struct, frozen=True, kw_only=True):
    """A due window handled: the digest it logged (``None``: nothing to send after all)."""

    user_id: uuid.UUID
    email: EmailRecord | None


def _notice(row: asyncpg.Record) -> DocumentNotice:
    return DocumentNotice(**dict(row.items()))


class DocumentNoticeRepository:
    def __init__(self, pool: asyncpg.Pool, *, timeout_s: float = 10.0) -> None:
        self._pool = pool
        self._timeout = timeout_s

    def _connection(self) -> AbstractAsyncContextManager[Any]:
        return connection(
            self._pool,
            timeout_s=self._timeout,
            unavailable="document emails are unavailable, try again later",
        )

    async def record(self, notice: DocumentNotice, *, email_key: str, window_s: float) -> Decision:
        """Accept one document event: whether its email goes now (``email_key`` names it),
        waits for the user's digest, or was seen already. In one transaction that holds the
        user's erasure lock (shared) and their window row."""
        t = self._timeout
        async with self._connection() as conn, conn.transaction():
            await LEDGER.lock_user(conn, notice.user_id)
            if await LEDGER.is_erased(conn, notice.user_id):
                return Decision(outcome=Outcome.ERASED)
            seen = await conn.fetchrow(
                "select status, email_key from xtyl_notify.document_notices"
                " where user_id = $1 and document_id = $2 and kind = $3",
                notice.user_id,
                notice.document_id,
                notice.kind,
                timeout=t,
            )
            recipient = await _recipient(conn, notice.user_id, t)
            if seen is not None:
                return Decision(
                    outcome=Outcome.SEEN, recipient=recipient, email_key=seen["email_key"]
                )
            if not (await _preferences(conn, notice.user_id, t)).wants(notice.kind):
                return Decision(outcome=Outcome.KIND_OFF)
            if recipient is None or not recipient.email:
                return Decision(outcome=Outcome.NO_RECIPIENT)
            # the user's window, created if need be and locked either way
            window = await conn.fetchrow(
                "insert into xtyl_notify.document_windows (user_id) values ($1)"
                " on conflict (user_id) do update set user_id = excluded.user_id"
                " returning last_email_at, due_at,"
                " last_email_at is null or last_email_at <= now() - $2::interval as open",
                notice.user_id,
                timedelta(seconds=window_s),
                timeout=t,
            )
            assert window is not None
            first = window["open"] and window["due_at"] is None
            await conn.execute(
                "insert into xtyl_notify.document_notices"
                " (user_id, document_id, kind, title, reason, occurred_at, status, email_key)"
                " values ($1, $2, $3, $4, $5, $6, $7, $8)",
                notice.user_id,
                notice.document_id,
                notice.kind,
                notice.title,
                notice.reason,
                notice.occurred_at,
                "emailed" if first else "pending",
                email_key if first else None,
                timeout=t,
            )
            if first:
                await conn.execute(
                    "update xtyl_notify.document_windows set last_email_at = now()"
                    " where user_id = $1",
                    notice.user_id,
                    timeout=t,
                )
                return Decision(outcome=Outcome.SEND_NOW, recipient=recipient, email_key=email_key)
            await conn.execute(
                "update xtyl_notify.document_windows set due_at = coalesce(due_at,"
                " greatest(now(), coalesce(last_email_at, now()) + $2::interval))"
                " where user_id = $1",
                notice.user_id,
                timedelta(seconds=window_s),
                timeout=t,
            )
            return Decision(outcome=Outcome.PENDING)

    async def take_due_digest(self, render: RenderDigest) -> DigestTaken | None:
        """Handle the most overdue window no other worker holds: log its digest (``render``
        makes it) and mark the notices it tells, in one transaction; ``None`` when no window
        is due."""
        t = self._timeout
        async with self._connection() as conn, conn.transaction():
            window = await conn.fetchrow(
                "select user_id, due_at from xtyl_notify.document_windows"
                " where due_at <= now() order by due_at limit 1 for update skip locked",
                timeout=t,
            )
            if window is None:
                return None
            user_id: uuid.UUID = window["user_id"]
            await LEDGER.lock_user(conn, user_id)
            email: EmailRecord | None = None
            if not await LEDGER.is_erased(conn, user_id):
                email = await self._log_digest(conn, user_id, window["due_at"], render)
            await conn.execute(
                "update xtyl_notify.document_notices set status = 'dropped', updated_at = now()"
                " where user_id = $1 and status = 'pending'",
                user_id,
                timeout=t,
            )
            await conn.execute(
                "update xtyl_notify.document_windows set due_at = null,"
                " last_email_at = case when $2 then now() else last_email_at end"
                " where user_id = $1",
                user_id,
                email is not None,
                timeout=t,
            )
        return DigestTaken(user_id=user_id, email=email)

    async def _log_digest(
        self, conn: Any, user_id: uuid.UUID, due_at: datetime, render: RenderDigest
    ) -> EmailRecord | None:
        t = self._timeout
        recipient = await _recipient(conn, user_id, t)
        if recipient is None or not recipient.email:
            return None
        preferences = await _preferences(conn, user_id, t)
        rows = await conn.fetch(
            "select user_id, document_id, kind, title, reason, occurred_at"
            " from xtyl_notify.document_notices where user_id = $1 and status = 'pending'"
            " order by occurred_at, document_id",
            user_id,
            timeout=t,
        )
        notices = [n for n in map(_notice, rows) if preferences.wants(n.kind)]
        if not notices:
            return None
        key = f"document.digest:{user_id}:{round(due_at.timestamp() * 1000)}"
        email = await insert_email(
            conn,
            render(DigestInput(recipient=recipient, notices=notices, dedupe_key=key)),
            timeout_s=t,
        )
        await conn.execute(
            "update xtyl_notify.document_notices"
            " set status = 'emailed', email_key = $2, updated_at = now()"
            " where user_id = $1 and status = 'pending' and kind = any($3::text[])",
            user_id,
            key,
            sorted({n.kind for n in notices}),
            timeout=t,
        )
        return email

    async def prune(self, *, window_s: float) -> int:
        """Forget notices told longer than :data:`NOTICE_RETENTION` ago, and windows that
        ended long ago with nothing pending; rows deleted."""
        deleted = 0
        async with self._connection() as conn:
            while True:
                status = await conn.execute(
                    "delete from xtyl_notify.document_notices where ctid in ("
                    " select ctid from xtyl_notify.document_notices"
                    " where status <> 'pending' and updated_at < now() - $1::interval limit $2)",
                    NOTICE_RETENTION,
                    _PRUNE_BATCH,
                    timeout=self._timeout,
                )
                count = int(status.split()[-1])
                deleted += count
                if count < _PRUNE_BATCH:
                    break
            status = await conn.execute(
                "delete from xtyl_notify.document_windows where due_at is null"
                " and (last_email_at is null or last_email_at < now() - $1::interval)",
                timedelta(seconds=window_s) + timedelta(hours=1),
                timeout=self._timeout,
            )
            deleted += int(status.split()[-1])
        return deleted


async def _recipient(conn: Any, user_id: uuid.UUID, timeout_s: float) -> Recipient | None:
    row = await conn.fetchrow(
        "select user_id, email, full_name from xtyl_notify.recipients where user_id = $1",
        user_id,
        timeout=timeout_s,
    )
    return None if row is None else Recipient(**dict(row.items()))


async def _preferences(conn: Any, user_id: uuid.UUID, timeout_s: float) -> Preferences:
    row = await conn.fetchrow(
        "select document_ready, document_failed from xtyl_notify.preferences where user_id = $1",
        user_id,
        timeout=timeout_s,
    )
    return Preferences() if row is None else Preferences(**dict(row.items()))
