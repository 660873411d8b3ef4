"""``python -m xtyl_devstack user --email E``: a user of the running local stack, and an access
token for them.

Goes through the stack's own local Supabase Auth, found in ``<data dir>/services.json`` (so the
ports ``up`` was started with count, not this shell's ``AUTH_PORT``), with the project's
service-role key: ``POST /auth/v1/admin/users`` creates the user as Supabase Auth does (the
``auth.users`` row fires the gateway's trigger: ``public.users``, ``user.created``, a welcome
email), or finds it; then an admin magic link, verified at ``POST /auth/v1/verify``, signs them
in. The access token goes to stdout alone (``TOKEN=$(make -s user EMAIL=…)``); the rest, with
the password of a new user, to stderr.
"""

from __future__ import annotations

import json
import secrets
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import asyncpg

from xtyl_devstack.errors import DevstackError
from xtyl_devstack.up import SERVICE_ROLE_KEY_FILE, STACK_FILE, running_urls

_TIMEOUT_S = 10
_FIND = "select id from auth.users where lower(email) = lower($1) limit 1"
_INSERT = (
    "insert into auth.users (id, aud, role, email, raw_user_meta_data, raw_app_meta_data,"
    " email_confirmed_at, created_at, updated_at)"
    " values ($1, 'authenticated', 'authenticated', $2, $3::jsonb,"
    ' \'{"provider": "email", "providers": ["email"]}\'::jsonb, now(), now(), now())'
)


async def ensure_user(database_url: str, email: str, full_name: str) -> tuple[uuid.UUID, bool]:
    """For tests that mint their own tokens (no Auth running): the ``auth.users`` row of
    ``email``, inserted as Supabase Auth would (the triggers fire) or found; ``(id, created)``."""
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        found = await conn.fetchval(_FIND, email)
        if found is not None:
            return found, False
        user_id = uuid.uuid4()
        await conn.execute(_INSERT, user_id, email, json.dumps({"full_name": full_name}))
        return user_id, True
    except asyncpg.UndefinedTableError:
        raise DevstackError(
            "auth.users does not exist: apply the migrations first (make migrate)"
        ) from None
    finally:
        await conn.close()


def _call(url: str, key: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(  # noqa: S310 - the local stack's own http URL
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={
            "apikey": key,
            "Authorization": f"Bearer {key}",
            "Content-Type": "application/json",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response:  # noqa: S310
            return int(response.status), json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")
    except (urllib.error.URLError, OSError) as exc:
        raise DevstackError(f"the local Auth at {url} does not answer: {exc}") from None


def create_user(data_dir: Path, email: str, full_name: str, password: str | None = None) -> str:
    """Sign ``email`` up (or find them) through the running stack's Auth; an access token."""
    data_dir = data_dir.resolve()
    urls = running_urls(data_dir)
    if not (data_dir / STACK_FILE).exists() or "auth" not in urls:
        raise DevstackError(f"no running stack in {data_dir} (start it with `make up`)")
    auth = urls["auth"]
    key = (data_dir / SERVICE_ROLE_KEY_FILE).read_text().strip()
    new_password = password or secrets.token_urlsafe(12)
    status, created = _call(
        auth + "/admin/users",
        key,
        {
            "email": email,
            "password": new_password,
            "email_confirm": True,
            "user_metadata": {"full_name": full_name} if full_name else {},
        },
    )
    if status == 200:
        note = f"signed up user {created['id']} <{email}>, password {new_password!r}"
    elif created.get("code") == "email_exists" or created.get("error_code") == "email_exists":
        note = f"found user <{email}>"
    else:
        raise DevstackError(f"the local Auth refused {email!r}: {status} {created}")
    status, link = _call(auth + "/admin/generate_link", key, {"type": "magiclink", "email": email})
    if status != 200:
        raise DevstackError(f"no sign-in link for {email!r}: {status} {link}")
    status, session = _call(
        auth + "/verify", key, {"type": "magiclink", "token_hash": link["hashed_token"]}
    )
    if status != 200:
        raise DevstackError(f"the sign-in link did not verify: {status} {session}")
    print(
        f"{note}; access token (valid {session['expires_in']} s) on stdout. Try:\n"
        f'  curl -H "Authorization: Bearer $TOKEN" {urls.get("gateway", "<gateway>")}/v1/me',
        file=sys.stderr,
    )
    return str(session["access_token"])
