"""``public.users``: the application's copy of ``auth.users``, kept by database triggers."""

from __future__ import annotations

import uuid

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
