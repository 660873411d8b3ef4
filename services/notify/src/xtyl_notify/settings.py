"""The notify service's settings (API and notify-worker), read once from the environment.

See the README's table. ``BREVO_API_KEY``, ``APP_URL``, ``PUBLIC_API_URL`` and
``EMAIL_HASH_PEPPER`` are required unless ``XTYL_ENV=local`` (where the Brevo stand-in takes
any key, links point at a local frontend and gateway, and a fixed pepper does).
"""

from __future__ import annotations

import hashlib
import hmac
import re

from xtyl_common.identity import AuthSettings
from xtyl_notify.domain.addresses import Mailbox, parse_mailbox

LOCAL_ENV = "local"
LOCAL_BREVO_API_KEY = "xtyl-local-brevo-key"
LOCAL_APP_URL = "http://localhost:3000"
#: The gateway of ``make up`` (its default port).
LOCAL_PUBLIC_API_URL = "http://127.0.0.1:8000"
#: Only for XTYL_ENV=local: local data is not worth a secret.
LOCAL_EMAIL_HASH_PEPPER = "xtyl-local-email-hash-pepper-not-a-secret"
MIN_WEBHOOK_SECRET_CHARS = 16
MIN_SECRET_CHARS = 32
#: The label that derives the unsubscribe links' key from INTERNAL_JWT_SECRET when
#: UNSUBSCRIBE_SECRET is unset (domain separation: that key signs nothing else).
UNSUBSCRIBE_KEY_LABEL = b"xtyl:notify:unsubscribe-link:v1"
#: Supabase Auth's email_action_types notify renders (and may send as Brevo templates).
AUTH_EMAIL_ACTIONS = (
    "signup",
    "recovery",
    "magiclink",
    "email_change",
    "invite",
    "reauthentication",
)
#: What Supabase (and its CLI) accept as a hook secret.
_HOOK_SECRET = re.compile(r"^v1,whsec_[A-Za-z0-9+/=]{32,88}$")


def _http_url(value: str, field: str) -> None:
    if not value.startswith(("https://", "http://")) or len(value) < 10:
        raise ValueError(f"must be an http(s) URL (at `$.{field}`)")


