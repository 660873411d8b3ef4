"""``public.users``: the application's copy of ``auth.users``, kept by database triggers."""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg
import msgspec


class User(msgspec.Struct, frozen=True):
    id: uuid.UUID
    email: str | None
    full_name: str
    created_at: datetime
    updated_at: datetime


class UserRepository:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def get(self, user_id: uuid.UUID) -> User | None:
        row = await self._pool.fetchrow(
            "select id, email, full_name, created_at, updated_at from public.users where id = $1",
            user_id,
        )
        return None if row is None else User(**dict(row))
