"""Auth emails and their one-time codes, as Supabase Auth handles them (supabase/auth
``internal/api/mail.go`` and ``verify.go``).

Each email carries a code of ``otp_length`` digits; the user's row keeps only its hash
(``sha224(email + code)``) in the column Supabase uses for that kind (``confirmation_token``
for sign-up and invites, ``recovery_token`` for recovery and magic links,
``email_change_token_new``/``_current`` for an address change, ``reauthentication_token``),
with the time it was sent. A second email of a kind within ``max_frequency`` is 429
``over_email_send_rate_limit``. The email itself goes through the Send Email Hook, with the
payload Supabase sends (``{"user", "email_data": {"token", "token_hash", "redirect_to",
"email_action_type", "site_url", "token_new", "token_hash_new", …}}``); without a hook the
code is only logged.

Verifying takes the code with its address, or the hash from a link; a code past
``otp_expiry`` or unknown is 403 ``otp_expired``. A verified code is spent, and the address
counts as confirmed.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import aiohttp
import asyncpg
from aiohttp import web

from xtyl_devstack.auth import store
from xtyl_devstack.auth.config import AuthConfig
from xtyl_devstack.auth.errors import AuthApiError
from xtyl_devstack.auth.hook import call_send_email_hook
from xtyl_devstack.auth.policy import new_otp, redirect_target, token_hash
from xtyl_devstack.auth.store import Conn

log = logging.getLogger("xtyl_devstack.auth")

#: email_action_type -> (token column, sent-at column)
_COLUMNS: dict[str, tuple[str, str]] = {
    "signup": ("confirmation_token", "confirmation_sent_at"),
    "invite": ("confirmation_token", "confirmation_sent_at"),
    "recovery": ("recovery_token", "recovery_sent_at"),
    "magiclink": ("recovery_token", "recovery_sent_at"),
    "reauthentication": ("reauthentication_token", "reauthentication_sent_at"),
}
#: verify ``type`` -> the kinds whose codes it accepts, and the session's sign-in method
_VERIFY: dict[str, tuple[tuple[str, ...], str]] = {
    "signup": (("signup",), "otp"),
    "invite": (("invite",), "invite"),
    "recovery": (("recovery",), "recovery"),
    "magiclink": (("magiclink",), "magiclink"),
    "email": (("signup", "magiclink"), "otp"),
}
_EXPIRED = AuthApiError(403, "otp_expired", "Token has expired or is invalid")


#: What Supabase Auth answers (200) when one address of a secure email change is confirmed
#: and the other is not yet.
EMAIL_CHANGE_PENDING = (
    "Confirmation link accepted. Please proceed to confirm link sent to the other email"
)


@dataclass(frozen=True, slots=True)
class AuthMailer:
    session: aiohttp.ClientSession
    config: AuthConfig
    #: ``<SUPABASE_URL>/auth/v1``: the hook builds ``<site_url>/verify?token=…`` from it.
    external_url: str

    async def _check_frequency(self, conn: Conn, sent_at: datetime | None) -> None:
        if sent_at is None:
            return
        left = await conn.fetchval(
            "select extract(epoch from ($1::timestamptz + make_interval(secs => $2)) - now())",
            sent_at,
            self.config.max_frequency_s,
        )
        if left is not None and float(left) > 0:
            raise AuthApiError(
                429,
                "over_email_send_rate_limit",
                "For security purposes, you can only request this after"
                f" {int(float(left))} seconds.",
            )

    async def _deliver(
        self, request: web.Request | None, user: asyncpg.Record, email_data: dict[str, Any]
    ) -> None:
        hook = self.config.send_email_hook
        payload = {
            "metadata": {
                "uuid": str(uuid.uuid4()),
                "time": datetime.now(UTC).isoformat(),
                "name": "send-email",
                "ip_address": (request.remote if request is not None else None) or "",
            },
            "user": store.user_json(user),
            "email_data": {
                "token": "",
                "token_hash": "",
                "redirect_to": "",
                "email_action_type": "",
                "site_url": self.external_url,
                "token_new": "",
                "token_hash_new": "",
                "old_email": "",
                "old_phone": "",
                "provider": "",
                "factor_type": "",
                **email_data,
            },
        }
        if hook is None:
            log.info("no Send Email Hook configured: %s email data %s", user["email"], email_data)
            return
        await call_send_email_hook(self.session, hook, payload)

    async def send(
        self, conn: Conn, request: web.Request, user: asyncpg.Record, kind: str
    ) -> asyncpg.Record:
        """Email ``user`` a code of ``kind`` (signup, recovery, magiclink, reauthentication,
        invite); the row after it was sent."""
        column, sent_column = _COLUMNS[kind]
        await self._check_frequency(conn, user[sent_column])
        otp = new_otp(self.config.otp_length)
        hashed = token_hash(user["email"], otp)
        redirect_to = redirect_target(request.query.get("redirect_to"), self.config)
        await self._deliver(
            request,
            user,
            {
                "token": otp,
                "token_hash": hashed,
                "redirect_to": redirect_to,
                "email_action_type": kind,
            },
        )
        updated = await conn.fetchrow(
            f"update auth.users set {column} = $2, {sent_column} = now()"  # noqa: S608 - constant columns
            f" where id = $1 returning {store.USER_COLUMNS}",
            user["id"],
            hashed,
        )
        assert updated is not None
        return updated

    async def send_email_change(
        self, conn: Conn, request: web.Request, user: asyncpg.Record, new_email: str
    ) -> None:
        """The email_change email(s): a code for the new address, and with
        ``double_confirm_changes`` one for the current address too (fields as Supabase fills
        them: ``token``/``token_hash_new`` for the current address, ``token_new``/``token_hash``
        for the new one)."""
        await self._check_frequency(conn, user["email_change_sent_at"])
        otp_new = new_otp(self.config.otp_length)
        otp_current = new_otp(self.config.otp_length)
        hash_new = token_hash(new_email, otp_new)
        secure = self.config.double_confirm_changes and bool(user["email"])
        hash_current = token_hash(user["email"], otp_current) if secure else ""
        await conn.execute(
            "update auth.users set email_change = $2, email_change_token_new = $3,"
            " email_change_token_current = $4, email_change_confirm_status = 0,"
            " email_change_sent_at = now() where id = $1",
            user["id"],
            new_email,
            hash_new,
            hash_current,
        )
        fresh = await store.find_user(conn, user["id"])
        assert fresh is not None
        data: dict[str, Any] = {
            "token_hash": hash_new,
            "redirect_to": redirect_target(request.query.get("redirect_to"), self.config),
            "email_action_type": "email_change",
        }
        if secure:
            data |= {"token": otp_current, "token_new": otp_new, "token_hash_new": hash_current}
        else:
            data |= {"token": otp_new}
        await self._deliver(request, fresh, data)

    async def link(
        self, conn: Conn, user: asyncpg.Record, kind: str, redirect_to: str | None
    ) -> dict[str, Any]:
        """``POST /admin/generate_link``: a code stored as if emailed, returned instead."""
        column, sent_column = _COLUMNS[kind]
        otp = new_otp(self.config.otp_length)
        hashed = token_hash(user["email"], otp)
        await conn.execute(
            f"update auth.users set {column} = $2, {sent_column} = now() where id = $1",  # noqa: S608 - constant columns
            user["id"],
            hashed,
        )
        target = redirect_target(redirect_to, self.config)
        return {
            "action_link": f"{self.external_url}/verify?"
            + urlencode({"token": hashed, "type": kind, "redirect_to": target}),
            "email_otp": otp,
            "hashed_token": hashed,
            "verification_type": kind,
            "redirect_to": target,
        }

    async def verify(
        self, conn: Conn, *, kind: str, email: str, token: str, token_hash: str
    ) -> tuple[uuid.UUID, str] | None:
        """Spend a code: the user it signs in and the sign-in method, or ``otp_expired``; None
        when it confirmed one address of an email change and the other is still to confirm."""
        if kind == "email_change":
            return await self._verify_email_change(conn, email, token, token_hash)
        if kind not in _VERIFY:
            raise AuthApiError(400, "validation_failed", "Verify requires a verification type")
        kinds, method = _VERIFY[kind]
        if not token_hash and not (email and token):
            raise AuthApiError(
                400, "validation_failed", "Verify requires either a token or a token hash"
            )
        for candidate in kinds:
            column, sent_column = _COLUMNS[candidate]
            row = await self._find(conn, column, email, token, token_hash)
            if row is None:
                continue
            fresh = await conn.fetchval(
                f"select {sent_column} + make_interval(secs => $2) > now()"  # noqa: S608 - constant columns
                " from auth.users where id = $1",
                row["id"],
                float(self.config.otp_expiry_s),
            )
            if not fresh:
                raise _EXPIRED
            await conn.execute(
                f"update auth.users set {column} = '',"  # noqa: S608 - constant columns
                " email_confirmed_at = coalesce(email_confirmed_at, now()), updated_at = now()"
                " where id = $1",
                row["id"],
            )
            return row["id"], method
        raise _EXPIRED

    @staticmethod
    async def _find(
        conn: Conn, column: str, email: str, token: str, hashed: str
    ) -> asyncpg.Record | None:
        if hashed:
            return await conn.fetchrow(
                f"select id from auth.users where {column} = $1 and {column} <> ''"  # noqa: S608 - constant columns
                " for update",
                hashed,
            )
        return await conn.fetchrow(
            "select id from auth.users where lower(email) = lower($1)"  # noqa: S608 - constant columns
            f" and {column} = $2 and {column} <> '' for update",
            email,
            token_hash(email.lower(), token),
        )

    async def _verify_email_change(
        self, conn: Conn, email: str, token: str, hashed: str
    ) -> tuple[uuid.UUID, str] | None:
        if not hashed:
            if not (email and token):
                raise AuthApiError(
                    400, "validation_failed", "Verify requires either a token or a token hash"
                )
            hashed = token_hash(email.lower(), token)
        row = await conn.fetchrow(
            "select id, email_change, email_change_token_new, email_change_token_current,"
            " email_change_confirm_status,"
            " email_change_sent_at + make_interval(secs => $2) > now() as fresh"
            " from auth.users where $1 in (email_change_token_new, email_change_token_current)"
            " and $1 <> '' for update",
            hashed,
            float(self.config.otp_expiry_s),
        )
        if row is None or not row["fresh"]:
            raise _EXPIRED
        column = (
            "email_change_token_new"
            if row["email_change_token_new"] == hashed
            else "email_change_token_current"
        )
        pending = (
            bool(row["email_change_token_current"]) and row["email_change_confirm_status"] == 0
        )
        if pending:
            await conn.execute(
                f"update auth.users set {column} = '', email_change_confirm_status = 1"  # noqa: S608 - constant columns
                " where id = $1",
                row["id"],
            )
            return None
        await conn.execute(
            "update auth.users set email = email_change, email_change = '',"
            " email_change_token_new = '', email_change_token_current = '',"
            " email_change_confirm_status = 0, email_confirmed_at = now(), updated_at = now()"
            " where id = $1",
            row["id"],
        )
        return row["id"], "email_change"
