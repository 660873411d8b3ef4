"""The notify service's own metrics (docs/metrics.md, "rag, storage, notify"): what became of
each email it was asked to send, and the addresses suppressed.
"""

from __future__ import annotations

from typing import Final, Literal

from prometheus_client import Counter

EmailOutcome = Literal["sent", "failed", "retry", "suppressed", "duplicate", "skipped"]
#: One count per send attempt: ``sent`` (Brevo took it); ``failed`` (Brevo refused it, the
#: address is not deliverable, or the last try failed); ``retry`` (Brevo unavailable or rate
#: limiting: tried again later); ``suppressed`` (the address is suppressed: not sent);
#: ``duplicate`` (another copy of the event had already finished it); ``skipped`` (no address
#: to send it to: a user without email, or an unknown recipient).
EMAIL_OUTCOMES: Final[tuple[EmailOutcome, ...]] = (
    "sent",
    "failed",
    "retry",
    "suppressed",
    "duplicate",
    "skipped",
)

EMAILS = Counter(
    "xtyl_notify_emails",
    "Emails by kind and outcome (one count per send attempt).",
    ["kind", "outcome"],
)
SUPPRESSIONS = Counter(
    "xtyl_notify_suppressions",
    "Addresses suppressed (newly), by reason.",
    ["reason"],
)
