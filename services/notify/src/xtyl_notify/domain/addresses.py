"""Email addresses: a pragmatic syntax check, the suppression key, and ``Name <email>``.

The check refuses what no mail server would accept (no ``@``, spaces, control characters, a
domain without a dot, over-long parts) and nothing more: the final word on an address is the
recipient's server, and Brevo's bounce webhooks tell us about it.
"""

from __future__ import annotations

import re
from email.utils import parseaddr

import msgspec

MAX_ADDRESS_LENGTH = 254
MAX_LOCAL_LENGTH = 64
MAX_NAME_LENGTH = 200

_LOCAL_RE = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+$")
_LABEL_RE = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


class Mailbox(msgspec.Struct, frozen=True, kw_only=True):
    email: str
    name: str | None = None


def is_valid_email(address: str) -> bool:
    if len(address) > MAX_ADDRESS_LENGTH or address.count("@") != 1:
        return False
    local, domain = address.split("@")
    if not local or len(local) > MAX_LOCAL_LENGTH or not _LOCAL_RE.match(local):
        return False
    if local.startswith(".") or local.endswith(".") or ".." in local:
        return False
    labels = domain.split(".")
    if len(labels) < 2 or not all(_LABEL_RE.match(label) for label in labels):
        return False
    return not labels[-1].isdigit()


def suppression_key(address: str) -> str:
    """How an address is compared against suppressions: trimmed and lower-cased."""
    return address.strip().lower()


def parse_mailbox(text: str) -> Mailbox:
    """``xtyl <no-reply@xtyl.app>`` or ``no-reply@xtyl.app``; :class:`ValueError` otherwise."""
    name, address = parseaddr(text.strip())
    if not address or not is_valid_email(address):
        raise ValueError(f"{text!r} is not an email address or `Name <address>`")
    name = " ".join(name.split())
    return Mailbox(email=address, name=name or None)


def display_name(full_name: str | None) -> str | None:
    """A recipient name fit for a header: whitespace collapsed, control characters dropped,
    at most :data:`MAX_NAME_LENGTH` characters; ``None`` when nothing is left."""
    if full_name is None:
        return None
    cleaned = "".join(ch for ch in full_name if ch.isprintable())
    cleaned = " ".join(cleaned.split())[:MAX_NAME_LENGTH].strip()
    return cleaned or None
