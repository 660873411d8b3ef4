"""The JSON bodies of the notify API (msgspec Structs at the edge)."""

from __future__ import annotations

import uuid
from datetime import datetime

import msgspec

from xtyl_notify.domain.emails import EmailKind, EmailRecord, EmailStatus


class NotificationOut(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    #: ``welcome``, ``document_ready`` or ``document_failed``.
    kind: EmailKind
    to_address: str
    subject: str
    #: ``queued`` (not sent yet), ``retrying`` (a send failed for a passing reason, such as
    #: Brevo being down; it is tried again), ``sent``, ``failed``, ``suppressed`` (the address
    #: bounced, complained or unsubscribed before).
    status: EmailStatus
    created_at: datetime
    updated_at: datetime
    sent_at: datetime | None

    @classmethod
    def of(cls, email: EmailRecord) -> NotificationOut:
        return cls(
            id=email.id,
            kind=email.kind,
            to_address=email.to_address,
            subject=email.subject,
            status=email.status,
            created_at=email.created_at,
            updated_at=email.updated_at,
            sent_at=email.sent_at,
        )


class NotificationListOut(msgspec.Struct, frozen=True, kw_only=True):
    items: list[NotificationOut]
    #: Pass as ``cursor`` for the next page; None on the last page.
    next_cursor: str | None


class WebhookReceipt(msgspec.Struct, frozen=True, kw_only=True):
    #: Events in the request.
    received: int
    #: Addresses newly suppressed by them.
    suppressed: int
