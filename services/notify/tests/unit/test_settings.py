"""Settings: what is required where, and one line naming a bad variable."""

from __future__ import annotations

import pytest

from xtyl_common.settings import SettingsError, load_settings
from xtyl_notify.settings import LOCAL_APP_URL, LOCAL_BREVO_API_KEY, NotifySettings

BASE = {
    "DATABASE_URL": "postgresql://localhost/x",
    "REDIS_URL": "redis://localhost:6379/0",
    "SUPABASE_JWT_SECRET": "s" * 40,
    "INTERNAL_JWT_SECRET": "i" * 40,
    "BREVO_API_KEY": "xkeysib-123",
    "APP_URL": "https://app.xtyl.app",
}


def test_defaults() -> None:
    settings = load_settings(NotifySettings, environ=BASE)
    assert settings.brevo_api_url == "https://api.brevo.com"
    assert (settings.sender.name, settings.sender.email) == ("xtyl", "no-reply@xtyl.app")
    assert settings.brevo_webhook_secret is None
    assert settings.frontend_url == "https://app.xtyl.app"
    assert settings.api_key == "xkeysib-123"


def test_local_needs_no_brevo_key_or_app_url() -> None:
    env = {k: v for k, v in BASE.items() if k not in {"BREVO_API_KEY", "APP_URL"}}
    settings = load_settings(NotifySettings, environ={**env, "XTYL_ENV": "local"})
    assert settings.api_key == LOCAL_BREVO_API_KEY
    assert settings.frontend_url == LOCAL_APP_URL


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
    ],
)
def test_bad_settings_name_the_variable(overrides: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError) as error:
        load_settings(NotifySettings, environ={**BASE, **overrides})
    assert error.value.variable == variable
    assert "\n" not in str(error.value)
