"""The notify service app: ``create_app(settings)`` opens the service
(:func:`~xtyl_notify.service.open_service`) in its lifespan and mounts the routes."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager

from litestar import Litestar

from xtyl_common.auth import TokenVerifier
from xtyl_common.health import readiness_of
from xtyl_common.http import create_session
from xtyl_common.identity import VERIFIER_STATE_KEY
from xtyl_common.logging import configure_logging
from xtyl_common.redis_client import check_redis, create_redis
from xtyl_common.settings import load_settings_or_exit
from xtyl_common.web import build_service_app
from xtyl_notify.routes.auth_hook import WEBHOOKS_STATE_KEY, hook_verifiers, send_email_hook
from xtyl_notify.routes.internal import InternalMeController
from xtyl_notify.routes.notifications import SERVICE_STATE_KEY, NotificationsController
from xtyl_notify.routes.unsubscribe import UnsubscribeController
from xtyl_notify.routes.webhooks import brevo_webhook
from xtyl_notify.service import open_service
from xtyl_notify.settings import NotifySettings

VERSION = "0.1.0"


def create_app(settings: NotifySettings) -> Litestar:
    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncGenerator[None]:
        async with open_service(settings) as service:
            redis = create_redis(settings.redis_url)
            session = create_session()
            verifier = TokenVerifier(settings.auth_config(), session)
            try:
                await verifier.warm_up()
                readiness = readiness_of(app)
                for name, check in service.readiness.items():
                    readiness.add(name, check)
                readiness.add("redis", lambda: check_redis(redis))
                app.state[SERVICE_STATE_KEY] = service
                app.state[VERIFIER_STATE_KEY] = verifier
                yield
            finally:
                await verifier.close()
                await session.close()
                await redis.aclose()

    return build_service_app(
        title="xtyl notify service",
        version=VERSION,
        description="Transactional email through Brevo: the user's email log and email"
        " preferences under /v1/notifications (the user's Supabase access token), the signed"
        " one-click unsubscribe link at /v1/notifications/unsubscribe (no sign-in), Brevo's"
        " webhooks at /webhooks/brevo (BREVO_WEBHOOK_SECRET), Supabase Auth's emails at"
        " /webhooks/auth/send-email (SEND_EMAIL_HOOK_SECRET).",
        route_handlers=[
            NotificationsController,
            UnsubscribeController,
            InternalMeController,
            brevo_webhook,
            send_email_hook,
        ],
        lifespan=[lifespan],
        request_max_body_size=1024 * 1024,
        state={
            "webhook_secret": settings.brevo_webhook_secret,
            WEBHOOKS_STATE_KEY: hook_verifiers(settings.send_email_hook_secrets),
        },
        service="notify",
    )


def app_from_env() -> Litestar:
    """granian's factory: runs in each worker process."""
    settings = load_settings_or_exit(NotifySettings, program="xtyl-notify")
    configure_logging(settings.log_level, json_logs=settings.log_json)
    return create_app(settings)
