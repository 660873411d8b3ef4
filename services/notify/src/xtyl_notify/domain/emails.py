"""The email log's vocabulary: kinds, statuses, the record, and the dedupe keys that make an
event delivered twice send at most one email."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Literal

import msgspec


class EmailKind(StrEnum):
    WELCOME = "welcome"
    DOCUMENT_READY = "document_ready"
    DOCUMENT_FAILED = "document_failed"
    #: Several document events of one user, told in one email at the end of their window.
    DOCUMENT_DIGEST = "document_digest"
    #: Supabase Auth's emails (Send Email Hook), one kind per email_action_type.
    AUTH_SIGNUP = "auth_signup"
    AUTH_RECOVERY = "auth_recovery"
    AUTH_MAGICLINK = "auth_magiclink"
    AUTH_EMAIL_CHANGE = "auth_email_change"
    AUTH_INVITE = "auth_invite"
    AUTH_REAUTHENTICATION = "auth_reauthentication"


class EmailStatus(StrEnum):
    QUEUED = "queued"
    #: A send failed for a transient reason (Brevo or the database down, slow or rate
    #: limiting); it is tried again (when Brevo's rate limit resets, else with backoff) until
    #: the retry horizon.
    RETRYING = "retrying"
    SENT = "sent"
    FAILED = "failed"
    SUPPRESSED = "suppressed"
    #: Never sent: the user was deleted while it waited.
    CANCELLED = "cancelled"


FINAL_STATUSES = frozenset(
    {EmailStatus.SENT, EmailStatus.FAILED, EmailStatus.SUPPRESSED, EmailStatus.CANCELLED}
)
#: The kinds a user can turn off (preferences, one-click unsubscribe); every other kind is
#: transactional (the welcome email, sent once per account, and Supabase Auth's emails).
DocumentKind = Literal["document_ready", "document_failed"]
DOCUMENT_KINDS: tuple[DocumentKind, ...] = ("document_ready", "document_failed")


class RenderedEmail(msgspec.Struct, frozen=True, kw_only=True):
    """What a template produces: both bodies and the Brevo tags."""

    subject: str
    html: str
    text: str
    tags: tuple[str, ...] = ()


class BrevoTemplate(msgspec.Struct, frozen=True, kw_only=True):
    """A template kept in Brevo, sent with ``params`` in place of the rendered bodies (which
    are still logged, as what the email says)."""

    id: int
    params: dict[str, str]


class NewEmail(msgspec.Struct, frozen=True, kw_only=True):
    """An email the service decided to send, before it is logged."""

    kind: EmailKind
    dedupe_key: str
    user_id: uuid.UUID | None
    to_address: str
    to_name: str | None
    content: RenderedEmail
    #: Brevo renders this template instead (``templateId`` and ``params``), when set.
    template: BrevoTemplate | None = None
    #: Extra mail headers (``List-Unsubscribe`` ...), logged with the row and sent with it.
    headers: dict[str, str] = msgspec.field(default_factory=dict[str, str])


class EmailRecord(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    user_id: uuid.UUID | None
    kind: EmailKind
    to_address: str
    to_name: str | None
    subject: str
    html_body: str
    text_body: str
    tags: list[str]
    headers: dict[str, str]
    dedupe_key: str
    status: EmailStatus
    brevo_message_id: str | None
    attempts: int
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    sent_at: datetime | None
    #: A digest's retries (no stream entry retries it): when its first send failed, and when
    #: the next attempt is due.
    first_failed_at: datetime | None = None
    next_attempt_at: datetime | None = None

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES


class Recipient(msgspec.Struct, frozen=True, kw_only=True):
    """What ``user.created`` / ``user.updated`` told us about a user: where their email goes
    (``None``: the user has no address, nothing is sent)."""

    user_id: uuid.UUID
    email: str | None
    full_name: str | None


class RecipientRecord(Recipient, frozen=True, kw_only=True):
    """A recipient as the user's export shows it."""

    created_at: datetime
    updated_at: datetime


NoticeStatus = Literal["pending", "emailed", "dropped"]


class NoticeRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A document event notify keeps for the user's document emails, as the export shows it:
    ``pending`` waits for their next digest, ``emailed`` was told, ``dropped`` was not (the
    kind was off). Kept 30 days after it was decided."""

    document_id: uuid.UUID
    kind: DocumentKind
    title: str | None
    reason: str | None
    occurred_at: datetime
    status: NoticeStatus


def dedupe_key(event_type: str, entity_id: uuid.UUID) -> str:
    """One email per cause and entity: ``user.created:<user id>``,
    ``document.indexed:<document id>``. Keyed by the entity rather than the event id, so an
    event re-emitted by a reconciler (a new id) does not send again either."""
    return f"{event_type}:{entity_id}"
