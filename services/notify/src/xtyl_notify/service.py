"""What the notify service does with each event, whatever runs it: the use cases behind the
worker's handlers.

Sending one email (:meth:`Notifier.deliver`), safe under at-least-once delivery:

1. log it under its dedupe key (``queued``), or find the row logged by an earlier copy of the
   event: a final row (sent, failed, suppressed) ends here;
2. claim the row (a lease of ``lease_s``): a copy of the event being sent elsewhere right now
   makes this one retry later (:class:`EmailInFlight`), and then find it final;
3. a suppressed or malformed address finishes it as ``suppressed`` / ``failed`` without a call;
4. Brevo: sent -> ``sent``; refused (4xx) -> ``failed`` and :class:`BrevoRejected` raised (a
   ``ClientError``: the consumer dead-letters the event at once); unavailable (408, 429, 5xx,
   timeouts) -> the row is ``retrying`` and :class:`BrevoUnavailable` raised (an
   ``Unavailable``: the consumer retries the event with backoff, after Brevo's rate-limit reset
   when it gave one, up to its retry horizon). On the final attempt (``final_attempt``, past
   the horizon) it is ``failed`` ("gave up after N attempts; ...") and still raised, so the
   event is dead-lettered.

The database failing (``Unavailable``) raises from any step and is retried the same way.

Brevo's ``idempotencyKey`` (the row id) covers the one gap left: a worker that died after
Brevo accepted the email and before the row said so.
"""

from __future__ import annotations

import uuid

import structlog

from xtyl_common.errors import Unavailable
from xtyl_common.events import DocumentFailed, DocumentIndexed, UserCreated
from xtyl_notify.adapters.brevo import BrevoClient, BrevoRejected, BrevoUnavailable
from xtyl_notify.adapters.postgres import NotifyRepository
from xtyl_notify.domain.addresses import (
    Mailbox,
    display_name,
    is_valid_email,
    suppression_key,
)
from xtyl_notify.domain.emails import (
    BrevoTemplate,
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

log = structlog.stdlib.get_logger("xtyl.notify")


class EmailInFlight(Unavailable):
    """Another copy of the event is sending this email right now; retry to see the outcome."""

    default_code = "email_in_flight"


class Notifier:
    def __init__(
        self,
        repository: NotifyRepository,
        brevo: BrevoClient,
        *,
        app_url: str,
        lease_s: float,
    ) -> None:
        self.repository = repository
        self.brevo = brevo
        self.app_url = app_url
        self.lease_s = lease_s

    # --- events ---------------------------------------------------------------------------

    async def on_user_created(
        self, event: UserCreated, *, final_attempt: bool = False
    ) -> EmailStatus | None:
        """Remember where the user's email goes, then send the welcome email."""
        payload = event.payload
        if not payload.email:
            log.info("email_skipped", kind="welcome", reason="user has no email address")
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
        recipient = await self._recipient_of(event.type, payload.owner_id)
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
        recipient = await self._recipient_of(event.type, payload.owner_id)
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

    async def _recipient_of(self, event_type: str, user_id: uuid.UUID) -> Recipient | None:
        recipient = await self.repository.recipient(user_id)
        if recipient is None:
            log.info(
                "email_skipped",
                event_type=event_type,
                user_id=str(user_id),
                reason="unknown recipient (no user.created seen for this user)",
            )
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

    # --- sending --------------------------------------------------------------------------

    async def deliver(self, email: NewEmail, *, final_attempt: bool = False) -> EmailStatus:
        """Send ``email`` at most once (see the module docstring); its final status, or raise:
        to be retried (:class:`BrevoUnavailable`, :class:`EmailInFlight`, the database
        ``Unavailable``) or because Brevo refused it (:class:`BrevoRejected`)."""
        repo = self.repository
        record = await repo.log_email(email)
        if record.is_final:
            log.info("email_duplicate", email_id=str(record.id), status=record.status.value)
            return record.status
        claimed = await repo.claim(record.id, lease_s=self.lease_s)
        if claimed is None:
            current = await repo.get(record.id)
            if current is not None and current.is_final:
                return current.status
            raise EmailInFlight(f"email {record.id} is being sent by another worker")
        return await self._send(
            claimed, email.to_name, final_attempt=final_attempt, template=email.template
        )

    async def _send(
        self,
        claimed: EmailRecord,
        to_name: str | None,
        *,
        final_attempt: bool,
        template: BrevoTemplate | None = None,
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
            return EmailStatus.SUPPRESSED
        if not is_valid_email(claimed.to_address):
            await repo.mark_failed(claimed.id, "invalid_address: not a deliverable address")
            bound.warning("email_failed", code="invalid_address")
            return EmailStatus.FAILED
        try:
            message_id = await self.brevo.send(
                email_id=claimed.id,
                to=Mailbox(email=claimed.to_address, name=to_name),
                subject=claimed.subject,
                html=claimed.html_body,
                text=claimed.text_body,
                tags=claimed.tags,
                template_id=None if template is None else template.id,
                params=None if template is None else template.params,
            )
        except BrevoRejected as exc:
            await repo.mark_failed(claimed.id, f"{exc.code}: {exc.message}")
            bound.warning("email_failed", code=exc.code, status=exc.upstream_status)
            raise
        except BrevoUnavailable as exc:
            error = f"{exc.code}: {exc.message}"
            if final_attempt:
                await repo.mark_failed(
                    claimed.id, f"gave up after {claimed.attempts} attempts; {error}"
                )
                bound.warning(
                    "email_failed", code=exc.code, status=exc.upstream_status, gave_up=True
                )
                raise
            await repo.release(claimed.id, error)
            bound.info(
                "email_retry",
                code=exc.code,
                status=exc.upstream_status,
                retry_after_s=exc.retry_after_s,
            )
            raise
        await repo.mark_sent(claimed.id, message_id)
        bound.info("email_sent", brevo_message_id=message_id)
        return EmailStatus.SENT
