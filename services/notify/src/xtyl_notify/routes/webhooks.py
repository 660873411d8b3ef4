"""``POST /webhooks/brevo``: Brevo's transactional webhooks add suppressions.

Not a user route: public through the gateway (no user token; limited per client address), with
the shared secret ``BREVO_WEBHOOK_SECRET`` as a bearer token (Brevo's webhook ``auth`` of type
``bearer``), as the password of basic auth, or in the URL (``?token=<secret>``). Without the
setting the route answers 404; a wrong or missing secret answers 401. The events go to
:meth:`~xtyl_notify.service.NotifyService.suppress`.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from typing import Any

import msgspec
from litestar import Request, post

from xtyl_common.errors import InvalidInput, NotFound, Unauthorized
from xtyl_common.text import decode_storable_json
from xtyl_notify.domain.webhooks import BrevoWebhookEvent
from xtyl_notify.routes.notifications import service_of
from xtyl_notify.routes.schemas import WebhookReceipt

MAX_WEBHOOK_BYTES = 1024 * 1024

_events_decoder = msgspec.json.Decoder(BrevoWebhookEvent | list[BrevoWebhookEvent])


def _presented_secret(request: Request[Any, Any, Any]) -> str | None:
    authorization = request.headers.get("authorization", "")
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if scheme.lower() == "basic" and value.strip():
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2] or None
    token = request.query_params.get("token")
    return token or None


def check_secret(request: Request[Any, Any, Any], expected: str | None) -> None:
    if expected is None:
        raise NotFound()
    presented = _presented_secret(request)
    if presented is None or not hmac.compare_digest(presented.encode(), expected.encode()):
        raise Unauthorized("wrong or missing webhook secret", code="webhook_unauthorized")


@post(
    "/webhooks/brevo",
    status_code=200,
    request_max_body_size=MAX_WEBHOOK_BYTES,
    problems=(401, 404, 413, 422),  # wrong secret, no secret set, too large, not an event
    summary="Brevo transactional webhook",
    description="Hard bounces, spam complaints, unsubscriptions, blocked and invalid addresses"
    " become suppressions (never emailed again). Authenticated with BREVO_WEBHOOK_SECRET.",
    tags=["webhooks"],
)
async def brevo_webhook(request: Request[Any, Any, Any]) -> WebhookReceipt:
    check_secret(request, request.app.state.webhook_secret)
    try:
        decoded = decode_storable_json(_events_decoder, await request.body())
    except msgspec.MsgspecError as exc:
        raise InvalidInput(f"not a Brevo webhook event: {exc}", code="invalid_webhook") from None
    events = decoded if isinstance(decoded, list) else [decoded]
    added = await service_of(request).suppress(events)
    return WebhookReceipt(received=len(events), suppressed=added)
