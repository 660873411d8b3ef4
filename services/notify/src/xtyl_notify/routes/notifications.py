"""``/v1/notifications``: the caller's own email log and email preferences. Every handler takes
the verified user (the one-click unsubscribe link, which has none, is :mod:`.unsubscribe`)."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get, put
from litestar.di import NamedDependency
from litestar.params import QueryParameter

from xtyl_common.auth import UserPrincipal
from xtyl_common.errors import InvalidInput
from xtyl_common.identity import USER
from xtyl_common.pagination import DEFAULT_LIMIT, MAX_LIMIT
from xtyl_notify.routes.schemas import NotificationListOut, NotificationOut, PreferencesBody
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

    @get(
        "/preferences",
        summary="Your email preferences",
        description="Which kinds of email you get. Transactional emails (the welcome email,"
        " sign-in and recovery emails) are not listed: they cannot be turned off.",
    )
    async def get_preferences(
        self, request: Request[Any, Any, Any], user: NamedDependency[UserPrincipal]
    ) -> PreferencesBody:
        return PreferencesBody.of(await service_of(request).preferences(user.user_id))

    @put(
        "/preferences",
        summary="Set your email preferences",
        description="Both kinds, true to get them. A kind turned off is sent no more, and"
        " left out of the document digests; both off, no digest is sent at all.",
        problems=(403, 422),
    )
    async def put_preferences(
        self,
        request: Request[Any, Any, Any],
        user: NamedDependency[UserPrincipal],
        data: PreferencesBody,
    ) -> PreferencesBody:
        # Litestar converts bodies leniently (0 would pass for false): read it strictly, as
        # the schema says, so a client's mistake is a 422 and never a silent change
        try:
            strict = msgspec.json.decode(await request.body(), type=PreferencesBody)
        except msgspec.ValidationError as exc:
            raise InvalidInput(str(exc)) from None
        stored = await service_of(request).set_preferences(user.user_id, strict.to_preferences())
        return PreferencesBody.of(stored)
