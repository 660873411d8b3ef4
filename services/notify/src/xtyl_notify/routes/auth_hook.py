"""``POST /webhooks/auth/send-email``: Supabase Auth's Send Email Hook.

Public through the gateway (no user token; limited per client address), authenticated by its
Standard Webhooks signature (``webhook-id``, ``webhook-timestamp``, ``webhook-signature``),
checked with the ``standardwebhooks`` library against ``SEND_EMAIL_HOOK_SECRET`` (each of its
``|``-separated ``v1,whsec_…`` secrets). Unset: 404. Answers, in the hook's shapes (errors are
problem details that also carry the hook's ``error`` member):

* 200 ``{}``: sent (or suppressed, or a replay of a call already answered: sent once);
* 401 ``hook_unauthorized``: a missing or wrong signature, or a timestamp more than 5 minutes
  away from now;
* 422 ``invalid_hook_payload``: not the hook's JSON;
* 500 ``email_failed``: Brevo refused the email;
* 503 ``email_unavailable``: Brevo could not take the email within the hook's deadline, though
  tried again here (:data:`~xtyl_notify.service.AUTH_EMAIL_SENDS`), or the call ran out of
  time. No ``Retry-After``: notify was the layer that retried, and Supabase's own new try
  (a new ``webhook-id``, so a new email) could send an email twice whose answer was lost;
* 503 ``email_unavailable`` with ``Retry-After`` (Supabase Auth then tries again at once): the
  database unavailable, or the same call being sent right now; nothing was retried here.
"""

from __future__ import annotations

from typing import Any

import msgspec
import structlog
from litestar import Request, post
from standardwebhooks import Webhook, WebhookVerificationError

from xtyl_common.errors import (
    DependencyError,
    InvalidInput,
    NotFound,
    Unauthorized,
    Unavailable,
    XtylError,
)
from xtyl_notify.domain.auth_emails import SendEmailHook
from xtyl_notify.domain.emails import EmailStatus
from xtyl_notify.routes.notifications import service_of
from xtyl_notify.service import EmailNotSentInTime

log = structlog.stdlib.get_logger("xtyl.notify.auth_hook")

MAX_HOOK_BYTES = 256 * 1024
HOOK_PATH = "/webhooks/auth/send-email"
WEBHOOKS_STATE_KEY = "send_email_hook"

_hook_decoder = msgspec.json.Decoder(SendEmailHook)


def hook_verifiers(secrets: tuple[str, ...]) -> list[Webhook]:
    """One verifier per ``v1,whsec_…`` secret."""
    return [Webhook(secret.removeprefix("v1,")) for secret in secrets]


def _hook_error(
    error: type[XtylError], status: int, message: str, code: str, **kw: Any
) -> XtylError:
    return error(
        message, code=code, extra={"error": {"http_code": status, "message": message}}, **kw
    )


def _verified_id(request: Request[Any, Any, Any], body: bytes, verifiers: list[Webhook]) -> str:
    headers = {
        name: request.headers.get(name, "")
        for name in ("webhook-id", "webhook-timestamp", "webhook-signature")
    }
    reason = "no secret configured"
    for verifier in verifiers:
        try:
            verifier.verify(body, headers, json_parse=False)
        except WebhookVerificationError as exc:
            reason = str(exc)
            continue
        return headers["webhook-id"]
    log.warning("auth_hook_refused", reason=reason)
    raise _hook_error(
        Unauthorized, 401, f"invalid webhook signature: {reason}", "hook_unauthorized"
    )


@post(
    HOOK_PATH,
    status_code=200,
    request_max_body_size=MAX_HOOK_BYTES,
    problems=(401, 404, 413, 422, 500, 503),
    summary="Supabase Auth's Send Email Hook",
    description="Sign-up, recovery, magic-link, email-change, invite and reauthentication emails"
    " from Supabase Auth, sent through Brevo. Signed per Standard Webhooks with"
    " SEND_EMAIL_HOOK_SECRET.",
    tags=["webhooks"],
)
async def send_email_hook(request: Request[Any, Any, Any]) -> dict[str, Any]:
    verifiers: list[Webhook] = request.app.state[WEBHOOKS_STATE_KEY]
    if not verifiers:
        raise NotFound()
    body = await request.body()
    webhook_id = _verified_id(request, body, verifiers)
    try:
        hook = _hook_decoder.decode(body)
    except msgspec.MsgspecError as exc:
        raise _hook_error(
            InvalidInput, 422, f"not a Send Email Hook payload: {exc}", "invalid_hook_payload"
        ) from None
    try:
        statuses = await service_of(request).send_auth_emails(webhook_id, hook)
    except DependencyError as exc:
        retried_here = isinstance(exc, EmailNotSentInTime)
        raise _hook_error(
            Unavailable,
            503,
            f"the email could not be sent now: {exc}",
            "email_unavailable",
            headers=None if retried_here else {"Retry-After": "1"},
        ) from None
    if EmailStatus.FAILED in statuses:
        raise _hook_error(XtylError, 500, "the email could not be sent", "email_failed")
    return {}
