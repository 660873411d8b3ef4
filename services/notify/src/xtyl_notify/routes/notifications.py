"""``/v1/notifications``: the caller's own email log. Every handler takes the verified user."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.params import QueryParameter

from xtyl_common.auth import UserPrincipal
from xtyl_common.identity import USER
from xtyl_common.pagination import DEFAULT_LIMIT, MAX_LIMIT
from xtyl_notify.routes.schemas import NotificationListOut, NotificationOut
from xtyl_notify.service import NotifyService

#: Where the app's lifespan keeps the service.
SERVICE_STATE_KEY = "notify"


def service_of(request: Request[Any, Any, Any]) -> NotifyService:
    service: NotifyService = request.app.state[SERVICE_STATE_KEY]
    return service


class NotificationsController(Controller):
    path = "/v1/notifications"
    tags = ["notifications"]
    dependencies = USER

    @get(
        "/",
        summary="List your emails",
        description="The emails the service sent you or decided to send you, newest first,"
        " cursor-paginated.",
    )
    async def list_notifications(
        self,
        request: Request[Any, Any, Any],
        user: NamedDependency[UserPrincipal],
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
        cursor: Annotated[str | None, QueryParameter(max_length=512)] = None,
    ) -> NotificationListOut:
        page = await service_of(request).email_page(user.user_id, limit=limit, cursor=cursor)
        return NotificationListOut(
            items=[NotificationOut.of(item) for item in page.items],
            next_cursor=page.next_cursor,
        )
