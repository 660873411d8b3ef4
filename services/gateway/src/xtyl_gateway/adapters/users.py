"""``public.users``: the application's copy of ``auth.users``, kept by database triggers."""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg

from xtyl_gateway.domain.users import UserProfile


class UserRepository:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def get(self, user_id: uuid.UUID) -> UserProfile | None:
        row = await self._pool.fetchrow(
            "select id, email, full_name, created_at, updated_at from public.users where id = $1",
            user_id,
        )
        return None if row is None else UserProfile(**dict(row))

    async def deleted_at(self, user_id: uuid.UUID) -> datetime | None:
        """When the user was deleted from Supabase Auth (the trigger's record), if they were."""
        found: datetime | None = await self._pool.fetchval(
            "select deleted_at from xtyl_gateway.user_deletions where user_id = $1", user_id
        )
        return found
