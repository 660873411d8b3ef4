"""Settings: what is required where, and one line naming a bad variable."""

from __future__ import annotations

import pytest

from xtyl_common.settings import SettingsError, load_settings
from xtyl_notify.settings import (
    LOCAL_APP_URL,
    LOCAL_BREVO_API_KEY,
    LOCAL_EMAIL_HASH_PEPPER,
    LOCAL_PUBLIC_API_URL,
    NotifySettings,
)

BASE = {
    "DATABASE_URL": "postgresql://localhost/x",
    "REDIS_URL": "redis://localhost:6379/0",
    "SUPABASE_JWT_SECRET": "s" * 40,
    "INTERNAL_JWT_SECRET": "i" * 40,
    "BREVO_API_KEY": "xkeysib-123",
    "APP_URL": "https://app.xtyl.app",
    "PUBLIC_API_URL": "https://api.xtyl.app",
    "EMAIL_HASH_PEPPER": "p" * 32,
}


def test_defaults() -> None:
    settings = load_settings(NotifySettings, environ=BASE)
    assert settings.brevo_api_url == "https://api.brevo.com"
    assert (settings.sender.name, settings.sender.email) == ("xtyl", "no-reply@xtyl.app")
    assert settings.brevo_webhook_secret is None
    assert settings.frontend_url == "https://app.xtyl.app"
    assert settings.api_key == "xkeysib-123"
    assert settings.public_base_url == "https://api.xtyl.app"
    assert settings.document_email_window_s == 600
    assert (settings.erasure_batch_size, settings.erasure_batch_pause_s) == (500, 0)


def test_local_needs_no_brevo_key_or_urls_or_pepper() -> None:
    unset = {"BREVO_API_KEY", "APP_URL", "PUBLIC_API_URL", "EMAIL_HASH_PEPPER"}
    env = {k: v for k, v in BASE.items() if k not in unset}
    settings = load_settings(NotifySettings, environ={**env, "XTYL_ENV": "local"})
    assert settings.api_key == LOCAL_BREVO_API_KEY
    assert settings.frontend_url == LOCAL_APP_URL
    assert settings.public_base_url == LOCAL_PUBLIC_API_URL
    assert settings.address_pepper == LOCAL_EMAIL_HASH_PEPPER


def test_unsubscribe_links_have_a_key_of_their_own() -> None:
    """Unset: derived from the internal secret, never the internal secret itself; set: the
    first of its secrets signs, all verify."""
    derived = load_settings(NotifySettings, environ=BASE).unsubscribe_secrets
    assert len(derived) == 1
    assert derived[0] != BASE["INTERNAL_JWT_SECRET"]
    assert len(derived[0]) == 64
    other = load_settings(NotifySettings, environ={**BASE, "INTERNAL_JWT_SECRET": "j" * 40})
    assert other.unsubscribe_secrets != derived
    rotating = {**BASE, "UNSUBSCRIBE_SECRET": f"{'n' * 32} | {'o' * 32}"}
    assert load_settings(NotifySettings, environ=rotating).unsubscribe_secrets == (
        "n" * 32,
        "o" * 32,
    )


@pytest.mark.parametrize(
    ("overrides", "variable"),
    [
        ({"BREVO_API_KEY": ""}, "BREVO_API_KEY"),
        ({"APP_URL": ""}, "APP_URL"),
        ({"APP_URL": "app.xtyl.app"}, "APP_URL"),
        ({"BREVO_API_URL": "ftp://brevo"}, "BREVO_API_URL"),
        ({"EMAIL_SENDER": "xtyl"}, "EMAIL_SENDER"),
        ({"BREVO_WEBHOOK_SECRET": "short"}, "BREVO_WEBHOOK_SECRET"),
        ({"BREVO_TIMEOUT_S": "0"}, "BREVO_TIMEOUT_S"),
        ({"BREVO_TIMEOUT_S": "soon"}, "BREVO_TIMEOUT_S"),
        ({"DATABASE_URL": ""}, "DATABASE_URL"),
        ({"PUBLIC_API_URL": ""}, "PUBLIC_API_URL"),
        ({"PUBLIC_API_URL": "api.xtyl.app"}, "PUBLIC_API_URL"),
        ({"EMAIL_HASH_PEPPER": ""}, "EMAIL_HASH_PEPPER"),
        ({"EMAIL_HASH_PEPPER": "short"}, "EMAIL_HASH_PEPPER"),
        ({"UNSUBSCRIBE_SECRET": "short"}, "UNSUBSCRIBE_SECRET"),
        ({"UNSUBSCRIBE_SECRET": f"{'n' * 32}|short"}, "UNSUBSCRIBE_SECRET"),
        ({"DOCUMENT_EMAIL_WINDOW_S": "0"}, "DOCUMENT_EMAIL_WINDOW_S"),
        ({"DIGEST_POLL_INTERVAL_S": "0"}, "DIGEST_POLL_INTERVAL_S"),
        ({"ERASURE_BATCH_SIZE": "0"}, "ERASURE_BATCH_SIZE"),
        ({"ERASURE_BATCH_PAUSE_S": "-1"}, "ERASURE_BATCH_PAUSE_S"),
    ],
)
def test_bad_settings_name_the_variable(overrides: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError) as error:
        load_settings(NotifySettings, environ={**BASE, **overrides})
    assert error.value.variable == variable
    assert "\n" not in str(error.value)
