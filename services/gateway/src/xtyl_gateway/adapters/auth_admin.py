"""Supabase Auth's admin API, for the one thing the gateway asks of it: delete a user.

``DELETE {SUPABASE_URL}/auth/v1/admin/users/{id}`` with the service-role key, as supabase-js'
``auth.admin.deleteUser`` sends it (the key in ``apikey`` and as the bearer). Auth deletes the
``auth.users`` row, and the gateway's trigger turns that into ``user.deleted`` (migration 0006).
The key is a secret of the gateway's alone: it is sent to Supabase and nowhere else, never
logged, never in an answer.
"""

from __future__ import annotations

import uuid

import aiohttp

from xtyl_common.errors import DependencyError, TimedOut, Unavailable
from xtyl_common.http import request_headers

#: Auth answers a deletion well within this; past it the user sees 504 and may ask again.
DELETE_TIMEOUT = aiohttp.ClientTimeout(total=10.0, connect=3.0)


class AuthAdmin:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        supabase_url: str | None,
        service_role_key: str | None,
    ) -> None:
        self._session = session
        self._base = None if supabase_url is None else supabase_url.rstrip("/") + "/auth/v1"
        self._key = service_role_key

    async def delete_user(self, user_id: uuid.UUID) -> bool:
        """Delete the user from Supabase Auth: ``True`` when deleted now, ``False`` when Auth
        has no such user (deleted before)."""
        if self._base is None or not self._key:
            raise Unavailable(
                "account deletion needs SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY",
                code="account_deletion_unavailable",
            )
        url = f"{self._base}/admin/users/{user_id}"
        headers = request_headers({"apikey": self._key, "Authorization": f"Bearer {self._key}"})
        try:
            async with self._session.delete(
                url, headers=headers, json={"should_soft_delete": False}, timeout=DELETE_TIMEOUT
            ) as resp:
                status = resp.status
                await resp.read()
        except TimeoutError as exc:
            raise TimedOut("Supabase Auth did not answer the deletion in time") from exc
        except aiohttp.ClientError as exc:
            raise Unavailable(f"Supabase Auth unreachable: {type(exc).__name__}") from exc
        if status in (200, 204):
            return True
        if status == 404:
            return False
        # 401/403: the key is wrong; 5xx: Auth is failing. Neither is the caller's doing.
        raise DependencyError(
            f"Supabase Auth refused the deletion ({status})", code="auth_admin_error"
        )
