"""Email addresses: a pragmatic syntax check, the suppression key, and ``Name <email>``.

The check refuses what no mail server would accept (no ``@``, spaces, control characters, a
domain without a dot, over-long parts) and nothing more: the final word on an address is the
recipient's server, and Brevo's bounce webhooks tell us about it.
"""

from __future__ import annotations

import hashlib
import hmac
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
    """An address as suppressions written before address hashes hold it: trimmed and
    lower-cased."""
    return address.strip().lower()


#: What an address hash starts with (``sha256:<64 hex digits>``).
ADDRESS_HASH_PREFIX = "sha256:"


class AddressHasher:
    """Addresses as notify keeps them where the address itself must not stay: suppressions (for
    everyone) and the email log of a deleted user. ``sha256:`` + the hex HMAC-SHA256 of the
    trimmed, lower-cased address, keyed with ``EMAIL_HASH_PEPPER``.

    Keyed, because a plain SHA-256 of an address is no pseudonym: anyone holding a copy of the
    table and a list of addresses (a leak, a guess) finds who is in it. With the pepper kept
    out of the database (a secret of the deployment), a dump or a backup alone says nothing
    about any address. The pepper must never change: hashes made with another one match
    nothing, and suppressed addresses would be written to again."""

    def __init__(self, pepper: str) -> None:
        self._key = pepper.encode()

    def hash(self, address: str) -> str:
        digest = hmac.new(self._key, suppression_key(address).encode(), hashlib.sha256)
        return ADDRESS_HASH_PREFIX + digest.hexdigest()

    def suppression_keys(self, address: str) -> list[str]:
        """Every form a suppression of ``address`` may have: its hash, and the lower-cased
        address of rows written before hashes."""
        return [self.hash(address), suppression_key(address)]


def is_address_hash(value: str) -> bool:
    return value.startswith(ADDRESS_HASH_PREFIX)


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
