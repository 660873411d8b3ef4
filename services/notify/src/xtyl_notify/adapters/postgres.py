"""``xtyl_notify``'s tables: recipients, the email log and suppressions (document notices:
:mod:`.documents`; preferences, erasure and export: :mod:`.accounts`).

The email log row is the send's state machine: ``queued`` (logged, maybe being sent) ->
``retrying`` (a send failed for a transient reason and waits for its next attempt) ->
``sent`` | ``failed`` | ``suppressed``. Its ``dedupe_key`` is unique, so one cause logs one
row however often its event arrives, and a short lease (``locked_until``) keeps two copies
of an event from sending at the same time. ``cancelled`` is final too: the user was deleted
before the email left. Every write of new data for a user first takes the user's erasure lock
(:meth:`~xtyl_common.erasure.ErasureLedger.refuse_if_erased`), so a write racing the user's
erasure either lands before it starts (and is erased with the rest) or is refused
(:class:`~xtyl_common.erasure.AccountDeleted`). Postgres failures become
:class:`~xtyl_common.errors.Unavailable` (``database_unavailable``).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import structlog

from xtyl_common.db import check_postgres, connection
from xtyl_common.erasure import ErasureLedger
from xtyl_common.pagination import Cursor, keyset_sql
from xtyl_notify.domain.emails import EmailKind, EmailRecord, EmailStatus, NewEmail, Recipient

log = structlog.stdlib.get_logger("xtyl.notify.db")

SCHEMA = "xtyl_notify"
#: The erasure ledger every write path checks (``xtyl_notify.erasures``).
LEDGER = ErasureLedger(SCHEMA)
_MAX_ERROR_CHARS = 1_000
#: Not final: a send attempt may take the row.
OPEN = "('queued', 'retrying')"
COLUMNS = (
    "id, user_id, kind, to_address, to_name, subject, html_body, text_body, tags, headers,"
    " dedupe_key, status, brevo_message_id, attempts, last_error, created_at, updated_at,"
    " sent_at, first_failed_at, next_attempt_at"
)
_INSERT_EMAIL = (
    "insert into xtyl_notify.emails (id, user_id, kind, to_address, to_name, subject,"  # noqa: S608 - constant columns
    " html_body, text_body, tags, headers, dedupe_key)"
    " values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
    f" on conflict (dedupe_key) do nothing returning {COLUMNS}"
)


def to_email(row: asyncpg.Record) -> EmailRecord:
    values: dict[str, Any] = dict(row.items())
    values["kind"] = EmailKind(values["kind"])
    values["status"] = EmailStatus(values["status"])
    values["tags"] = list(values["tags"])
    values["headers"] = dict(values["headers"] or {})
    return EmailRecord(**values)


async def insert_email(conn: Any, new: NewEmail, *, timeout_s: float) -> EmailRecord:
    """Log ``new`` on ``conn`` (the caller's transaction, which checked the user's erasure
    lock): the row inserted as ``queued``, or the one already under its dedupe key."""
    content = new.content
    row = await conn.fetchrow(
        _INSERT_EMAIL,
        uuid.uuid4(),
        new.user_id,
        new.kind.value,
        new.to_address,
        new.to_name,
        content.subject,
        content.html,
        content.text,
        list(content.tags),
        dict(new.headers),
        new.dedupe_key,
        timeout=timeout_s,
    )
    if row is None:
        row = await conn.fetchrow(
            f"select {COLUMNS} from xtyl_notify.emails where dedupe_key = $1",  # noqa: S608 - constant columns
            new.dedupe_key,
            timeout=timeout_s,
        )
    assert row is not None
    return to_email(row)


class NotifyRepository:
    def __init__(self, pool: asyncpg.Pool, *, timeout_s: float = 10.0) -> None:
        self._pool = pool
        self._timeout = timeout_s

    def _connection(self) -> AbstractAsyncContextManager[Any]:
        return connection(
            self._pool,
            timeout_s=self._timeout,
            unavailable="the email log is unavailable, try again later",
        )

    async def check(self) -> None:
        """Readiness: the database answers."""
        await check_postgres(self._pool)

    # --- recipients -----------------------------------------------------------------------

    async def save_recipient(self, recipient: Recipient, *, changed_at: datetime) -> Recipient:
        """Remember where the user's email goes, unless a newer event already said (an older
        ``changed_at`` changes nothing); the recipient as it now stands. Raises
        :class:`~xtyl_common.erasure.AccountDeleted` for a deleted user (nothing written)."""
        async with self._connection() as conn, conn.transaction():
            await LEDGER.refuse_if_erased(conn, recipient.user_id)
            await conn.execute(
                "insert into xtyl_notify.recipients as r (user_id, email, full_name, changed_at)"
                " values ($1, $2, $3, $4) on conflict (user_id) do update"
                " set email = excluded.email, full_name = excluded.full_name,"
                " changed_at = excluded.changed_at, updated_at = now()"
                " where r.changed_at is null or r.changed_at <= excluded.changed_at",
                recipient.user_id,
                recipient.email,
                recipient.full_name,
                changed_at,
                timeout=self._timeout,
            )
            row = await conn.fetchrow(
                "select user_id, email, full_name from xtyl_notify.recipients where user_id = $1",
                recipient.user_id,
                timeout=self._timeout,
            )
        assert row is not None
        return Recipient(**dict(row.items()))

    async def recipient(self, user_id: uuid.UUID) -> Recipient | None:
        async with self._connection() as conn:
            row = await conn.fetchrow(
                "select user_id, email, full_name from xtyl_notify.recipients where user_id = $1",
                user_id,
                timeout=self._timeout,
            )
        return None if row is None else Recipient(**dict(row.items()))

    # --- the email log --------------------------------------------------------------------

    async def log_email(self, new: NewEmail) -> EmailRecord:
        """The row of ``new.dedupe_key``: inserted now as ``queued``, or the one already there.
        Raises :class:`~xtyl_common.erasure.AccountDeleted` when ``new`` is for a deleted
        user."""
        async with self._connection() as conn, conn.transaction():
            if new.user_id is not None:
                await LEDGER.refuse_if_erased(conn, new.user_id)
            return await insert_email(conn, new, timeout_s=self._timeout)

    async def get(self, email_id: uuid.UUID) -> EmailRecord | None:
        async with self._connection() as conn:
            row = await conn.fetchrow(
                f"select {COLUMNS} from xtyl_notify.emails where id = $1",  # noqa: S608 - constant columns
                email_id,
                timeout=self._timeout,
            )
        return None if row is None else to_email(row)

    async def claim(self, email_id: uuid.UUID, *, lease_s: float) -> EmailRecord | None:
        """Take a queued or retrying email for one send attempt (attempts + 1); None when it is
        final or another worker holds it."""
        async with self._connection() as conn:
            row = await conn.fetchrow(
                "update xtyl_notify.emails set attempts = attempts + 1,"  # noqa: S608 - constant columns
                " locked_until = now() + $2::interval, updated_at = now()"
                f" where id = $1 and status in {OPEN}"
                " and (locked_until is null or locked_until < now())"
                f" returning {COLUMNS}",
                email_id,
                timedelta(seconds=lease_s),
                timeout=self._timeout,
            )
        return None if row is None else to_email(row)

    async def _finish(
        self,
        email_id: uuid.UUID,
        status: EmailStatus,
        *,
        message_id: str | None = None,
        error: str | None = None,
    ) -> None:
        async with self._connection() as conn:
            await conn.execute(
                "update xtyl_notify.emails set status = $2, brevo_message_id = $3,"  # noqa: S608 - constant statuses
                " last_error = coalesce($4, last_error), locked_until = null, updated_at = now(),"
                " sent_at = case when $2 = 'sent' then now() else sent_at end"
                f" where id = $1 and status in {OPEN}",
                email_id,
                status.value,
                message_id,
                None if error is None else error[:_MAX_ERROR_CHARS],
                timeout=self._timeout,
            )

    async def mark_sent(self, email_id: uuid.UUID, message_id: str) -> None:
        await self._finish(email_id, EmailStatus.SENT, message_id=message_id)

    async def mark_failed(self, email_id: uuid.UUID, error: str) -> None:
        await self._finish(email_id, EmailStatus.FAILED, error=error)

    async def mark_suppressed(self, email_id: uuid.UUID, reason: str) -> None:
        await self._finish(email_id, EmailStatus.SUPPRESSED, error=f"suppressed: {reason}")

    async def release(
        self, email_id: uuid.UUID, error: str, *, next_attempt_in_s: float | None = None
    ) -> None:
        """A failed attempt worth retrying: ``retrying``, with why; the next attempt takes it.
        ``next_attempt_in_s``: when (for a digest, which the worker's loop retries); its first
        failure is kept (the start of its retry horizon)."""
        async with self._connection() as conn:
            await conn.execute(
                "update xtyl_notify.emails set status = 'retrying', last_error = $2,"  # noqa: S608 - constant statuses
                " locked_until = null, updated_at = now(),"
                " first_failed_at = coalesce(first_failed_at, now()),"
                " next_attempt_at = now() + $3::interval"
                f" where id = $1 and status in {OPEN}",
                email_id,
                error[:_MAX_ERROR_CHARS],
                timedelta(seconds=next_attempt_in_s or 0.0),
                timeout=self._timeout,
            )

    async def give_up(self, dedupe_keys: Sequence[str], error: str) -> set[str]:
        """The emails of ``dedupe_keys`` still open are ``failed`` for good: their last try
        failed for a passing reason and none follows ("gave up after N attempts; why"). The
        dedupe keys of those it failed."""
        async with self._connection() as conn:
            rows = await conn.fetch(
                "update xtyl_notify.emails set status = 'failed', locked_until = null,"  # noqa: S608 - constant statuses
                " last_error = left(format('gave up after %s attempts; %s', attempts, $2::text),"
                f" {_MAX_ERROR_CHARS}), updated_at = now()"
                f" where dedupe_key = any($1::text[]) and status in {OPEN}"
                " returning dedupe_key",
                list(dedupe_keys),
                error,
                timeout=self._timeout,
            )
        return {row["dedupe_key"] for row in rows}

    async def list_for_user(
        self, user_id: uuid.UUID, *, limit: int, after: Cursor | None
    ) -> list[EmailRecord]:
        """Newest first, ``limit`` rows after ``after`` (:func:`keyset_sql`)."""
        async with self._connection() as conn:
            rows = await conn.fetch(
                f"select {COLUMNS} from xtyl_notify.emails where user_id = $1"  # noqa: S608 - constant columns
                f" and {keyset_sql(2)} limit $4",
                user_id,
                after.created_at if after else None,
                after.id if after else None,
                limit,
                timeout=self._timeout,
            )
        return [to_email(row) for row in rows]

    # --- suppressions ---------------------------------------------------------------------

    async def suppression_reason(self, keys: Sequence[str]) -> str | None:
        """Why an address is suppressed, if it is: ``keys`` are the forms its row may have
        (its hash; the lower-cased address of rows written before hashes)."""
        async with self._connection() as conn:
            reason: str | None = await conn.fetchval(
                "select reason from xtyl_notify.suppressions where address = any($1::text[])"
                " order by created_at limit 1",
                list(keys),
                timeout=self._timeout,
            )
        return reason

    async def add_suppressions(
        self, suppressions: Sequence[tuple[str, str]], *, source: str
    ) -> list[str]:
        """Insert the new ``(address hash, reason)`` pairs (an address already suppressed
        keeps its first reason); the hashes inserted."""
        if not suppressions:
            return []
        async with self._connection() as conn:
            rows = await conn.fetch(
                "insert into xtyl_notify.suppressions (address, reason, source)"
                " select * from unnest($1::text[], $2::text[], $3::text[])"
                " on conflict (address) do nothing returning address",
                [key for key, _ in suppressions],
                [reason for _, reason in suppressions],
                [source] * len(suppressions),
                timeout=self._timeout,
            )
        return [row["address"] for row in rows]

    # --- digests the worker sends (no stream entry retries them) ---------------------------

    async def open_digests(self, *, limit: int) -> list[uuid.UUID]:
        """Digests still to send whose attempt is due and that no worker holds: a worker that
        died after making one, or one waiting for its next try."""
        async with self._connection() as conn:
            rows = await conn.fetch(
                "select id from xtyl_notify.emails"  # noqa: S608 - constant statuses
                f" where kind = 'document_digest' and status in {OPEN}"
                " and coalesce(next_attempt_at, created_at) <= now()"
                " and (locked_until is null or locked_until < now())"
                " order by coalesce(next_attempt_at, created_at) limit $1",
                limit,
                timeout=self._timeout,
            )
        return [row["id"] for row in rows]
