"""Where the local Auth keeps users, sessions and refresh tokens: the embedded Postgres's
``auth`` schema, in Supabase Auth's own shapes.

``auth.users`` is the table the gateway's migration 0002 creates on a plain Postgres (on
Supabase it is Supabase's); sign-ups insert there, so the gateway's real ``handle_new_user``
trigger fires exactly as on Supabase. :data:`SCHEMA_SQL` adds, only when absent, the tables
Supabase Auth keeps beside it, in their real shape (supabase/auth ``migrations/``):
``auth.sessions``, ``auth.refresh_tokens`` and ``auth.mfa_amr_claims`` (how each session was
signed in), plus the ``aal_level`` type. Nothing here alters ``auth.users``.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from xtyl_devstack.errors import DevstackError

SCHEMA_SQL = """
do $$
begin
    if pg_catalog.to_regclass('auth.users') is null then
        raise exception 'auth.users does not exist: apply the migrations first (make migrate)';
    end if;
end
$$;
do $$
begin
    create type auth.aal_level as enum ('aal1', 'aal2', 'aal3');
exception when duplicate_object then null;
end
$$;
create table if not exists auth.sessions (
    id uuid not null,
    user_id uuid not null,
    created_at timestamptz null,
    updated_at timestamptz null,
    factor_id uuid null,
    aal auth.aal_level null,
    not_after timestamptz null,
    refreshed_at timestamp without time zone null,
    user_agent text null,
    ip inet null,
    tag text null,
    oauth_client_id uuid null,
    refresh_token_hmac_key text null,
    refresh_token_counter bigint null,
    scopes text null,
    constraint sessions_pkey primary key (id),
    constraint sessions_user_id_fkey foreign key (user_id)
        references auth.users (id) on delete cascade,
    constraint sessions_scopes_length check (char_length(scopes) <= 4096)
);
create index if not exists sessions_user_id_idx on auth.sessions (user_id);
create index if not exists sessions_not_after_idx on auth.sessions (not_after desc);
create table if not exists auth.refresh_tokens (
    instance_id uuid null,
    id bigserial not null,
    token varchar(255) null,
    user_id varchar(255) null,
    revoked bool null,
    created_at timestamptz null,
    updated_at timestamptz null,
    parent varchar(255) null,
    session_id uuid null,
    constraint refresh_tokens_pkey primary key (id),
    constraint refresh_tokens_token_unique unique (token),
    constraint refresh_tokens_session_id_fkey foreign key (session_id)
        references auth.sessions (id) on delete cascade
);
create index if not exists refresh_tokens_instance_id_idx on auth.refresh_tokens (instance_id);
create index if not exists refresh_tokens_instance_id_user_id_idx
    on auth.refresh_tokens (instance_id, user_id);
create index if not exists refresh_tokens_parent_idx on auth.refresh_tokens (parent);
create index if not exists refresh_tokens_session_id_revoked_idx
    on auth.refresh_tokens (session_id, revoked);
create index if not exists refresh_tokens_updated_at_idx on auth.refresh_tokens (updated_at desc);
create table if not exists auth.mfa_amr_claims (
    session_id uuid not null,
    created_at timestamptz not null,
    updated_at timestamptz not null,
    authentication_method text not null,
    id uuid not null,
    constraint amr_id_pk primary key (id),
    constraint mfa_amr_claims_session_id_authentication_method_pkey
        unique (session_id, authentication_method),
    constraint mfa_amr_claims_session_id_fkey foreign key (session_id)
        references auth.sessions (id) on delete cascade
);
"""

#: A connection, or one lent by a pool.
Conn = asyncpg.Connection | PoolConnectionProxy
#: Supabase Auth's instance id for every row of a project.
INSTANCE_ID = uuid.UUID(int=0)
USER_COLUMNS = (
    "id, aud, role, email, encrypted_password, email_confirmed_at, invited_at,"
    " confirmation_token, confirmation_sent_at, recovery_token, recovery_sent_at,"
    " email_change_token_new, email_change, email_change_sent_at, email_change_token_current,"
    " email_change_confirm_status, last_sign_in_at, raw_app_meta_data, raw_user_meta_data,"
    " created_at, updated_at, phone, phone_confirmed_at, confirmed_at, banned_until,"
    " reauthentication_token, reauthentication_sent_at, is_sso_user, deleted_at, is_anonymous"
)


async def install_schema(pool: asyncpg.Pool) -> None:
    """Create the tables of :data:`SCHEMA_SQL` that are missing (under a lock: safe to race)."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("select pg_catalog.pg_advisory_xact_lock(hashtext('xtyl_local_auth'))")
        try:
            await conn.execute(SCHEMA_SQL)
        except asyncpg.RaiseError as exc:
            raise DevstackError(str(exc)) from None


async def init_connection(conn: Conn) -> None:
    """jsonb columns as Python values."""
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


