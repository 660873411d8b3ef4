"""What the notify service does, whatever runs it: :class:`NotifyService`, the one class the
worker's stream handlers and the routes call. Its parts:

* :mod:`.sending`: the send path every email takes (:class:`~.sending.Sender`);
* :mod:`.documents`: document emails, coalesced per user, and the worker's digest loop;
* :mod:`.accounts`: preferences, one-click unsubscribe, erasure and export;
* this module: the users' events, Supabase Auth's emails, the email log, Brevo's suppressions.

Who retries a send, one layer per call path:

* emails of stream events (``user.created``, ``document.*``): nothing in process. The stream
  entry's deferred retry is the layer that waits: after Brevo's ``x-sib-ratelimit-reset`` (or
  ``Retry-After``) when it gave one, however long (a reset past the retry horizon is still
  waited for, for one last attempt), else with backoff, until ``EVENTS_RETRY_HORIZON_S``; the
  attempt past the horizon is the final one.
* Supabase Auth's emails (:meth:`NotifyService.send_auth_emails`): Supabase waits for the
  hook's answer (:data:`AUTH_HOOK_DEADLINE_S`), so Brevo is retried here,
  :data:`AUTH_EMAIL_SENDS`, each request bounded by the time left; when Brevo could not take
  an email in that time it is ``failed``. The whole call, the database included, is cut at
  :data:`AUTH_HOOK_ANSWER_S`; both raise :class:`EmailNotSentInTime`.
* digests of document emails: the worker's digest loop (:mod:`.documents`), on the same terms
  as a stream entry's retries.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime

import structlog

from xtyl_common.erasure import AccountDeleted, ErasureState
from xtyl_common.errors import Unavailable
from xtyl_common.events import (
    DocumentFailed,
    DocumentIndexed,
    UserCreated,
    UserDeleted,
    UserUpdated,
)
from xtyl_common.health import HealthCheck
from xtyl_common.pagination import Page, keyset_page
from xtyl_common.retry import RetryPolicy
from xtyl_notify.adapters.brevo import BrevoClient, BrevoRejected, BrevoUnavailable
from xtyl_notify.adapters.metrics import EMAIL_OUTCOMES, EMAILS, SUPPRESSIONS
from xtyl_notify.adapters.postgres import NotifyRepository
from xtyl_notify.domain.addresses import AddressHasher, display_name
from xtyl_notify.domain.auth_emails import SendEmailHook, new_emails
from xtyl_notify.domain.emails import (
    EmailKind,
    EmailRecord,
    EmailStatus,
    NewEmail,
    Recipient,
    dedupe_key,
)
from xtyl_notify.domain.preferences import Preferences, UnsubscribeRequest
from xtyl_notify.domain.templates import welcome_email
from xtyl_notify.domain.webhooks import SUPPRESSING_EVENTS, BrevoWebhookEvent, suppressions_from
from xtyl_notify.service.accounts import Accounts, ExportItem
from xtyl_notify.service.documents import DocumentMails
from xtyl_notify.service.sending import Sender, count

log = structlog.stdlib.get_logger("xtyl.notify")

#: Where Brevo's webhooks' suppressions come from (``xtyl_notify.suppressions.source``).
SUPPRESSION_SOURCE = "brevo_webhook"

#: Supabase Auth gives the Send Email Hook 5 s to answer, its own tries included.
AUTH_HOOK_DEADLINE_S = 5.0
#: The hook's emails: Brevo tried at most 3 times, 0.1 s doubling to 0.5 s between tries (or
#: the rate-limit reset Brevo asks for, up to 1 s; a longer one fails at once), no try started
#: after 3 s, and each request cut at that point. The slowest answer is so ~4 s.
AUTH_EMAIL_SENDS = RetryPolicy(
    attempts=3,
    timeout_s=3.0,
    wait_initial_s=0.1,
    wait_max_s=0.5,
    wait_jitter_s=0.1,
    max_retry_after_s=1.0,
)
#: The whole hook call (the database included) is cut here, below Supabase's deadline.
AUTH_HOOK_ANSWER_S = 4.5


class EmailNotSentInTime(Unavailable):
    """The hook's emails could not be sent within its time, though Brevo was tried again here:
    the emails still open are ``failed``. (A new call of the hook would be new emails.)"""

    default_code = "email_unavailable"


class NotifyService:
    def __init__(
        self,
        sender: Sender,
        documents: DocumentMails,
        accounts: Accounts,
        *,
        app_url: str,
        auth_templates: Mapping[str, int] | None = None,
        readiness: Mapping[str, HealthCheck] | None = None,
    ) -> None:
        self.sender = sender
        self.repository: NotifyRepository = sender.repository
        self.brevo: BrevoClient = sender.brevo
        self.documents = documents
        self.accounts = accounts
        self.app_url = app_url
        #: ``BREVO_AUTH_TEMPLATES``: Supabase Auth actions sent as Brevo templates.
        self.auth_templates: dict[str, int] = dict(auth_templates or {})
        #: What ``/readyz`` checks of the service's own dependencies.
        self.readiness: dict[str, HealthCheck] = dict(readiness or {})
        # every series from the start, so increase() sees the first email of each
        for kind in EmailKind:
            for outcome in EMAIL_OUTCOMES:
                EMAILS.labels(kind.value, outcome)
        for reason in sorted(set(SUPPRESSING_EVENTS.values())):
            SUPPRESSIONS.labels(reason)

    @property
    def addresses(self) -> AddressHasher:
        return self.sender.addresses

    # --- the users stream -----------------------------------------------------------------

    async def on_user_created(
        self, event: UserCreated, *, final_attempt: bool = False
    ) -> EmailStatus | None:
        """Remember where the user's email goes, then send the welcome email (to the address
        as it now stands: a ``user.updated`` delivered first wins). Nothing for a deleted
        user: a late ``user.created`` creates no recipient."""
        payload = event.payload
        if not payload.email:
            log.info("email_skipped", kind="welcome", reason="user has no email address")
            count(EmailKind.WELCOME, "skipped")
            return None
        recipient = await self._save_recipient(
            payload.user_id, payload.email, payload.full_name, event.occurred_at
        )
        if recipient is None or not recipient.email:
            count(EmailKind.WELCOME, "skipped")
            return None
        email = NewEmail(
            kind=EmailKind.WELCOME,
            dedupe_key=dedupe_key(event.type, payload.user_id),
            user_id=payload.user_id,
            to_address=recipient.email,
            to_name=recipient.full_name,
            content=welcome_email(full_name=recipient.full_name, app_url=self.app_url),
        )
        try:
            return await self.deliver(email, final_attempt=final_attempt)
        except AccountDeleted:
            log.info("email_skipped", kind="welcome", reason="the account was deleted")
            count(EmailKind.WELCOME, "skipped")
            return None

    async def on_user_updated(self, event: UserUpdated) -> None:
        """The user's address or name changed: later emails go to the new one. An update
        delivered before the user's ``user.created`` is kept (that older event then changes
        nothing); one for a deleted user is ignored."""
        payload = event.payload
        email = payload.email.strip() if payload.email else None
        await self._save_recipient(payload.user_id, email, payload.full_name, event.occurred_at)

    async def _save_recipient(
        self, user_id: uuid.UUID, email: str | None, full_name: str | None, at: datetime
    ) -> Recipient | None:
        recipient = Recipient(
            user_id=user_id,
            email=email.strip() if email else None,
            full_name=display_name(full_name),
        )
        try:
            return await self.repository.save_recipient(recipient, changed_at=at)
        except AccountDeleted:
            log.info("recipient_skipped", user_id=str(user_id), reason="the account was deleted")
            return None

    async def on_user_deleted(self, event: UserDeleted) -> None:
        await self.accounts.erase_user(event.payload.user_id, requested_at=event.occurred_at)

    # --- the documents stream -------------------------------------------------------------

    async def on_document_indexed(
        self, event: DocumentIndexed, *, final_attempt: bool = False
    ) -> EmailStatus | None:
        return await self.documents.on_indexed(event, final_attempt=final_attempt)

    async def on_document_failed(
        self, event: DocumentFailed, *, final_attempt: bool = False
    ) -> EmailStatus | None:
        return await self.documents.on_failed(event, final_attempt=final_attempt)

    # --- Supabase Auth's emails (the Send Email Hook) -------------------------------------

    async def send_auth_emails(self, webhook_id: str, hook: SendEmailHook) -> list[EmailStatus]:
        """Send the emails of one hook call within :data:`AUTH_HOOK_ANSWER_S`; their statuses
        (``failed`` when Brevo refused one). Raises :class:`EmailNotSentInTime` when Brevo could
        not take them in time (its rows are ``failed`` by then, the cause is Brevo's error) or
        the call ran out of time, :class:`EmailInFlight` (a copy of this call is sending them
        right now) or the database's ``Unavailable``."""
        emails = new_emails(webhook_id, hook, self.auth_templates)
        if not emails:
            log.info(
                "email_skipped",
                kind="auth",
                action=hook.email_data.email_action_type,
                reason="not an email notify sends",
            )
            return []
        assert AUTH_EMAIL_SENDS.timeout_s is not None
        loop = asyncio.get_running_loop()
        sends_end = loop.time() + AUTH_EMAIL_SENDS.timeout_s
        answer = asyncio.timeout(AUTH_HOOK_ANSWER_S)
        try:
            async with answer:
                try:
                    return await AUTH_EMAIL_SENDS.call(
                        BrevoUnavailable, self._send_each, emails, sends_end
                    )
                except BrevoUnavailable as exc:
                    failed = await self.repository.give_up(
                        [email.dedupe_key for email in emails], f"{exc.code}: {exc.message}"
                    )
                    for email in emails:
                        if email.dedupe_key in failed:
                            count(email.kind, "failed")
                    log.warning("email_failed", kind="auth", code=exc.code, gave_up=True)
                    raise EmailNotSentInTime(
                        f"Brevo: {exc.code}: {exc.message}", retry_after_s=exc.retry_after_s
                    ) from exc
        except TimeoutError:
            if not answer.expired():
                raise
            raise EmailNotSentInTime(
                f"the emails were not sent within {AUTH_HOOK_ANSWER_S:g} s"
            ) from None

    async def _send_each(self, emails: Sequence[NewEmail], sends_end: float) -> list[EmailStatus]:
        """One try at every email of a hook call (those sent already are found ``sent``)."""
        statuses: list[EmailStatus] = []
        for email in emails:
            try:
                statuses.append(await self.deliver(email, send_by=sends_end))
            except BrevoRejected:
                statuses.append(EmailStatus.FAILED)
        return statuses

    # --- history and suppressions ---------------------------------------------------------

    async def email_page(
        self, user_id: uuid.UUID, *, limit: int, cursor: str | None
    ) -> Page[EmailRecord]:
        """The user's email log, newest first, one cursor page (``GET /v1/notifications``)."""
        return await keyset_page(
            lambda n, after: self.repository.list_for_user(user_id, limit=n, after=after),
            limit=limit,
            cursor=cursor,
        )

    async def suppress(self, events: Sequence[BrevoWebhookEvent]) -> int:
        """Brevo's webhook events: addresses that bounced, complained or unsubscribed are
        never written to again (kept as their hash); how many were new."""
        suppressions = suppressions_from(list(events))
        reasons = {self.addresses.hash(s.address): s.reason for s in suppressions}
        added = await self.repository.add_suppressions(
            list(reasons.items()), source=SUPPRESSION_SOURCE
        )
        for key in added:
            SUPPRESSIONS.labels(reasons[key]).inc()
        if suppressions:
            log.info(
                "suppressions_added",
                added=len(added),
                reasons=sorted({s.reason for s in suppressions}),
            )
        return len(added)

    # --- the account ----------------------------------------------------------------------

    async def preferences(self, user_id: uuid.UUID) -> Preferences:
        return await self.accounts.preferences(user_id)

    async def set_preferences(self, user_id: uuid.UUID, wanted: Preferences) -> Preferences:
        return await self.accounts.set_preferences(user_id, wanted)

    async def unsubscribe(self, token: str | None) -> UnsubscribeRequest:
        return await self.accounts.unsubscribe(token)

    async def erasure_state(self, user_id: uuid.UUID) -> ErasureState:
        return await self.accounts.erasure_state(user_id)

    def export(self, user_id: uuid.UUID) -> AsyncIterator[ExportItem]:
        return self.accounts.export(user_id)

    # --- sending --------------------------------------------------------------------------

    async def deliver(
        self, email: NewEmail, *, final_attempt: bool = False, send_by: float | None = None
    ) -> EmailStatus:
        """Send ``email`` at most once (:meth:`.sending.Sender.deliver`)."""
        return await self.sender.deliver(email, final_attempt=final_attempt, send_by=send_by)
