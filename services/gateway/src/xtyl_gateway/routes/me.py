"""``GET /v1/me``: the caller's row in ``public.users``."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get

from xtyl_common.auth import UserPrincipal
from xtyl_common.errors import NotFound
from xtyl_common.identity import USER
from xtyl_gateway.adapters.users import UserRepository
from xtyl_gateway.routes.schemas import User


class MeController(Controller):
    path = "/v1/me"
    tags = ["users"]
    dependencies = USER

    @get(
        "/",
        problems=(404,),  # no public.users row yet
        summary="The signed-in user",
        description="The caller's profile, copied from Supabase Auth by a database trigger.",
    )
    async def me(self, request: Request[Any, Any, Any], user: UserPrincipal) -> User:
        await request.app.state.edge.limit(user, "/v1/me")
        users: UserRepository = request.app.state.users
        found = await users.get(user.user_id)
        if found is None:
            raise NotFound(
                "no profile for this user yet: public.users is filled by the auth.users trigger",
                code="user_not_found",
            )
        return User.of(found)
