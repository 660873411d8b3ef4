"""The Send Email Hook's settings and the emails one hook call asks for (pure)."""

from __future__ import annotations

import uuid

import msgspec
import pytest

from xtyl_common.settings import SettingsError, load_settings
from xtyl_notify.domain.auth_emails import SendEmailHook, emails_for, new_emails
from xtyl_notify.settings import NotifySettings

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
SECRET = "v1,whsec_" + "c2VjcmV0LW9mLXRoZS1zZW5kLWVtYWlsLWhvb2stMDEy"


def test_hook_secrets_and_templates_are_read() -> None:
    env = {
        **BASE,
        "SEND_EMAIL_HOOK_SECRET": f"{SECRET} | {SECRET[:-4]}QUJD",
        "BREVO_AUTH_TEMPLATES": "recovery=12, signup=7",
    }
    settings = load_settings(NotifySettings, environ=env)
    assert settings.send_email_hook_secrets == (SECRET, SECRET[:-4] + "QUJD")
    assert settings.auth_templates == {"recovery": 12, "signup": 7}
    unset = load_settings(NotifySettings, environ=BASE)
    assert (unset.send_email_hook_secrets, unset.auth_templates) == ((), {})


@pytest.mark.parametrize(
    ("overrides", "variable"),
    [
        ({"SEND_EMAIL_HOOK_SECRET": "whsec_" + "a" * 40}, "SEND_EMAIL_HOOK_SECRET"),
        ({"SEND_EMAIL_HOOK_SECRET": "v1,whsec_short"}, "SEND_EMAIL_HOOK_SECRET"),
        ({"BREVO_AUTH_TEMPLATES": "recovery=twelve"}, "BREVO_AUTH_TEMPLATES"),
        ({"BREVO_AUTH_TEMPLATES": "password_changed=3"}, "BREVO_AUTH_TEMPLATES"),
    ],
)
def test_malformed_values_are_named(overrides: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(NotifySettings, environ={**BASE, **overrides})
    assert caught.value.variable == variable


def hook(action: str, **email_data: str) -> SendEmailHook:
    return msgspec.convert(
        {
            "user": {"id": str(uuid.uuid4()), "email": "old@example.com", "new_email": "new@x.io"},
            "email_data": {"email_action_type": action, "token": "111111", **email_data},
        },
        SendEmailHook,
    )


def test_an_email_change_without_secure_change_writes_to_the_new_address_only() -> None:
    [email] = emails_for(hook("email_change", token_hash="cc" * 28, site_url="https://a/auth/v1"))
    assert (email.role, email.to_address) == ("new", "new@x.io")
    assert "111111" in email.content.text
    assert "https://a/auth/v1/verify?token=" + "cc" * 28 in email.content.text


def test_actions_notify_does_not_send_ask_for_nothing() -> None:
    assert emails_for(hook("password_changed_notification")) == []


def test_each_email_of_a_call_is_logged_under_the_webhook_id_and_its_role() -> None:
    secure_change = hook(
        "email_change", token_hash="cc" * 28, token_new="222222", token_hash_new="dd" * 28
    )
    emails = new_emails("msg_1", secure_change, {"email_change": 9})
    assert [(e.dedupe_key, e.to_address) for e in emails] == [
        ("auth_hook:msg_1:current", "old@example.com"),
        ("auth_hook:msg_1:new", "new@x.io"),
    ]
    assert all(e.template is not None and e.template.id == 9 for e in emails)
    assert new_emails("msg_2", hook("password_changed_notification")) == []
