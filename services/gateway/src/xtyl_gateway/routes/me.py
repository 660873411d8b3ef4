"""``GET /v1/me``: the caller's row in ``public.users``.

The token and the rate limit are the edge's, the very path every proxied route takes
(:meth:`~xtyl_gateway.routes.proxy.Edge.admit_user`), not a Litestar dependency; so the
operation states its bearer requirement and its 401 itself.
"""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get

from xtyl_common.errors import NotFound
from xtyl_common.openapi import BEARER_SCHEME_NAME
from xtyl_gateway.adapters.users import UserRepository
from xtyl_gateway.domain.routing import ME_PATH
from xtyl_gateway.routes.asgi import scope_header
from xtyl_gateway.routes.proxy import Edge
from xtyl_gateway.routes.schemas import User


class MeController(Controller):
    path = ME_PATH
    tags = ["users"]

    @get(
        "/",
        problems=(401, 404),  # 404: no public.users row yet
        security=[{BEARER_SCHEME_NAME: []}],
        summary="The signed-in user",
        description="The caller's profile, copied from Supabase Auth by a database trigger.",
    )
    async def me(self, request: Request[Any, Any, Any]) -> User:
        edge: Edge = request.app.state.edge
        user = await edge.admit_user(scope_header(request.scope, b"authorization"), ME_PATH)
        users: UserRepository = request.app.state.users
        found = await users.get(user.user_id)
        if found is None:
            raise NotFound(
                "no profile for this user yet: public.users is filled by the auth.users trigger",
                code="user_not_found",
            )
        return User.of(found)
