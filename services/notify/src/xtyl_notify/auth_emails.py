"""Supabase Auth's emails (the Send Email Hook), sent like every other email: logged under a
dedupe key, checked against suppressions, through Brevo with its idempotency key.

The dedupe key is the hook call's ``webhook-id`` (plus which of its emails): a call delivered
twice sends once. Supabase Auth waits for the answer (5 s at most) and then tells the user,
so each email gets one attempt here (its final one): Brevo unavailable leaves the row
``failed`` and the hook answers 503 with ``Retry-After``, which makes Supabase try again at
once with a new ``webhook-id`` (a new row); a replay of the same id finds the first row and
sends nothing.
"""

from __future__ import annotations

from collections.abc import Mapping

import structlog

from xtyl_notify.adapters.brevo import BrevoRejected
from xtyl_notify.domain.auth_emails import SendEmailHook, emails_for
from xtyl_notify.domain.emails import EmailStatus, NewEmail
from xtyl_notify.notifications import Notifier

log = structlog.stdlib.get_logger("xtyl.notify.auth_emails")

DEDUPE_PREFIX = "auth_hook"


def dedupe_key(webhook_id: str, role: str) -> str:
    return f"{DEDUPE_PREFIX}:{webhook_id}:{role}"


async def send_auth_emails(
    notifier: Notifier,
    webhook_id: str,
    hook: SendEmailHook,
    templates: Mapping[str, int] | None = None,
) -> list[EmailStatus]:
    """Send the emails of one hook call; their statuses (``failed`` when Brevo refused one).
    Raises when it is worth the caller trying again: :class:`BrevoUnavailable` (the row is
    ``failed`` by then), ``EmailInFlight`` (a copy of this call is sending it right now) or the
    database's ``Unavailable``."""
    emails = emails_for(hook, templates)
    if not emails:
        log.info(
            "email_skipped",
            kind="auth",
            action=hook.email_data.email_action_type,
            reason="not an email notify sends",
        )
    statuses: list[EmailStatus] = []
    for email in emails:
        new = NewEmail(
            kind=email.kind,
            dedupe_key=dedupe_key(webhook_id, email.role),
            user_id=email.user_id,
            to_address=email.to_address,
            to_name=email.to_name,
            content=email.content,
            template=email.template,
        )
        try:
            statuses.append(await notifier.deliver(new, final_attempt=True))
        except BrevoRejected:
            statuses.append(EmailStatus.FAILED)
    return statuses
