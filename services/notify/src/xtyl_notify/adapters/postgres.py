"""``xtyl_notify``'s tables: recipients, the email log and suppressions.

The email log row is the send's state machine: ``queued`` (logged, maybe being sent) ->
``retrying`` (a send failed for a transient reason and waits for its next attempt) ->
``sent`` | ``failed`` | ``suppressed``. Its ``dedupe_key`` is unique, so one cause logs one
row however often its event arrives, and a short lease (``locked_until``) keeps two copies
of an event from sending at the same time. Postgres failures become
:class:`~xtyl_common.errors.Unavailable` (``database_unavailable``).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from datetime import timedelta
from typing import Any

import asyncpg
import structlog

from xtyl_common.db import check_postgres, connection
from xtyl_common.pagination import Cursor, keyset_sql
from xtyl_notify.domain.emails import EmailKind, EmailRecord, EmailStatus, NewEmail, Recipient
from xtyl_notify.domain.webhooks import Suppression

log = structlog.stdlib.get_logger("xtyl.notify.db")

_MAX_ERROR_CHARS = 1_000
#: Not final: a send attempt may take the row.
_OPEN = "('queued', 'retrying')"
_COLUMNS = (
    "id, user_id, kind, to_address, subject, html_body, text_body, tags, dedupe_key, status,"
    " brevo_message_id, attempts, last_error, created_at, updated_at, sent_at"
)


def _to_email(row: asyncpg.Record) -> EmailRecord:
    values: dict[str, Any] = dict(row.items())
    values["kind"] = EmailKind(values["kind"])
    values["status"] = EmailStatus(values["status"])
    values["tags"] = list(values["tags"])
    return EmailRecord(**values)


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

    async def save_recipient(self, recipient: Recipient) -> None:
        async with self._connection() as conn:
            await conn.execute(
                "insert into xtyl_notify.recipients (user_id, email, full_name)"
                " values ($1, $2, $3) on conflict (user_id) do update"
                " set email = excluded.email, full_name = excluded.full_name, updated_at = now()",
                recipient.user_id,
                recipient.email,
                recipient.full_name,
                timeout=self._timeout,
            )

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
        """The row of ``new.dedupe_key``: inserted now as ``queued``, or the one already there."""
        content = new.content
        async with self._connection() as conn:
            row = await conn.fetchrow(
                f"insert into xtyl_notify.emails (id, user_id, kind, to_address, subject,"  # noqa: S608 - constant columns
                " html_body, text_body, tags, dedupe_key)"
                " values ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
                f" on conflict (dedupe_key) do nothing returning {_COLUMNS}",
                uuid.uuid4(),
                new.user_id,
                new.kind.value,
                new.to_address,
                content.subject,
                content.html,
                content.text,
                list(content.tags),
                new.dedupe_key,
                timeout=self._timeout,
            )
            if row is None:
                row = await conn.fetchrow(
                    f"select {_COLUMNS} from xtyl_notify.emails where dedupe_key = $1",  # noqa: S608 - constant columns
                    new.dedupe_key,
                    timeout=self._timeout,
                )
        assert row is not None
        return _to_email(row)

    async def get(self, email_id: uuid.UUID) -> EmailRecord | None:
        async with self._connection() as conn:
            row = await conn.fetchrow(
                f"select {_COLUMNS} from xtyl_notify.emails where id = $1",  # noqa: S608 - constant columns
                email_id,
                timeout=self._timeout,
            )
        return None if row is None else _to_email(row)

    async def claim(self, email_id: uuid.UUID, *, lease_s: float) -> EmailRecord | None:
        """Take a queued or retrying email for one send attempt (attempts + 1); None when it is
        final or another worker holds it."""
        async with self._connection() as conn:
            row = await conn.fetchrow(
                "update xtyl_notify.emails set attempts = attempts + 1,"  # noqa: S608 - constant columns
                " locked_until = now() + $2::interval, updated_at = now()"
                f" where id = $1 and status in {_OPEN}"
                " and (locked_until is null or locked_until < now())"
                f" returning {_COLUMNS}",
                email_id,
                timedelta(seconds=lease_s),
                timeout=self._timeout,
            )
        return None if row is None else _to_email(row)

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
                f" where id = $1 and status in {_OPEN}",
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

    async def release(self, email_id: uuid.UUID, error: str) -> None:
        """A failed attempt worth retrying: ``retrying``, with why; the next attempt takes it."""
        async with self._connection() as conn:
            await conn.execute(
                "update xtyl_notify.emails set status = 'retrying', last_error = $2,"  # noqa: S608 - constant statuses
                " locked_until = null, updated_at = now()"
                f" where id = $1 and status in {_OPEN}",
                email_id,
                error[:_MAX_ERROR_CHARS],
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
                f" where dedupe_key = any($1::text[]) and status in {_OPEN}"
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
                f"select {_COLUMNS} from xtyl_notify.emails where user_id = $1"  # noqa: S608 - constant columns
                f" and {keyset_sql(2)} limit $4",
                user_id,
                after.created_at if after else None,
                after.id if after else None,
                limit,
                timeout=self._timeout,
            )
        return [_to_email(row) for row in rows]

    # --- suppressions ---------------------------------------------------------------------

    async def suppression_reason(self, address: str) -> str | None:
        async with self._connection() as conn:
            reason: str | None = await conn.fetchval(
                "select reason from xtyl_notify.suppressions where address = $1",
                address,
                timeout=self._timeout,
            )
        return reason

    async def add_suppressions(
        self, suppressions: Sequence[Suppression], *, source: str
    ) -> list[str]:
        """Insert the new ones (an address already suppressed keeps its first reason); the
        addresses inserted."""
        if not suppressions:
            return []
        async with self._connection() as conn:
            rows = await conn.fetch(
                "insert into xtyl_notify.suppressions (address, reason, source)"
                " select * from unnest($1::text[], $2::text[], $3::text[])"
                " on conflict (address) do nothing returning address",
                [s.address for s in suppressions],
                [s.reason for s in suppressions],
                [source] * len(suppressions),
                timeout=self._timeout,
            )
        return [row["address"] for row in rows]
