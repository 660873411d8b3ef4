"""supabase/config.toml: every key one the Supabase CLI knows (its key list is vendored in
data/, with the CLI version it comes from), the values the original design chose for Supabase
Auth (the seed's section 7: email sign-up on, "Confirm email" off, 8-character passwords, the
site URL and its /auth/callback redirect), and the Send Email Hook pointed at notify through
the gateway."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from xtyl_devstack.auth.config import find_config, load_config
from xtyl_gateway.domain.routing import match_route

KEYS_FILE = Path(__file__).parent / "data" / "supabase_cli_v2.104.0_auth_keys.txt"


@pytest.fixture(scope="module")
def config_path(request: pytest.FixtureRequest) -> Path:
    return request.config.rootpath / "supabase" / "config.toml"


@pytest.fixture(scope="module")
def config(config_path: Path) -> dict[str, Any]:
    return tomllib.loads(config_path.read_text())


def flat_keys(table: dict[str, Any], prefix: str = "") -> list[str]:
    keys: list[str] = []
    for name, value in table.items():
        path = f"{prefix}{name}"
        if isinstance(value, dict):
            keys += flat_keys(value, path + ".")  # pyright: ignore[reportUnknownArgumentType]
        else:
            keys.append(path)
    return keys


def test_every_key_is_one_the_supabase_cli_knows(config: dict[str, Any]) -> None:
    known = {
        line.strip()
        for line in KEYS_FILE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    keys = flat_keys(config)
    assert len(keys) > 30
    assert [key for key in keys if key not in known] == []


def test_the_values_are_the_designs(config: dict[str, Any]) -> None:
    auth = config["auth"]
    site = auth["site_url"]
    assert urlsplit(site).scheme == "https"
    assert f"{site}/auth/callback" in auth["additional_redirect_urls"]
    assert auth["minimum_password_length"] == 8
    assert auth["enable_signup"] is True
    assert auth["email"]["enable_signup"] is True  # the email provider
    assert auth["email"]["enable_confirmations"] is False  # "Confirm email" off
    assert auth["jwt_expiry"] == 3600
    assert auth["enable_refresh_token_rotation"] is True
    assert 0 < auth["refresh_token_reuse_interval"] <= 60
    assert set(auth["rate_limit"]) >= {"sign_in_sign_ups", "token_refresh", "email_sent"}


def test_auth_emails_go_to_notify_through_the_gateway(
    config: dict[str, Any], config_path: Path
) -> None:
    hook = config["auth"]["hook"]["send_email"]
    assert hook["enabled"] is True
    assert hook["secrets"] == "env(SEND_EMAIL_HOOK_SECRET)"  # never in the file
    uri = urlsplit(hook["uri"])
    assert uri.scheme == "https"
    route = match_route(uri.path)
    assert route is not None
    assert (route.upstream, route.anonymous) == ("notify", True)
    for name, template in config["auth"]["email"]["template"].items():
        assert template["subject"], name
        path = config_path.parent.parent / template["content_path"]
        assert "{{ .Token }}" in path.read_text(), name


def test_the_local_auth_reads_the_same_file(config_path: Path) -> None:
    assert find_config(config_path.parent.parent / "libs" / "devstack") == config_path
    secret = "v1,whsec_" + "c2VjcmV0LW9mLXRoZS1sb2NhbC1zdGFjay0wMTIzNDU2Nzg5"
    local = load_config(config_path, {"SEND_EMAIL_HOOK_SECRET": secret}).for_local(
        site_url="http://localhost:3000", hook_uri="http://127.0.0.1:8000/webhooks/auth/send-email"
    )
    assert local.minimum_password_length == 8
    assert local.enable_confirmations is False
    assert local.max_frequency_s == 60.0
    assert local.send_email_hook is not None
    assert local.send_email_hook.secrets == (secret,)
    assert "http://localhost:3000/auth/callback" in local.additional_redirect_urls
