"""Document emails, coalesced: at most one per ``DOCUMENT_EMAIL_WINDOW_S`` per user.

The first ``document.indexed`` / ``document.failed`` of a user with no document email in the
last window is sent at once, as its own email ("Your document is ready: ..."): the answer to
"is my upload done?" should not wait, and a batch's documents finish over minutes, so a short
gather delay would rarely catch more than the first one anyway. It opens the user's window;
every later event within it waits (a pending notice), and when the window ends the worker
sends them all as ONE digest listing every document, ready and failed, which opens the next
window. 317 events in a minute are so two emails: the first one, and the digest.

Only the kinds the user wants are sent or listed (checked when the event comes and again when
the digest is made); with both kinds off there is no digest at all. Every document email
carries a signed RFC 8058 ``List-Unsubscribe`` link (and the same link in its footer) that
turns off the kinds it tells about.

Who retries what: the first email is the stream entry's, exactly as every event email (Brevo
unavailable: ``retrying`` and the entry retried until the retry horizon, then ``failed`` and
dead-lettered; refused: ``failed`` and dead-lettered at once). A digest has no stream entry:
the worker's digest loop (:class:`DigestLoop`) sends it and tries it again on the same terms
(after Brevo's rate-limit reset or with backoff, ``EVENTS_RETRY_*``, until the horizon after
its first failure; the attempt past the horizon is the last, then ``failed``; a Brevo refusal
fails it at once and logs ``email_failed``, as a dead letter would). A digest is one email
row whose dedupe key (``document.digest:<user>:<due time>``) is written in the transaction
that marks its notices told, so no later pass can make it twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from datetime import UTC, datetime

import structlog

from xtyl_common.erasure import AccountDeleted
from xtyl_common.errors import DependencyError, Unavailable
from xtyl_common.events import DocumentFailed, DocumentIndexed
from xtyl_common.events.retries import RetryPolicy
from xtyl_common.supervise import Backoff, LoopHealth, LoopState, log_failure
from xtyl_notify.adapters.brevo import BrevoRejected, BrevoUnavailable
from xtyl_notify.adapters.documents import (
    DigestInput,
    DocumentNotice,
    DocumentNoticeRepository,
    Outcome,
)
from xtyl_notify.domain.emails import (
    DocumentKind,
    EmailKind,
    EmailRecord,
    EmailStatus,
    NewEmail,
    Recipient,
    RenderedEmail,
    dedupe_key,
)
from xtyl_notify.domain.preferences import UnsubscribeLinks
from xtyl_notify.domain.templates import (
    DigestItem,
    document_digest_email,
    document_failed_email,
    document_ready_email,
)
from xtyl_notify.service.sending import EmailInFlight, Sender, count

log = structlog.stdlib.get_logger("xtyl.notify.documents")

#: Open digests (due for a try) looked at per pass.
OPEN_DIGESTS_PER_PASS = 50
#: How often the digest loop forgets old notices and windows.
PRUNE_EVERY_S = 3600.0


class DocumentMails:
    def __init__(
        self,
        notices: DocumentNoticeRepository,
        sender: Sender,
        links: UnsubscribeLinks,
        *,
        app_url: str,
        window_s: float,
        retry: RetryPolicy,
    ) -> None:
        self.notices = notices
        self.sender = sender
        self.links = links
        self.app_url = app_url
        self.window_s = window_s
        self.retry = retry

    # --- events ---------------------------------------------------------------------------

    async def on_indexed(
        self, event: DocumentIndexed, *, final_attempt: bool = False
    ) -> EmailStatus | None:
        payload = event.payload
        notice = DocumentNotice(
            user_id=payload.owner_id,
            document_id=payload.document_id,
            kind="document_ready",
            occurred_at=event.occurred_at,
            title=payload.title,
        )
        return await self._on_notice(notice, event.type, final_attempt=final_attempt)

    async def on_failed(
        self, event: DocumentFailed, *, final_attempt: bool = False
    ) -> EmailStatus | None:
        payload = event.payload
        notice = DocumentNotice(
            user_id=payload.owner_id,
            document_id=payload.document_id,
            kind="document_failed",
            occurred_at=event.occurred_at,
            reason=payload.reason,
        )
        return await self._on_notice(notice, event.type, final_attempt=final_attempt)

    async def _on_notice(
        self, notice: DocumentNotice, event_type: str, *, final_attempt: bool
    ) -> EmailStatus | None:
        kind = EmailKind(notice.kind)
        key = dedupe_key(event_type, notice.document_id)
        decision = await self.notices.record(notice, email_key=key, window_s=self.window_s)
        bound = log.bind(
            event_type=event_type,
            user_id=str(notice.user_id),
            document_id=str(notice.document_id),
        )
        outcome = decision.outcome
        if outcome is Outcome.PENDING:
            bound.info("email_coalesced")
            return None
        if outcome is Outcome.SEEN and decision.email_key != key:
            count(kind, "duplicate")  # waits for, or was told by, a digest
            return None
        recipient = decision.recipient
        if outcome in (Outcome.SEND_NOW, Outcome.SEEN) and recipient is not None:
            try:
                return await self.sender.deliver(
                    self._single(notice, key, recipient), final_attempt=final_attempt
                )
            except AccountDeleted:
                outcome = Outcome.ERASED
        reasons = {
            Outcome.ERASED: "the account was deleted",
            Outcome.KIND_OFF: "the user turned this kind of email off",
            Outcome.NO_RECIPIENT: "unknown recipient (no user.created seen, or no address)",
        }
        bound.info("email_skipped", reason=reasons.get(outcome, "no recipient"))
        count(kind, "skipped")
        return None

    def _single(self, notice: DocumentNotice, key: str, recipient: Recipient) -> NewEmail:
        """The first email of a window: about one document."""
        assert recipient.email is not None
        url = self.links.url(notice.user_id, [notice.kind])
        content: RenderedEmail
        if notice.kind == "document_ready":
            content = document_ready_email(
                full_name=recipient.full_name,
                title=notice.title,
                document_id=notice.document_id,
                app_url=self.app_url,
                unsubscribe_url=url,
            )
        else:
            content = document_failed_email(
                full_name=recipient.full_name,
                reason=notice.reason or "",
                document_id=notice.document_id,
                app_url=self.app_url,
                unsubscribe_url=url,
            )
        return NewEmail(
            kind=EmailKind(notice.kind),
            dedupe_key=key,
            user_id=notice.user_id,
            to_address=recipient.email,
            to_name=recipient.full_name,
            content=content,
            headers=self.links.headers(notice.user_id, [notice.kind]),
        )

    # --- digests --------------------------------------------------------------------------

    def _digest(self, due: DigestInput) -> NewEmail:
        recipient = due.recipient
        assert recipient.email is not None
        kinds: list[DocumentKind] = sorted({notice.kind for notice in due.notices})
        items = [
            DigestItem(
                document_id=notice.document_id,
                ready=notice.kind == "document_ready",
                title=notice.title,
                reason=notice.reason,
            )
            for notice in due.notices
        ]
        return NewEmail(
            kind=EmailKind.DOCUMENT_DIGEST,
            dedupe_key=due.dedupe_key,
            user_id=recipient.user_id,
            to_address=recipient.email,
            to_name=recipient.full_name,
            content=document_digest_email(
                full_name=recipient.full_name,
                items=items,
                app_url=self.app_url,
                unsubscribe_url=self.links.url(recipient.user_id, kinds),
            ),
            headers=self.links.headers(recipient.user_id, kinds),
        )

    async def send_due(self, progressed: LoopHealth | None = None) -> int:
        """One pass of the digest loop: every window due becomes its digest, sent now; then
        digests waiting for another try (or left by a worker that died) are tried again.
        Digests sent. The database failing raises (the loop backs off)."""
        sent = 0
        while (taken := await self.notices.take_due_digest(self._digest)) is not None:
            if taken.email is None:
                log.info("digest_skipped", user_id=str(taken.user_id))
                continue
            sent += await self._send_digest(taken.email)
            if progressed is not None:
                progressed.progressed()
        for email_id in await self.sender.repository.open_digests(limit=OPEN_DIGESTS_PER_PASS):
            record = await self.sender.repository.get(email_id)
            if record is not None and not record.is_final:
                sent += await self._send_digest(record)
        return sent

    async def _send_digest(self, record: EmailRecord) -> int:
        try:
            status = await self.sender.send_logged(
                record, final_attempt=self._is_final(record), retry_delay=self._retry_delay
            )
        except (BrevoUnavailable, BrevoRejected, EmailInFlight):
            return 0  # logged and recorded on the row; a refusal is final, as a dead letter
        return int(status is EmailStatus.SENT)

    def _is_final(self, record: EmailRecord) -> bool:
        """The digest's retry horizon (from its first failure) has passed: this try is the
        last."""
        first = record.first_failed_at
        return first is not None and (datetime.now(UTC) - first).total_seconds() >= (
            self.retry.horizon_s
        )

    def _retry_delay(self, record: EmailRecord, exc: BrevoUnavailable) -> float:
        """Brevo's rate-limit reset when it gave one, else backoff by attempts; never past
        the horizon (one last attempt there), unless Brevo asked for longer."""
        asked = exc.retry_after_s
        if asked is not None:
            delay = asked * (1 + 0.1 * random.random())  # noqa: S311 - not a secret
        else:
            delay = self.retry.backoff_s(max(record.attempts, 1))
        first = record.first_failed_at or datetime.now(UTC)
        left = self.retry.horizon_s - (datetime.now(UTC) - first).total_seconds()
        if delay > left:
            delay = max(left, asked or 0.0, 0.0)
        return delay


class DigestLoop:
    """The notify worker's digest sender: :meth:`DocumentMails.send_due` every
    ``interval_s``, supervised (a failed pass is logged and backed off, never the end), and
    the old notices pruned every hour. Safe with any number of workers (row locks, skip
    locked); what it does lives in Postgres, so a restart loses nothing."""

    def __init__(self, documents: DocumentMails, *, interval_s: float) -> None:
        self.documents = documents
        self.interval_s = interval_s
        self.health = LoopHealth("digest sender", stale_after_s=10 * interval_s + 300)
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> asyncio.Task[None]:
        self._stopping.clear()
        self._task = asyncio.create_task(self.run(), name="digest-sender")
        self.health.watch(self._task)
        return self._task

    async def stop(self, timeout_s: float = 15.0) -> None:
        self._stopping.set()
        task, self._task = self._task, None
        if task is None:
            return
        done, _ = await asyncio.wait([task], timeout=timeout_s)
        if not done:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def run(self) -> None:
        backoff = Backoff(min(self.interval_s, 1.0), 30.0)
        next_prune = asyncio.get_running_loop().time()
        log.info("digest_sender_started", interval_s=self.interval_s)
        while not self._stopping.is_set():
            try:
                sent = await self.documents.send_due(self.health)
                if asyncio.get_running_loop().time() >= next_prune:
                    next_prune = asyncio.get_running_loop().time() + PRUNE_EVERY_S
                    pruned = await self.documents.notices.prune(window_s=self.documents.window_s)
                    if pruned:
                        log.info("document_notices_pruned", count=pruned)
            except Exception as exc:
                delay = backoff.next_delay()
                self.health.failed(exc)
                log_failure(
                    log,
                    "digest_sender_failed",
                    exc,
                    expected=(DependencyError, OSError, TimeoutError),
                    retry_in_s=round(delay, 2),
                )
                await self._pause(delay)
                continue
            self.health.passed()
            backoff.reset()
            if sent:
                log.info("digests_sent", count=sent)
            await self._pause(self.interval_s)
        log.info("digest_sender_stopped")

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

    def states(self) -> list[LoopState]:
        return [self.health.state()]

    async def check_health(self) -> None:
        """``/readyz`` of the worker: the loop runs and its passes succeed."""
        problem = self.health.problem()
        if problem is not None:
            raise Unavailable(problem, code="digest_sender_down")
