"""A user's account in notify: preferences, one-click unsubscribe, erasure and export.

Erasure (``user.deleted``, GDPR Art. 17), :meth:`Accounts.erase_user`:

1. the ledger marks the user (``xtyl_notify.erasures``); from that commit on, every write path
   refuses them: no recipient from a late ``user.created`` or ``user.updated``, no new email,
   no preference;
2. the user's emails not sent yet are ``cancelled`` (final: no worker takes them again); an
   email a worker is sending right now is waited for (the erasure is retried once its lease
   ends: :class:`~xtyl_notify.service.sending.EmailInFlight`), so nothing leaves after this;
3. Brevo is asked to delete its logs of every address the user had
   (``DELETE /v3/smtp/log/<address>``: what was sent, with the stored previews), before the
   addresses become hashes here (a run cut short asks again: Brevo's deletion is idempotent).
   Brevo unavailable: the erasure is retried like a send (the stream's backoff, Brevo's
   reset); Brevo refusing (a bad key, an address it calls invalid) is logged as an error and
   counted in the ledger (``brevo_logs_refused``), and the erasure goes on: our own copy of the
   data never waits for a fixed key;
4. suppressions of the user's addresses still held as the address (rows from before hashes)
   become the address's hash: a bounced address stays suppressed if it signs up again;
5. the email log is made anonymous, in batches of ``ERASURE_BATCH_SIZE``: no user id, the
   address as its hash, subject, bodies, name, headers and errors cleared, the dedupe key
   (``user.created:<user id>``...) replaced. The rows stay, as the counts of what was sent;
6. the recipient, the preferences, the document notices and window are deleted;
7. the ledger records the totals. Each step is idempotent: a worker killed half-way finishes
   on redelivery; a redelivery after completion does nothing. Afterwards no row of
   ``xtyl_notify`` holds the user's id or address, but the ledger's own row.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import datetime

import structlog

from xtyl_common.erasure import ErasureState
from xtyl_common.pagination import Cursor
from xtyl_notify.adapters.accounts import AccountRepository
from xtyl_notify.adapters.brevo import BrevoClient, BrevoRejected, BrevoUnavailable
from xtyl_notify.adapters.postgres import NotifyRepository
from xtyl_notify.domain.addresses import AddressHasher, suppression_key
from xtyl_notify.domain.emails import EmailRecord, NoticeRecord, RecipientRecord
from xtyl_notify.domain.preferences import (
    Preferences,
    PreferencesRecord,
    UnsubscribeLinks,
    UnsubscribeRequest,
)
from xtyl_notify.service.sending import EmailInFlight

log = structlog.stdlib.get_logger("xtyl.notify.accounts")

#: Emails per page of the export (bodies included).
EXPORT_PAGE = 50
#: When an email of the user is being sent as the erasure starts, the erasure looks again
#: this soon (a send takes milliseconds; its lease, up to BREVO_TIMEOUT_S + 10 s, is only the
#: bound) and at the latest when the lease ends.
IN_FLIGHT_RECHECK_S = 1.0

ExportItem = RecipientRecord | PreferencesRecord | EmailRecord | NoticeRecord


class Accounts:
    def __init__(
        self,
        repository: AccountRepository,
        emails: NotifyRepository,
        links: UnsubscribeLinks,
        addresses: AddressHasher,
        brevo: BrevoClient,
        *,
        batch_size: int = 500,
        batch_pause_s: float = 0.0,
    ) -> None:
        self.repository = repository
        self.emails = emails
        self.links = links
        self.addresses = addresses
        self.brevo = brevo
        self.batch_size = batch_size
        self.batch_pause_s = batch_pause_s

    # --- preferences ----------------------------------------------------------------------

    async def preferences(self, user_id: uuid.UUID) -> Preferences:
        record = await self.repository.preferences(user_id)
        return Preferences(
            document_ready=record.document_ready, document_failed=record.document_failed
        )

    async def set_preferences(self, user_id: uuid.UUID, wanted: Preferences) -> Preferences:
        """``403 account_deleted`` for a deleted user."""
        stored = await self.repository.set_preferences(user_id, wanted)
        log.info(
            "preferences_changed",
            document_ready=stored.document_ready,
            document_failed=stored.document_failed,
        )
        return stored

    async def unsubscribe(self, token: str | None) -> UnsubscribeRequest:
        """A one-click unsubscribe: the link's kinds turned off for its user (again: nothing
        changes). ``400 unsubscribe_link_invalid`` for a link notify did not sign, and then
        nothing changes."""
        request = self.links.verify(token)
        live = await self.repository.turn_off(request.user_id, request.kinds)
        log.info(
            "unsubscribed",
            user_id=str(request.user_id),
            kinds=list(request.kinds),
            account_deleted=not live,
        )
        return request

    # --- erasure --------------------------------------------------------------------------

    async def erasure_state(self, user_id: uuid.UUID) -> ErasureState:
        return await self.repository.erasure_state(user_id)

    async def erase_user(self, user_id: uuid.UUID, *, requested_at: datetime) -> None:
        """Erase what notify holds for the user (see the module docstring)."""
        repo = self.repository
        bound = log.bind(user_id=str(user_id))
        if not await repo.begin_erasure(user_id, requested_at=requested_at):
            bound.info("erasure_skipped", reason="already erased")
            return
        bound.info("erasure_started")
        cancelled, in_flight_s = await repo.cancel_open_emails(user_id)
        if in_flight_s is not None:
            bound.info("erasure_waits", reason="an email is being sent", wait_s=in_flight_s)
            raise EmailInFlight(
                "an email of the user is being sent; the erasure goes on once it is done",
                retry_after_s=max(0.1, min(in_flight_s, IN_FLIGHT_RECHECK_S)),
            )
        addresses = await repo.addresses_of(user_id)
        deleted, refused = await self._forget_at_brevo(addresses, bound)
        await repo.record_brevo_logs(user_id, deleted=deleted, refused=refused)
        hashed = await repo.hash_suppressions(
            user_id,
            {suppression_key(a): self.addresses.hash(a) for a in addresses},
        )
        anonymised = 0
        while n := await repo.anonymise_emails(
            user_id, self.addresses.hash, batch_size=self.batch_size
        ):
            anonymised += n
            if self.batch_pause_s:
                await asyncio.sleep(self.batch_pause_s)
        await repo.delete_user_rows(user_id)
        totals = await repo.complete_erasure(user_id)
        bound.info(
            "erasure_completed",
            cancelled=cancelled,
            anonymised=anonymised,
            suppressions_hashed=hashed,
            **{
                k: v
                for k, v in totals.items()
                if k in ("recipients", "document_notices", "brevo_logs_deleted")
            },
        )
        if totals["brevo_logs_refused"]:
            bound.error(
                "erasure_incomplete_at_brevo",
                refused=totals["brevo_logs_refused"],
                hint="delete these logs in Brevo's console (Transactional > Logs)",
            )

    async def _forget_at_brevo(
        self, addresses: set[str], bound: structlog.stdlib.BoundLogger
    ) -> tuple[int, int]:
        """Ask Brevo to delete its logs of each address: how many it took and refused.
        :class:`BrevoUnavailable` (the erasure is retried) when Brevo cannot answer now."""
        deleted = refused = 0
        for address in sorted(addresses):
            try:
                await self.brevo.delete_logs(address)
            except BrevoUnavailable as exc:
                bound.warning("erasure_waits", reason="brevo unavailable", code=exc.code)
                raise
            except BrevoRejected as exc:  # the address is not logged: it is what goes
                bound.error("brevo_log_deletion_refused", code=exc.code, status=exc.upstream_status)
                refused += 1
            else:
                deleted += 1
        return deleted, refused

    # --- export ---------------------------------------------------------------------------

    async def export(self, user_id: uuid.UUID) -> AsyncIterator[ExportItem]:
        """Everything notify holds about the user: the recipient (if any), the preferences,
        every email, newest first, then the document notices kept for their document emails,
        a page at a time (memory stays flat)."""
        recipient = await self.repository.recipient_record(user_id)
        if recipient is not None:
            yield recipient
        yield await self.repository.preferences(user_id)
        after: Cursor | None = None
        while True:
            page = await self.emails.list_for_user(user_id, limit=EXPORT_PAGE, after=after)
            for email in page:
                yield email
            if len(page) < EXPORT_PAGE:
                break
            last = page[-1]
            after = Cursor(created_at=last.created_at, id=last.id)
        notices_after: tuple[uuid.UUID, str] | None = None
        while True:
            notices = await self.repository.notices(user_id, limit=EXPORT_PAGE, after=notices_after)
            for notice in notices:
                yield notice
            if len(notices) < EXPORT_PAGE:
                return
            notices_after = (notices[-1].document_id, notices[-1].kind)
