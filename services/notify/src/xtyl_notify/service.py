"""What the notify service does, whatever runs it: :class:`NotifyService`, the one class the
worker's stream handlers and the routes call, and :func:`open_service`, which builds it and its
adapters (the app's lifespan and the worker's start-up both open it).

Sending one email (:meth:`NotifyService.deliver`), safe under at-least-once delivery:

1. log it under its dedupe key (``queued``), or find the row logged by an earlier copy of the
   event: a final row (sent, failed, suppressed) ends here;
2. claim the row (a lease of ``lease_s``): a copy of the event being sent elsewhere right now
   makes this one retry later (:class:`EmailInFlight`), and then find it final;
3. a suppressed or malformed address finishes it as ``suppressed`` / ``failed`` without a call;
4. Brevo: sent -> ``sent``; refused (4xx) -> ``failed`` and :class:`BrevoRejected` raised (a
   ``ClientError``: the consumer dead-letters the event at once); unavailable (408, 429, 5xx,
   timeouts) -> the row is ``retrying`` and :class:`BrevoUnavailable` raised (an
   ``Unavailable``), or, on the final attempt (``final_attempt``), ``failed`` ("gave up after N
   attempts; ...") and still raised.

The database failing (``Unavailable``) raises from any step. Brevo's ``idempotencyKey`` (the
row id) covers the one gap left: a worker that died after Brevo accepted the email and before
the row said so.

Every attempt's outcome is counted by kind (``xtyl_notify_emails_total``: sent, failed, retry,
suppressed, duplicate, skipped; a copy that finds another sending the email right now is not
counted, its retry is), and every newly suppressed address by reason
(``xtyl_notify_suppressions_total``).

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
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager

import structlog

from xtyl_common.db import DatabaseConfig, create_pool
from xtyl_common.errors import Unavailable
from xtyl_common.events import DocumentFailed, DocumentIndexed, UserCreated
from xtyl_common.health import HealthCheck
from xtyl_common.http import HttpConfig, create_session
from xtyl_common.pagination import Page, keyset_page
from xtyl_common.retry import RetryPolicy
from xtyl_notify.adapters.brevo import BrevoClient, BrevoRejected, BrevoUnavailable
from xtyl_notify.adapters.metrics import EMAIL_OUTCOMES, EMAILS, SUPPRESSIONS, EmailOutcome
from xtyl_notify.adapters.postgres import NotifyRepository
from xtyl_notify.domain.addresses import (
    Mailbox,
    display_name,
    is_valid_email,
    suppression_key,
)
from xtyl_notify.domain.auth_emails import SendEmailHook, new_emails
from xtyl_notify.domain.emails import (
    EmailKind,
    EmailRecord,
    EmailStatus,
    NewEmail,
    Recipient,
    RenderedEmail,
    dedupe_key,
)
from xtyl_notify.domain.templates import (
    document_failed_email,
    document_ready_email,
    welcome_email,
)
from xtyl_notify.domain.webhooks import SUPPRESSING_EVENTS, BrevoWebhookEvent, suppressions_from
from xtyl_notify.settings import NotifySettings

log = structlog.stdlib.get_logger("xtyl.notify")

#: How long one send attempt holds its email beyond Brevo's timeout (the row updates).
LEASE_MARGIN_S = 10.0
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


class EmailInFlight(Unavailable):
    """Another copy of the event is sending this email right now; retry to see the outcome."""

    default_code = "email_in_flight"


class EmailNotSentInTime(Unavailable):
    """The hook's emails could not be sent within its time, though Brevo was tried again here:
    the emails still open are ``failed``. (A new call of the hook would be new emails.)"""

    default_code = "email_unavailable"


class NotifyService:
    def __init__(
        self,
        repository: NotifyRepository,
        brevo: BrevoClient,
        *,
        app_url: str,
        lease_s: float,
        auth_templates: Mapping[str, int] | None = None,
        readiness: Mapping[str, HealthCheck] | None = None,
    ) -> None:
        self.repository = repository
        self.brevo = brevo
        self.app_url = app_url
        self.lease_s = lease_s
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

    # --- events ---------------------------------------------------------------------------

    async def on_user_created(
        self, event: UserCreated, *, final_attempt: bool = False
    ) -> EmailStatus | None:
        """Remember where the user's email goes, then send the welcome email."""
        payload = event.payload
        if not payload.email:
            log.info("email_skipped", kind="welcome", reason="user has no email address")
            count(EmailKind.WELCOME, "skipped")
            return None
        recipient = Recipient(
            user_id=payload.user_id,
            email=payload.email.strip(),
            full_name=display_name(payload.full_name),
        )
        await self.repository.save_recipient(recipient)
        email = NewEmail(
            kind=EmailKind.WELCOME,
            dedupe_key=dedupe_key(event.type, payload.user_id),
            user_id=payload.user_id,
            to_address=recipient.email,
            to_name=recipient.full_name,
            content=welcome_email(full_name=recipient.full_name, app_url=self.app_url),
        )
        return await self.deliver(email, final_attempt=final_attempt)

    async def on_document_indexed(
        self, event: DocumentIndexed, *, final_attempt: bool = False
    ) -> EmailStatus | None:
        payload = event.payload
        recipient = await self._recipient_of(event.type, payload.owner_id, EmailKind.DOCUMENT_READY)
        if recipient is None:
            return None
        content = document_ready_email(
            full_name=recipient.full_name,
            title=payload.title,
            document_id=payload.document_id,
            app_url=self.app_url,
        )
        return await self.deliver(
            self._new(
                EmailKind.DOCUMENT_READY, event.type, payload.document_id, recipient, content
            ),
            final_attempt=final_attempt,
        )

    async def on_document_failed(
        self, event: DocumentFailed, *, final_attempt: bool = False
    ) -> EmailStatus | None:
        payload = event.payload
        recipient = await self._recipient_of(
            event.type, payload.owner_id, EmailKind.DOCUMENT_FAILED
        )
        if recipient is None:
            return None
        content = document_failed_email(
            full_name=recipient.full_name,
            reason=payload.reason,
            document_id=payload.document_id,
            app_url=self.app_url,
        )
        return await self.deliver(
            self._new(
                EmailKind.DOCUMENT_FAILED, event.type, payload.document_id, recipient, content
            ),
            final_attempt=final_attempt,
        )

    async def _recipient_of(
        self, event_type: str, user_id: uuid.UUID, kind: EmailKind
    ) -> Recipient | None:
        recipient = await self.repository.recipient(user_id)
        if recipient is None:
            log.info(
                "email_skipped",
                event_type=event_type,
                user_id=str(user_id),
                reason="unknown recipient (no user.created seen for this user)",
            )
            count(kind, "skipped")
        return recipient

    @staticmethod
    def _new(
        kind: EmailKind,
        event_type: str,
        entity_id: uuid.UUID,
        recipient: Recipient,
        content: RenderedEmail,
    ) -> NewEmail:
        return NewEmail(
            kind=kind,
            dedupe_key=dedupe_key(event_type, entity_id),
            user_id=recipient.user_id,
            to_address=recipient.email,
            to_name=recipient.full_name,
            content=content,
        )

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
        never written to again; how many were new."""
        suppressions = suppressions_from(list(events))
        added = await self.repository.add_suppressions(suppressions, source=SUPPRESSION_SOURCE)
        reasons = {s.address: s.reason for s in suppressions}
        for address in added:
            SUPPRESSIONS.labels(reasons[address]).inc()
        if suppressions:
            log.info(
                "suppressions_added",
                added=len(added),
                reasons=sorted({s.reason for s in suppressions}),
            )
        return len(added)

    # --- sending --------------------------------------------------------------------------

    async def deliver(
        self, email: NewEmail, *, final_attempt: bool = False, send_by: float | None = None
    ) -> EmailStatus:
        """Send ``email`` at most once (see the module docstring); its final status, or raise:
        to be retried (:class:`BrevoUnavailable`, :class:`EmailInFlight`, the database
        ``Unavailable``) or because Brevo refused it (:class:`BrevoRejected`). ``send_by``
        (the event loop's clock): Brevo must have answered by then."""
        repo = self.repository
        record = await repo.log_email(email)
        if record.is_final:
            log.info("email_duplicate", email_id=str(record.id), status=record.status.value)
            count(email.kind, "duplicate")
            return record.status
        claimed = await repo.claim(record.id, lease_s=self.lease_s)
        if claimed is None:
            current = await repo.get(record.id)
            if current is not None and current.is_final:
                count(email.kind, "duplicate")
                return current.status
            raise EmailInFlight(f"email {record.id} is being sent by another worker")
        return await self._send(claimed, email, final_attempt=final_attempt, send_by=send_by)

    async def _send(
        self,
        claimed: EmailRecord,
        email: NewEmail,
        *,
        final_attempt: bool,
        send_by: float | None,
    ) -> EmailStatus:
        """Steps 3 and 4 for a claimed row."""
        repo = self.repository
        bound = log.bind(
            email_id=str(claimed.id), kind=claimed.kind.value, attempt=claimed.attempts
        )
        reason = await repo.suppression_reason(suppression_key(claimed.to_address))
        if reason is not None:
            await repo.mark_suppressed(claimed.id, reason)
            bound.info("email_suppressed", reason=reason)
            count(claimed.kind, "suppressed")
            return EmailStatus.SUPPRESSED
        if not is_valid_email(claimed.to_address):
            await repo.mark_failed(claimed.id, "invalid_address: not a deliverable address")
            bound.warning("email_failed", code="invalid_address")
            count(claimed.kind, "failed")
            return EmailStatus.FAILED
        try:
            message_id = await self._call_brevo(claimed, email, send_by)
        except BrevoRejected as exc:
            await repo.mark_failed(claimed.id, f"{exc.code}: {exc.message}")
            bound.warning("email_failed", code=exc.code, status=exc.upstream_status)
            count(claimed.kind, "failed")
            raise
        except BrevoUnavailable as exc:
            error = f"{exc.code}: {exc.message}"
            if final_attempt:
                await repo.give_up([claimed.dedupe_key], error)
                bound.warning(
                    "email_failed", code=exc.code, status=exc.upstream_status, gave_up=True
                )
                count(claimed.kind, "failed")
                raise
            await repo.release(claimed.id, error)
            bound.info(
                "email_retry",
                code=exc.code,
                status=exc.upstream_status,
                retry_after_s=exc.retry_after_s,
            )
            count(claimed.kind, "retry")
            raise
        await repo.mark_sent(claimed.id, message_id)
        bound.info("email_sent", brevo_message_id=message_id)
        count(claimed.kind, "sent")
        return EmailStatus.SENT

    async def _call_brevo(
        self, claimed: EmailRecord, email: NewEmail, send_by: float | None
    ) -> str:
        timeout_s = None
        if send_by is not None:
            timeout_s = send_by - asyncio.get_running_loop().time()
            if timeout_s <= 0:
                raise BrevoUnavailable("timeout", "no time left to call Brevo")
        template = email.template
        return await self.brevo.send(
            email_id=claimed.id,
            to=Mailbox(email=claimed.to_address, name=email.to_name),
            subject=claimed.subject,
            html=claimed.html_body,
            text=claimed.text_body,
            tags=claimed.tags,
            template_id=None if template is None else template.id,
            params=None if template is None else template.params,
            timeout_s=timeout_s,
        )


def count(kind: EmailKind, outcome: EmailOutcome) -> None:
    """One email's attempt ended with ``outcome`` (``xtyl_notify_emails_total``)."""
    EMAILS.labels(kind.value, outcome).inc()


@asynccontextmanager
async def open_service(settings: NotifySettings) -> AsyncGenerator[NotifyService]:
    """The service and its adapters (a Postgres pool, Brevo's HTTP session), closed on exit:
    the one place that wires notify, for the app's lifespan and the worker's start-up."""
    async with AsyncExitStack() as stack:
        pool = await create_pool(
            DatabaseConfig(url=settings.database_url, max_size=settings.db_pool_max)
        )
        stack.push_async_callback(pool.close)
        session = create_session(
            HttpConfig(
                connect_timeout_s=settings.brevo_connect_timeout_s,
                total_timeout_s=settings.brevo_timeout_s,
                read_timeout_s=settings.brevo_timeout_s,
            )
        )
        stack.push_async_callback(session.close)
        brevo = BrevoClient(
            session,
            base_url=settings.brevo_api_url,
            api_key=settings.api_key,
            sender=settings.sender,
            timeout_s=settings.brevo_timeout_s,
            connect_timeout_s=settings.brevo_connect_timeout_s,
        )
        repository = NotifyRepository(pool)
        yield NotifyService(
            repository,
            brevo,
            app_url=settings.frontend_url,
            lease_s=settings.brevo_timeout_s + LEASE_MARGIN_S,
            auth_templates=settings.auth_templates,
            readiness={"postgres": repository.check},
        )
