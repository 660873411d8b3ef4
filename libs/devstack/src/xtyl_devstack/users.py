"""``python -m xtyl_devstack user --email E``: a local sign-up, and a token for it.

Inserts the ``auth.users`` row as Supabase Auth would (so the gateway's trigger fills
``public.users`` and writes ``user.created``), or finds the existing one by email, then mints an
ES256 access token with the local issuer's key, exactly shaped like Supabase's. The token goes
to stdout alone (``TOKEN=$(make -s user EMAIL=…)``); the rest to stderr.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from pathlib import Path

import asyncpg

from xtyl_devstack.errors import DevstackError
from xtyl_devstack.issuer import load_or_create_signing_key, mint_access_token
from xtyl_devstack.services import AUTH, service_ports
from xtyl_devstack.stack import StackInfo
from xtyl_devstack.up import STACK_FILE

_FIND = "select id from auth.users where lower(email) = lower($1) limit 1"
_INSERT = (
    "insert into auth.users (id, aud, role, email, raw_user_meta_data, raw_app_meta_data,"
    " email_confirmed_at, created_at, updated_at)"
    " values ($1, 'authenticated', 'authenticated', $2, $3::jsonb,"
    ' \'{"provider": "email", "providers": ["email"]}\'::jsonb, now(), now(), now())'
)


async def ensure_user(database_url: str, email: str, full_name: str) -> tuple[uuid.UUID, bool]:
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


def create_user(data_dir: Path, email: str, full_name: str, ttl_s: int) -> str:
    data_dir = data_dir.resolve()
    stack_file = data_dir / STACK_FILE
    if not stack_file.exists():
        raise DevstackError(f"no running stack in {data_dir} (start it with `make up`)")
    info = StackInfo.from_json(stack_file.read_bytes())
    if "@" not in email or len(email) > 254:
        raise DevstackError(f"{email!r} is not an email address")
    user_id, created = asyncio.run(ensure_user(info.database_url, email, full_name))
    key = load_or_create_signing_key(data_dir / "auth")
    supabase_url = f"http://127.0.0.1:{service_ports()[AUTH.name]}"
    token = mint_access_token(
        key.private_key,
        key.kid,
        supabase_url=supabase_url,
        user_id=user_id,
        email=email,
        ttl_s=ttl_s,
        user_metadata={"email": email, "full_name": full_name, "sub": str(user_id)},
    )
    print(
        f"{'created' if created else 'found'} user {user_id} <{email}>; access token"
        f" (valid {ttl_s} s) on stdout. Try:\n"
        f'  curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:'
        f"{service_ports()['gateway']}/v1/me",
        file=sys.stderr,
    )
    return token
