"""``/v1/me``: the caller's profile (``public.users``), and their account across the services:
deleting it (``DELETE /v1/me``, then ``GET /v1/me/deletion``), their quotas
(``GET /v1/me/usage``) and everything held about them (``GET /v1/me/export``, a zip).

The token and the rate limit are the service's, the very path every proxied route takes
(:meth:`~xtyl_gateway.service.GatewayService.admit_user`), not a Litestar dependency; so the
operation states its bearer requirement and its 401 itself.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from litestar import Controller, Request, Response, delete, get
from litestar.response import Stream

from xtyl_common.openapi import BEARER_SCHEME_NAME
from xtyl_gateway.domain.account import DeletionProgress, Usage
from xtyl_gateway.domain.routing import ME_PATH
from xtyl_gateway.routes.asgi import scope_header
from xtyl_gateway.routes.schemas import DeletionAccepted, User
from xtyl_gateway.service import GatewayService

DELETION_PATH = ME_PATH + "/deletion"


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

    @delete(
        "/",
        status_code=202,
        problems=(401, 403, 404, 503),
        security=[{BEARER_SCHEME_NAME: []}],
        summary="Delete my account",
        description="Deletes the caller from Supabase Auth; every service then erases what it"
        " holds for them (files and their bytes, documents, emails), in the background. The"
        " answer says where to follow it (`GET /v1/me/deletion`). Asking again is no error."
        " The access token keeps working for that page until it expires; nothing new is"
        " stored for the account meanwhile. Needs a recent sign-in (403"
        " `reauthentication_required` otherwise: sign in again, then ask).",
    )
    async def delete_me(self, request: Request[Any, Any, Any]) -> Response[DeletionAccepted]:
        gateway: GatewayService = request.app.state.gateway
        user_id = await gateway.delete_me(scope_header(request.scope, b"authorization"))
        return Response(
            DeletionAccepted(user_id=user_id, status="erasing", progress=DELETION_PATH),
            status_code=202,
            headers={"Location": DELETION_PATH},
        )

    @get(
        "/deletion",
        problems=(401, 404),  # 404 deletion_not_requested
        security=[{BEARER_SCHEME_NAME: []}],
        summary="My account deletion's progress",
        description="When the deletion was asked, and each service's erasure: `erasing`"
        " until it has removed everything it held, then `erased` with when and how much.",
    )
    async def deletion(self, request: Request[Any, Any, Any]) -> DeletionProgress:
        gateway: GatewayService = request.app.state.gateway
        return await gateway.deletion(scope_header(request.scope, b"authorization"))

    @get(
        "/usage",
        problems=(401,),
        security=[{BEARER_SCHEME_NAME: []}],
        summary="My usage against my quotas",
        description="Stored bytes and files, documents and chunks, answers today: each with"
        " its limit. A request past a limit is refused with the problem code `quota_<name>`."
        " Services that did not answer are listed in `unavailable`.",
    )
    async def usage(self, request: Request[Any, Any, Any]) -> Usage:
        gateway: GatewayService = request.app.state.gateway
        return await gateway.usage(scope_header(request.scope, b"authorization"))

    @get(
        "/export",
        problems=(401, 404, 429),
        security=[{BEARER_SCHEME_NAME: []}],
        summary="Everything held about me, as a zip",
        description="One streamed zip archive: the profile, every file's details and bytes,"
        " every document with its extracted text, the email log (README.txt inside says what"
        " is where; manifest.json says whether anything was missing). One export at a time"
        " per user. An archive cut short (a service failing mid-way) is an invalid zip, never"
        " a complete-looking partial one.",
        media_type="application/zip",
    )
    async def export(self, request: Request[Any, Any, Any]) -> Stream:
        gateway: GatewayService = request.app.state.gateway
        body = await gateway.export(scope_header(request.scope, b"authorization"))
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        return Stream(
            body,
            media_type="application/zip",
            headers={
                "Content-Disposition": f'attachment; filename="xtyl-export-{stamp}.zip"',
                "Cache-Control": "no-store",
            },
        )