class NotifySettings(AuthSettings, frozen=True, kw_only=True):
    database_url: str
    redis_url: str
    db_pool_max: int = 10
    #: Brevo API key (``api-key`` header). Required unless XTYL_ENV=local.
    brevo_api_key: str | None = None
    brevo_api_url: str = "https://api.brevo.com"
    #: One request to Brevo, connect and whole request.
    brevo_connect_timeout_s: float = 3.0
    brevo_timeout_s: float = 10.0
    #: ``Name <address>`` or ``address``; a sender verified in Brevo.
    email_sender: str = "xtyl <no-reply@xtyl.app>"
    #: Shared secret of ``POST /webhooks/brevo``; unset: the route answers 404.
    brevo_webhook_secret: str | None = None
    #: The frontend's base URL, for links in emails. Required unless XTYL_ENV=local.
    app_url: str | None = None
    #: Secret(s) of Supabase Auth's Send Email Hook (``POST /webhooks/auth/send-email``):
    #: ``v1,whsec_<base64>``, several joined by ``|`` while rotating; unset: the route is 404.
    send_email_hook_secret: str | None = None
    #: Brevo templates for Supabase Auth's emails, ``action=template id`` comma-separated
    #: (``recovery=12,signup=13``); an action without one is rendered by notify.
    brevo_auth_templates: str | None = None
    #: The gateway's public base URL (``https://api.xtyl.app``): where the one-click
    #: unsubscribe links of emails point. Required unless XTYL_ENV=local.
    public_api_url: str | None = None
    #: Keys the address hashes of suppressions and of a deleted user's email log
    #: (HMAC-SHA256), at least 32 characters, kept out of the database. Never change it:
    #: hashes made with another pepper match nothing. Required unless XTYL_ENV=local.
    email_hash_pepper: str | None = None
    #: Signs the one-click unsubscribe links (HS256), at least 32 characters; several joined
    #: by ``|`` while rotating (the first signs, all verify). Unset: derived from
    #: INTERNAL_JWT_SECRET (HMAC with a label of its own), so links stop working when that
    #: secret rotates; set it to keep them apart.
    unsubscribe_secret: str | None = None
    #: At most one document email per user per window: the first event of a quiet user is
    #: sent at once, the later ones together when the window ends.
    document_email_window_s: float = 600.0
    #: How often notify-worker looks for digests that are due (and digests to try again).
    digest_poll_interval_s: float = 5.0
    #: An erasure's email rows per transaction, and the pause between two batches.
    erasure_batch_size: int = 500
    erasure_batch_pause_s: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        local = self.xtyl_env == LOCAL_ENV
        if self.brevo_api_key is None and not local:
            raise ValueError("is required unless XTYL_ENV=local (at `$.brevo_api_key`)")
        if self.app_url is None and not local:
            raise ValueError("is required unless XTYL_ENV=local (at `$.app_url`)")
        _http_url(self.brevo_api_url, "brevo_api_url")
        if self.app_url is not None:
            _http_url(self.app_url, "app_url")
        try:
            parse_mailbox(self.email_sender)
        except ValueError as exc:
            raise ValueError(f"{exc} (at `$.email_sender`)") from None
        secret = self.brevo_webhook_secret
        if secret is not None and len(secret) < MIN_WEBHOOK_SECRET_CHARS:
            raise ValueError(
                f"must be at least {MIN_WEBHOOK_SECRET_CHARS} characters"
                " (at `$.brevo_webhook_secret`)"
            )
        _ = self.auth_templates  # raises on a malformed value
        for hook_secret in self.send_email_hook_secrets:
            if not _HOOK_SECRET.match(hook_secret):
                raise ValueError(
                    'must be "v1,whsec_<base64>" (32+ base64 characters), as Supabase shows it'
                    " (at `$.send_email_hook_secret`)"
                )
        if not 0 < self.brevo_connect_timeout_s <= self.brevo_timeout_s <= 120:
            raise ValueError(
                "must be > 0, at least BREVO_CONNECT_TIMEOUT_S and at most 120"
                " (at `$.brevo_timeout_s`)"
            )
        self._check_lifecycle(local=local)

    def _check_lifecycle(self, *, local: bool) -> None:
        """The settings of users' lifecycle: links, address hashes, digests, erasure."""
        if self.public_api_url is None and not local:
            raise ValueError("is required unless XTYL_ENV=local (at `$.public_api_url`)")
        if self.public_api_url is not None:
            _http_url(self.public_api_url, "public_api_url")
        if self.email_hash_pepper is None and not local:
            raise ValueError("is required unless XTYL_ENV=local (at `$.email_hash_pepper`)")
        if self.email_hash_pepper is not None and len(self.email_hash_pepper) < MIN_SECRET_CHARS:
            raise ValueError(
                f"must be at least {MIN_SECRET_CHARS} characters (at `$.email_hash_pepper`)"
            )
        if self.unsubscribe_secret is not None and (
            not self.unsubscribe_secrets
            or any(len(secret) < MIN_SECRET_CHARS for secret in self.unsubscribe_secrets)
        ):
            raise ValueError(
                f"each secret must be at least {MIN_SECRET_CHARS} characters"
                " (at `$.unsubscribe_secret`)"
            )
        if not 1 <= self.document_email_window_s <= 7 * 86_400:
            raise ValueError(
                "must be between 1 and 604800 seconds (at `$.document_email_window_s`)"
            )
        if not 0.05 <= self.digest_poll_interval_s <= 300:
            raise ValueError("must be between 0.05 and 300 seconds (at `$.digest_poll_interval_s`)")
        if not 1 <= self.erasure_batch_size <= 10_000:
            raise ValueError("must be between 1 and 10000 (at `$.erasure_batch_size`)")
        if not 0 <= self.erasure_batch_pause_s <= 60:
            raise ValueError("must be between 0 and 60 seconds (at `$.erasure_batch_pause_s`)")

    @property
    def send_email_hook_secrets(self) -> tuple[str, ...]:
        raw = self.send_email_hook_secret or ""
        return tuple(part.strip() for part in raw.split("|") if part.strip())

    @property
    def auth_templates(self) -> dict[str, int]:
        """``BREVO_AUTH_TEMPLATES`` as action -> Brevo template id."""
        templates: dict[str, int] = {}
        for item in (self.brevo_auth_templates or "").split(","):
            if not item.strip():
                continue
            action, _, raw_id = item.partition("=")
            action = action.strip()
            if action not in AUTH_EMAIL_ACTIONS or not raw_id.strip().isdigit():
                raise ValueError(
                    f"{item.strip()!r} is not action=template id, with an action among"
                    f" {', '.join(AUTH_EMAIL_ACTIONS)} (at `$.brevo_auth_templates`)"
                )
            templates[action] = int(raw_id)
        return templates

    @property
    def unsubscribe_secrets(self) -> tuple[str, ...]:
        """The keys of unsubscribe links: the first signs, every one verifies."""
        if self.unsubscribe_secret is None:
            derived = hmac.new(
                self.internal_jwt_secret.encode(), UNSUBSCRIBE_KEY_LABEL, hashlib.sha256
            )
            return (derived.hexdigest(),)
        return tuple(part.strip() for part in self.unsubscribe_secret.split("|") if part.strip())

    @property
    def address_pepper(self) -> str:
        return self.email_hash_pepper or LOCAL_EMAIL_HASH_PEPPER

    @property
    def public_base_url(self) -> str:
        return (self.public_api_url or LOCAL_PUBLIC_API_URL).rstrip("/")

    @property
    def sender(self) -> Mailbox:
        return parse_mailbox(self.email_sender)

    @property
    def api_key(self) -> str:
        return self.brevo_api_key or LOCAL_BREVO_API_KEY

    @property
    def frontend_url(self) -> str:
        return (self.app_url or LOCAL_APP_URL).rstrip("/")