def _metadata(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, dict) else {}  # pyright: ignore[reportUnknownArgumentType]


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def user_json(row: asyncpg.Record) -> dict[str, Any]:
    """A user as Supabase Auth answers it (models.User), with its email identity."""
    user_id = str(row["id"])
    metadata = _metadata(row["raw_user_meta_data"])
    email = row["email"] or ""
    identity_data = {
        "email": email,
        "email_verified": bool(metadata.get("email_verified", False)),
        "phone_verified": False,
        "sub": user_id,
    }
    user: dict[str, Any] = {
        "id": user_id,
        "aud": row["aud"] or "authenticated",
        "role": row["role"] or "authenticated",
        "email": email,
        "phone": row["phone"] or "",
        "app_metadata": _metadata(row["raw_app_meta_data"]),
        "user_metadata": metadata,
        "identities": [
            {
                "identity_id": str(uuid.uuid5(row["id"], "email")),
                "id": user_id,
                "user_id": user_id,
                "identity_data": identity_data,
                "provider": "email",
                "last_sign_in_at": _time(row["last_sign_in_at"] or row["created_at"]),
                "created_at": _time(row["created_at"]),
                "updated_at": _time(row["updated_at"]),
                "email": email,
            }
        ],
        "created_at": _time(row["created_at"]),
        "updated_at": _time(row["updated_at"]),
        "is_anonymous": bool(row["is_anonymous"]),
    }
    for name in (
        "email_confirmed_at",
        "confirmed_at",
        "last_sign_in_at",
        "invited_at",
        "confirmation_sent_at",
        "recovery_sent_at",
        "email_change_sent_at",
        "banned_until",
    ):
        if row[name] is not None:
            user[name] = _time(row[name])
    if row["email_change"]:
        user["new_email"] = row["email_change"]
    return user


async def find_user_by_email(conn: Conn, email: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"select {USER_COLUMNS} from auth.users"  # noqa: S608 - constant columns
        " where lower(email) = lower($1) and aud = 'authenticated' and deleted_at is null"
        " order by created_at limit 1",
        email,
    )


async def find_user(conn: Conn, user_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"select {USER_COLUMNS} from auth.users where id = $1",  # noqa: S608 - constant columns
        user_id,
    )


async def insert_user(
    conn: Conn,
    *,
    email: str,
    encrypted_password: str | None,
    user_metadata: dict[str, Any],
    app_metadata: dict[str, Any],
    confirmed: bool,
) -> asyncpg.Record:
    """A new row of auth.users, as Supabase Auth writes it at sign-up (the triggers fire)."""
    user_id = uuid.uuid4()
    metadata = {
        "sub": str(user_id),
        "email": email,
        "email_verified": confirmed,
        "phone_verified": False,
        **user_metadata,
    }
    row = await conn.fetchrow(
        "insert into auth.users (instance_id, id, aud, role, email, encrypted_password,"  # noqa: S608 - constant columns
        " email_confirmed_at, raw_app_meta_data, raw_user_meta_data, created_at, updated_at,"
        " confirmation_token, recovery_token, email_change_token_new, email_change,"
        " is_sso_user, is_anonymous)"
        " values ($1, $2, 'authenticated', 'authenticated', $3, $4,"
        " case when $5 then now() end, $6, $7, now(), now(), '', '', '', '', false, false)"
        f" returning {USER_COLUMNS}",
        INSTANCE_ID,
        user_id,
        email,
        encrypted_password,
        confirmed,
        app_metadata,
        metadata,
    )
    assert row is not None
    return row


async def lock_email(conn: Conn, email: str) -> None:
    """Serialise sign-ups of one address (auth.users here has no unique email index)."""
    await conn.execute(
        "select pg_catalog.pg_advisory_xact_lock(hashtext('xtyl_local_auth:' || lower($1)))",
        email,
    )


async def create_session(
    conn: Conn,
    *,
    user_id: uuid.UUID,
    method: str,
    refresh_token: str,
    user_agent: str | None,
    ip: str | None,
) -> uuid.UUID:
    """A session with its first refresh token; the user's ``last_sign_in_at`` is now."""
    session_id = uuid.uuid4()
    await conn.execute(
        "insert into auth.sessions (id, user_id, created_at, updated_at, aal, user_agent, ip)"
        " values ($1, $2, now(), now(), 'aal1', $3, $4::inet)",
        session_id,
        user_id,
        user_agent,
        ip,
    )
    await conn.execute(
        "insert into auth.mfa_amr_claims (session_id, created_at, updated_at,"
        " authentication_method, id) values ($1, now(), now(), $2, $3)",
        session_id,
        method,
        uuid.uuid4(),
    )
    await insert_refresh_token(conn, user_id, session_id, refresh_token, parent=None)
    await conn.execute("update auth.users set last_sign_in_at = now() where id = $1", user_id)
    return session_id


async def insert_refresh_token(
    conn: Conn,
    user_id: uuid.UUID,
    session_id: uuid.UUID,
    token: str,
    *,
    parent: str | None,
) -> None:
    await conn.execute(
        "insert into auth.refresh_tokens (instance_id, token, user_id, revoked, created_at,"
        " updated_at, parent, session_id) values ($1, $2, $3, false, now(), now(), $4, $5)",
        INSTANCE_ID,
        token,
        str(user_id),
        parent,
        session_id,
    )


async def session_methods(conn: Conn, session_id: uuid.UUID) -> list[tuple[str, int]]:
    rows = await conn.fetch(
        "select authentication_method, extract(epoch from created_at)::bigint as at"
        " from auth.mfa_amr_claims where session_id = $1 order by created_at",
        session_id,
    )
    return [(str(row["authentication_method"]), int(row["at"])) for row in rows]


async def merge_user_metadata(conn: Conn, user_id: uuid.UUID, changes: dict[str, Any]) -> None:
    """Supabase Auth's metadata update: keys set to null are removed, others replaced."""
    removed = [k for k, v in changes.items() if v is None]
    kept = {k: v for k, v in changes.items() if v is not None}
    await conn.execute(
        "update auth.users set raw_user_meta_data ="
        " (coalesce(raw_user_meta_data, '{}'::jsonb) - $3::text[]) || $2, updated_at = now()"
        " where id = $1",
        user_id,
        kept,
        removed,
    )
