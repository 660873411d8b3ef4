"""The JSON bodies of the notify API (msgspec Structs at the edge)."""

from __future__ import annotations

import uuid
from datetime import datetime

import msgspec

from xtyl_notify.domain.emails import DocumentKind, EmailKind, EmailRecord, EmailStatus
from xtyl_notify.domain.preferences import Preferences


class NotificationOut(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    #: ``welcome``, ``document_ready``, ``document_failed``, ``document_digest`` (several
    #: documents in one email), ``auth_*`` (Supabase Auth's emails).
    kind: EmailKind
    to_address: str
    subject: str
    #: ``queued`` (not sent yet), ``retrying`` (a send failed for a passing reason, such as
    #: Brevo being down; it is tried again), ``sent``, ``failed``, ``suppressed`` (the address
    #: bounced, complained or unsubscribed before), ``cancelled`` (never sent).
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


class PreferencesBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Which emails you want, besides those you cannot do without (sign-in, recovery...)."""

    #: "Your document is ready" emails (and ready documents in digests).
    document_ready: bool
    #: "We could not process your document" emails (and failed documents in digests).
    document_failed: bool

    @classmethod
    def of(cls, preferences: Preferences) -> PreferencesBody:
        return cls(
            document_ready=preferences.document_ready,
            document_failed=preferences.document_failed,
        )

    def to_preferences(self) -> Preferences:
        return Preferences(document_ready=self.document_ready, document_failed=self.document_failed)


class UnsubscribedOut(msgspec.Struct, frozen=True, kw_only=True):
    #: The kinds of email now turned off by the link.
    unsubscribed: list[DocumentKind]


# --- the export (``/internal/me/export``): one object a line, ``record`` names its kind -----


class ExportedRecipient(
    msgspec.Struct, frozen=True, kw_only=True, tag_field="record", tag="recipient"
):
    """Where your email goes."""

    email: str | None
    full_name: str | None
    created_at: datetime
    updated_at: datetime


class ExportedPreferences(
    msgspec.Struct, frozen=True, kw_only=True, tag_field="record", tag="preferences"
):
    document_ready: bool
    document_failed: bool
    #: ``None``: never changed (the defaults).
    updated_at: datetime | None


class ExportedNotice(
    msgspec.Struct, frozen=True, kw_only=True, tag_field="record", tag="document_notice"
):
    """A document event kept for the user's document emails."""

    document_id: uuid.UUID
    kind: str
    title: str | None
    reason: str | None
    occurred_at: datetime
    status: str


class ExportedEmail(msgspec.Struct, frozen=True, kw_only=True, tag_field="record", tag="email"):
    id: uuid.UUID
    kind: EmailKind
    subject: str
    status: EmailStatus
    created_at: datetime
    sent_at: datetime | None
    to_address: str
    text_body: str
