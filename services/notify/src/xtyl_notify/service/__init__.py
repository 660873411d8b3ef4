"""The notify service's use cases: :class:`NotifyService`, which ``routes/`` and ``worker.py``
call, and :func:`open_service`, which builds it and its adapters.

* :mod:`.notify`: ``NotifyService`` (the users' events, Supabase Auth's emails, the email log,
  suppressions, and the parts below);
* :mod:`.sending`: the send path every email takes;
* :mod:`.documents`: document emails coalesced per user, and the worker's digest loop;
* :mod:`.accounts`: preferences, one-click unsubscribe, erasure, export;
* :mod:`.wiring`: ``open_service``, the one composition root.
"""

from xtyl_notify.service.documents import DigestLoop
from xtyl_notify.service.notify import (
    AUTH_EMAIL_SENDS,
    AUTH_HOOK_ANSWER_S,
    AUTH_HOOK_DEADLINE_S,
    SUPPRESSION_SOURCE,
    EmailNotSentInTime,
    NotifyService,
)
from xtyl_notify.service.sending import EmailInFlight
from xtyl_notify.service.wiring import LEASE_MARGIN_S, open_service

__all__ = [
    "AUTH_EMAIL_SENDS",
    "AUTH_HOOK_ANSWER_S",
    "AUTH_HOOK_DEADLINE_S",
    "LEASE_MARGIN_S",
    "SUPPRESSION_SOURCE",
    "DigestLoop",
    "EmailInFlight",
    "EmailNotSentInTime",
    "NotifyService",
    "open_service",
]
