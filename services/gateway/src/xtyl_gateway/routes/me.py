"""``GET /v1/me``: the caller's row in ``public.users``.

The token and the rate limit are the service's, the very path every proxied route takes
(:meth:`~xtyl_gateway.service.GatewayService.admit_user`), not a Litestar dependency; so the
operation states its bearer requirement and its 401 itself.
"""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get

from xtyl_common.openapi import BEARER_SCHEME_NAME
from xtyl_gateway.domain.routing import ME_PATH
from xtyl_gateway.routes.asgi import scope_header
from xtyl_gateway.routes.schemas import User
from xtyl_gateway.service import GatewayService


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
        gateway: GatewayService = request.app.state.gateway
        profile = await gateway.me(scope_header(request.scope, b"authorization"))
        return User.of(profile)
