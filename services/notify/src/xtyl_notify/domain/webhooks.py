"""Brevo's transactional webhooks: which events stop us writing to an address again.

Brevo POSTs one JSON object per event (or a list, when batching is on), e.g.
``{"event": "hard_bounce", "email": "a@example.com", "message-id": "<...>", "ts_event": ...}``.
"""

from __future__ import annotations

import msgspec

from xtyl_notify.domain.addresses import is_valid_email, suppression_key

#: Brevo event name -> suppression reason. Soft bounces, deferrals, opens... suppress nothing.
SUPPRESSING_EVENTS: dict[str, str] = {
    "hard_bounce": "hard_bounce",
    "spam": "spam",
    "unsubscribed": "unsubscribed",
    "blocked": "blocked",
    "invalid_email": "invalid_email",
}


class BrevoWebhookEvent(
    msgspec.Struct, frozen=True, kw_only=True, rename={"message_id": "message-id"}
):
    """The members we use; Brevo sends more, which are ignored."""

    event: str
    email: str | None = None
    message_id: str | None = None
    tags: list[str] | None = None


class Suppression(msgspec.Struct, frozen=True, kw_only=True):
    address: str
    reason: str


def suppressions_from(events: list[BrevoWebhookEvent]) -> list[Suppression]:
    """The suppressions ``events`` call for, one per address (the first reason wins)."""
    found: dict[str, Suppression] = {}
    for event in events:
        reason = SUPPRESSING_EVENTS.get(event.event)
        if reason is None or not event.email:
            continue
        address = suppression_key(event.email)
        if is_valid_email(address) and address not in found:
            found[address] = Suppression(address=address, reason=reason)
    return list(found.values())
