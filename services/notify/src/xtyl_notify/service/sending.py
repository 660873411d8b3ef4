"""Sending one email (:meth:`Sender.deliver`), safe under at-least-once delivery:

1. log it under its dedupe key (``queued``), or find the row logged by an earlier copy of the
   event: a final row (sent, failed, suppressed, cancelled) ends here;
2. claim the row (a lease of ``lease_s``): a copy of the event being sent elsewhere right now
   makes this one retry later (:class:`EmailInFlight`), and then find it final. The claim
   takes only a row still open (queued or retrying) whose lease is free: an email cancelled
   by its user's erasure is never taken again, and the erasure leaves an email that a worker
   holds to finish first (it waits for the lease), so nothing of a deleted user leaves after
   the erasure began;
3. a suppressed or malformed address finishes it as ``suppressed`` / ``failed`` without a call
   (suppressions are looked up by the address's hash, and by the lower-cased address of rows
   written before hashes);
4. Brevo: sent -> ``sent``; refused (4xx) -> ``failed`` and :class:`BrevoRejected` raised (a
   ``ClientError``: the consumer dead-letters the event at once); unavailable (408, 429, 5xx,
   timeouts) -> the row is ``retrying`` and :class:`BrevoUnavailable` raised (an
   ``Unavailable``), or, on the final attempt (``final_attempt``), ``failed`` ("gave up after N
   attempts; ...") and still raised.

The database failing (``Unavailable``) raises from any step. Brevo's ``idempotencyKey`` (the
row id) covers the one gap left: a worker that died after Brevo accepted the email and before
the row said so. A user's write racing their erasure is refused at step 1
(:class:`~xtyl_common.erasure.AccountDeleted`).

Every attempt's outcome is counted by kind (``xtyl_notify_emails_total``: sent, failed, retry,
suppressed, duplicate, skipped; a copy that finds another sending the email right now is not
counted, its retry is).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from xtyl_common.errors import Unavailable
from xtyl_notify.adapters.brevo import BrevoClient, BrevoRejected, BrevoUnavailable
from xtyl_notify.adapters.metrics import EMAILS, EmailOutcome
from xtyl_notify.adapters.postgres import NotifyRepository
from xtyl_notify.domain.addresses import AddressHasher, Mailbox, is_valid_email
from xtyl_notify.domain.emails import (
    BrevoTemplate,
    EmailKind,
    EmailRecord,
    EmailStatus,
    NewEmail,
)

log = structlog.stdlib.get_logger("xtyl.notify")

#: How long after a failed digest its next attempt is due, from Brevo's error.
RetryDelay = Callable[[EmailRecord, BrevoUnavailable], float]


class EmailInFlight(Unavailable):
    """Another copy of the event is sending this email right now; retry to see the outcome."""

    default_code = "email_in_flight"


def count(kind: EmailKind, outcome: EmailOutcome) -> None:
    """One email's attempt ended with ``outcome`` (``xtyl_notify_emails_total``)."""
    EMAILS.labels(kind.value, outcome).inc()


class Sender:
    """The send path every email takes, whoever asked for it."""

    def __init__(
        self,
        repository: NotifyRepository,
        brevo: BrevoClient,
        *,
        lease_s: float,
        addresses: AddressHasher,
    ) -> None:
        self.repository = repository
        self.brevo = brevo
        self.lease_s = lease_s
        self.addresses = addresses

    async def deliver(
        self, email: NewEmail, *, final_attempt: bool = False, send_by: float | None = None
    ) -> EmailStatus:
        """Send ``email`` at most once (see the module docstring); its final status, or raise:
        to be retried (:class:`BrevoUnavailable`, :class:`EmailInFlight`, the database
        ``Unavailable``) or because Brevo refused it (:class:`BrevoRejected`). ``send_by``
        (the event loop's clock): Brevo must have answered by then."""
        record = await self.repository.log_email(email)
        if record.is_final:
            log.info("email_duplicate", email_id=str(record.id), status=record.status.value)
            count(email.kind, "duplicate")
            return record.status
        return await self.send_logged(
            record, template=email.template, final_attempt=final_attempt, send_by=send_by
        )

    async def send_logged(
        self,
        record: EmailRecord,
        *,
        template: BrevoTemplate | None = None,
        final_attempt: bool = False,
        send_by: float | None = None,
        retry_delay: RetryDelay | None = None,
    ) -> EmailStatus:
        """Steps 2 to 4 for a logged email. ``retry_delay``: when its next attempt is due
        after Brevo was unavailable (for emails that no stream entry retries)."""
        repo = self.repository
        claimed = await repo.claim(record.id, lease_s=self.lease_s)
        if claimed is None:
            current = await repo.get(record.id)
            if current is not None and current.is_final:
                outcome: EmailOutcome = (
                    "skipped" if current.status is EmailStatus.CANCELLED else "duplicate"
                )
                count(record.kind, outcome)
                return current.status
            raise EmailInFlight(f"email {record.id} is being sent by another worker")
        return await self._send(
            claimed,
            template,
            final_attempt=final_attempt,
            send_by=send_by,
            retry_delay=retry_delay,
        )

    async def _send(
        self,
        claimed: EmailRecord,
        template: BrevoTemplate | None,
        *,
        final_attempt: bool,
        send_by: float | None,
        retry_delay: RetryDelay | None,
    ) -> EmailStatus:
        """Steps 3 and 4 for a claimed row."""
        repo = self.repository
        bound = log.bind(
            email_id=str(claimed.id), kind=claimed.kind.value, attempt=claimed.attempts
        )
        reason = await repo.suppression_reason(self.addresses.suppression_keys(claimed.to_address))
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
            message_id = await self._call_brevo(claimed, template, send_by)
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
            delay_s = None if retry_delay is None else retry_delay(claimed, exc)
            await repo.release(claimed.id, error, next_attempt_in_s=delay_s)
            bound.info(
                "email_retry",
                code=exc.code,
                status=exc.upstream_status,
                retry_after_s=exc.retry_after_s,
                retry_in_s=None if delay_s is None else round(delay_s, 3),
            )
            count(claimed.kind, "retry")
            raise
        await repo.mark_sent(claimed.id, message_id)
        bound.info("email_sent", brevo_message_id=message_id)
        count(claimed.kind, "sent")
        return EmailStatus.SENT

    async def _call_brevo(
        self, claimed: EmailRecord, template: BrevoTemplate | None, send_by: float | None
    ) -> str:
        timeout_s = None
        if send_by is not None:
            timeout_s = send_by - asyncio.get_running_loop().time()
            if timeout_s <= 0:
                raise BrevoUnavailable("timeout", "no time left to call Brevo")
        return await self.brevo.send(
            email_id=claimed.id,
            to=Mailbox(email=claimed.to_address, name=claimed.to_name),
            subject=claimed.subject,
            html=claimed.html_body,
            text=claimed.text_body,
            tags=claimed.tags,
            headers=claimed.headers,
            template_id=None if template is None else template.id,
            params=None if template is None else template.params,
            timeout_s=timeout_s,
        )
