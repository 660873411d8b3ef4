"""The local Auth's rules, as Supabase Auth applies them: addresses, passwords, one-time codes,
redirect targets and per-address rate limits. Pure logic, no I/O."""

from __future__ import annotations

import fnmatch
import hashlib
import re
import secrets
import string
import time
from collections import deque
from urllib.parse import urlsplit

from xtyl_devstack.auth.config import AuthConfig
from xtyl_devstack.auth.errors import AuthApiError

#: bcrypt reads 72 bytes at most; Supabase Auth refuses longer passwords.
MAX_PASSWORD_LENGTH = 72
MAX_EMAIL_LENGTH = 255
#: The address rules of supabase/auth's checkmail.ValidateFormat.
_EMAIL = re.compile(
    r"^[a-zA-Z0-9.!#$%&'*+/=?^_`{|}~-]+@[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
    r"(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$"
)
#: Domains that can never receive mail (RFC 2606 / RFC 6761), refused like Supabase's mailer
#: refuses undeliverable addresses.
_UNDELIVERABLE_TLDS = frozenset({"invalid", "test", "localhost", "example", "local"})
_REQUIREMENTS = {
    "letters_digits": (string.ascii_letters, string.digits),
    "lower_upper_letters_digits": (string.ascii_lowercase, string.ascii_uppercase, string.digits),
    "lower_upper_letters_digits_symbols": (
        string.ascii_lowercase,
        string.ascii_uppercase,
        string.digits,
        string.punctuation,
    ),
}
_REFRESH_ALPHABET = string.ascii_lowercase + string.digits
REFRESH_TOKEN_LENGTH = 12


def checked_email(email: str) -> str:
    """The address lower-cased, or the error Supabase Auth answers for it."""
    if not email:
        raise AuthApiError(400, "validation_failed", "An email address is required")
    if len(email) > MAX_EMAIL_LENGTH:
        raise AuthApiError(400, "validation_failed", "An email address is too long")
    if not _EMAIL.match(email):
        raise AuthApiError(
            400, "validation_failed", "Unable to validate email address: invalid format"
        )
    domain = email.rsplit("@", 1)[1].lower()
    if "." not in domain or domain.rsplit(".", 1)[1] in _UNDELIVERABLE_TLDS:
        raise AuthApiError(400, "email_address_invalid", f'Email address "{email}" is invalid')
    return email.lower()


def check_password(password: str, config: AuthConfig) -> None:
    """Raise ``weak_password`` (422, with its reasons) for a password the config refuses."""
    if len(password.encode()) > MAX_PASSWORD_LENGTH:
        raise AuthApiError(
            422,
            "validation_failed",
            f"Password cannot be longer than {MAX_PASSWORD_LENGTH} characters",
        )
    messages: list[str] = []
    reasons: list[str] = []
    if len(password) < config.minimum_password_length:
        messages.append(f"Password should be at least {config.minimum_password_length} characters.")
        reasons.append("length")
    required = _REQUIREMENTS.get(config.password_requirements)
    if required is not None and not all(any(c in group for c in password) for group in required):
        messages.append(
            "Password should contain at least one character of each: "
            + ", ".join(repr(group) for group in required)
            + "."
        )
        reasons.append("characters")
    if reasons:
        raise AuthApiError(
            422, "weak_password", " ".join(messages), weak_password={"reasons": reasons}
        )


def new_otp(length: int) -> str:
    return "".join(secrets.choice(string.digits) for _ in range(length))


def token_hash(email: str, otp: str) -> str:
    """What Supabase Auth stores and puts in links: sha224 of the address and the code, hex."""
    return hashlib.sha224((email + otp).encode()).hexdigest()


def new_refresh_token() -> str:
    return "".join(secrets.choice(_REFRESH_ALPHABET) for _ in range(REFRESH_TOKEN_LENGTH))


def is_refresh_token(value: str) -> bool:
    return len(value) == REFRESH_TOKEN_LENGTH and all(c in _REFRESH_ALPHABET for c in value)


def redirect_target(wanted: str | None, config: AuthConfig) -> str:
    """``wanted`` when the config allows it (the site's own origin, or an entry of
    ``additional_redirect_urls``, globs included), else the site URL."""
    if not wanted:
        return config.site_url
    target, site = urlsplit(wanted), urlsplit(config.site_url)
    if (target.scheme, target.netloc) == (site.scheme, site.netloc):
        return wanted
    for allowed in config.additional_redirect_urls:
        if wanted == allowed or fnmatch.fnmatchcase(wanted, allowed):
            return wanted
    return config.site_url


class RateLimiter:
    """Events per client address in a sliding window (Supabase Auth's ``over_request_rate_limit``
    limits), kept in memory."""

    def __init__(self) -> None:
        self._events: dict[tuple[str, str], deque[float]] = {}

    def allow(self, bucket: str, address: str, limit: int, window_s: float) -> bool:
        now = time.monotonic()
        events = self._events.setdefault((bucket, address), deque())
        while events and events[0] <= now - window_s:
            events.popleft()
        if len(events) >= limit:
            return False
        events.append(now)
        return True

    def check(self, bucket: str, address: str, limit: int, window_s: float) -> None:
        if not self.allow(bucket, address, limit, window_s):
            raise AuthApiError(429, "over_request_rate_limit", "Request rate limit reached")
