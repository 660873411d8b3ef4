"""The notify service's settings (API and notify-worker), read once from the environment.

See the README's table. ``BREVO_API_KEY`` and ``APP_URL`` are required unless ``XTYL_ENV=local``
(where the Brevo stand-in takes any key and links point at a local frontend).
"""

from __future__ import annotations

import re

from xtyl_common.identity import AuthSettings
from xtyl_notify.domain.addresses import Mailbox, parse_mailbox

LOCAL_ENV = "local"
LOCAL_BREVO_API_KEY = "xtyl-local-brevo-key"
LOCAL_APP_URL = "http://localhost:3000"
MIN_WEBHOOK_SECRET_CHARS = 16
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
    def sender(self) -> Mailbox:
        return parse_mailbox(self.email_sender)

    @property
    def api_key(self) -> str:
        return self.brevo_api_key or LOCAL_BREVO_API_KEY

    @property
    def frontend_url(self) -> str:
        return (self.app_url or LOCAL_APP_URL).rstrip("/")
