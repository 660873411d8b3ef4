"""``supabase/config.toml`` (the Supabase CLI's format) as the local Auth reads it.

The file holds production's values; :meth:`AuthConfig.for_local` replaces only what must point
at this machine (the frontend's URL, the hook's URL and secret). Strings written ``env(NAME)``
take the variable's value when it is set and non-empty, as the CLI does; otherwise they stay as
written (and a hook secret left so is an error when the hook is on).
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xtyl_devstack.errors import DevstackError

CONFIG_PATH = Path("supabase") / "config.toml"
_ENV = re.compile(r"^env\((.*)\)$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s)")
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_HOOK_SECRET = re.compile(r"^v1,whsec_[A-Za-z0-9+/=]{32,88}$")


class AuthConfigError(DevstackError):
    """supabase/config.toml cannot be used by the local Auth."""


def find_config(start: Path | None = None) -> Path:
    """``supabase/config.toml`` in ``start`` (default: the working directory) or a parent, else
    in the checkout this package is installed from (a uv workspace installs it editable)."""
    here = (start or Path.cwd()).resolve()
    package = Path(__file__).resolve()
    for directory in (here, *here.parents, *package.parents):
        candidate = directory / CONFIG_PATH
        if candidate.is_file():
            return candidate
    raise AuthConfigError(f"no {CONFIG_PATH} in {here} or any parent directory")


def go_duration_s(text: str) -> float:
    """A Go duration (``"60s"``, ``"1m30s"``, ``"1h"``) in seconds."""
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise AuthConfigError(f"{text!r} is not a duration such as 60s or 1m")
    return sum(float(number) * _UNIT_S[unit] for number, unit in parts)


@dataclass(frozen=True, slots=True)
class RateLimits:
    """``[auth.rate_limit]``: per client address and window, as Supabase Auth counts them."""

    #: sign-ups and password sign-ins per 5 minutes
    sign_in_sign_ups: int = 30
    #: refresh-token grants per 5 minutes
    token_refresh: int = 150
    #: OTP and link verifications per 5 minutes
    token_verifications: int = 30
    #: emails per hour (all addresses together), while confirmations are on
    email_sent: int = 30


@dataclass(frozen=True, slots=True)
class SendEmailHook:
    """``[auth.hook.send_email]``: where auth emails go, and the Standard Webhooks secrets."""

    uri: str
    #: ``v1,whsec_<base64>`` each; every one signs each call (rotation)
    secrets: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AuthConfig:
    site_url: str = "http://127.0.0.1:3000"
    additional_redirect_urls: tuple[str, ...] = ()
    jwt_expiry_s: int = 3600
    refresh_token_rotation: bool = True
    refresh_token_reuse_interval_s: int = 10
    #: ``auth.enable_signup`` and ``auth.email.enable_signup`` both
    enable_signup: bool = True
    enable_confirmations: bool = False
    #: an email change is confirmed from the old address too
    double_confirm_changes: bool = True
    minimum_password_length: int = 6
    password_requirements: str = ""
    max_frequency_s: float = 60.0
    otp_length: int = 6
    otp_expiry_s: int = 3600
    rate_limits: RateLimits = RateLimits()
    send_email_hook: SendEmailHook | None = None

    def for_local(
        self,
        *,
        site_url: str,
        hook_uri: str | None = None,
        hook_secret: str | None = None,
        **changes: Any,
    ) -> AuthConfig:
        """This config on this machine: the local frontend instead of production's (added to
        the redirect list with its ``/auth/callback``), the hook at ``hook_uri`` signed with
        ``hook_secret`` (when the file turns the hook on), and any other ``changes``."""
        hook = self.send_email_hook
        if hook is not None and hook_uri is not None:
            secrets = (hook_secret,) if hook_secret is not None else hook.secrets
            hook = SendEmailHook(uri=hook_uri, secrets=_checked_secrets(secrets))
        local_urls = (site_url, site_url.rstrip("/") + "/auth/callback")
        return dataclasses.replace(
            self,
            site_url=site_url,
            additional_redirect_urls=(*local_urls, *self.additional_redirect_urls),
            send_email_hook=hook,
            **changes,
        )


def _resolve(value: Any, environ: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        match = _ENV.match(value)
        if match and environ.get(match.group(1)):
            return environ[match.group(1)]
        return value
    if isinstance(value, list):
        return [_resolve(item, environ) for item in value]  # pyright: ignore[reportUnknownVariableType]
    if isinstance(value, dict):
        return {k: _resolve(v, environ) for k, v in value.items()}  # pyright: ignore[reportUnknownVariableType]
    return value


def _checked_secrets(secrets: tuple[str, ...]) -> tuple[str, ...]:
    for secret in secrets:
        if not _HOOK_SECRET.match(secret):
            raise AuthConfigError(
                'auth.hook.send_email.secrets must be "v1,whsec_<base64>" (32+ characters)'
                f", got {secret[:12]!r}…"
            )
    return secrets


def parse_config(document: Mapping[str, Any], environ: Mapping[str, str]) -> AuthConfig:
    """The local Auth's settings from a parsed config.toml."""
    resolved: dict[str, Any] = _resolve(dict(document), environ)
    auth: dict[str, Any] = resolved.get("auth", {})
    email: dict[str, Any] = auth.get("email", {})
    limits: dict[str, Any] = auth.get("rate_limit", {})
    defaults = AuthConfig()
    hook: SendEmailHook | None = None
    send_email: dict[str, Any] = auth.get("hook", {}).get("send_email", {})
    if send_email.get("enabled", False):
        uri = str(send_email.get("uri", ""))
        if not uri.startswith(("http://", "https://")):
            raise AuthConfigError("auth.hook.send_email.uri must be an http(s) URL")
        secrets = tuple(s for s in str(send_email.get("secrets", "")).split("|") if s)
        hook = SendEmailHook(uri=uri, secrets=secrets)
    try:
        return AuthConfig(
            site_url=str(auth.get("site_url", defaults.site_url)),
            additional_redirect_urls=tuple(auth.get("additional_redirect_urls", ())),
            jwt_expiry_s=int(auth.get("jwt_expiry", defaults.jwt_expiry_s)),
            refresh_token_rotation=bool(auth.get("enable_refresh_token_rotation", True)),
            refresh_token_reuse_interval_s=int(
                auth.get("refresh_token_reuse_interval", defaults.refresh_token_reuse_interval_s)
            ),
            enable_signup=bool(auth.get("enable_signup", True))
            and bool(email.get("enable_signup", True)),
            enable_confirmations=bool(email.get("enable_confirmations", False)),
            double_confirm_changes=bool(email.get("double_confirm_changes", True)),
            minimum_password_length=int(
                auth.get("minimum_password_length", defaults.minimum_password_length)
            ),
            password_requirements=str(auth.get("password_requirements", "")),
            max_frequency_s=go_duration_s(str(email.get("max_frequency", "60s"))),
            otp_length=int(email.get("otp_length", defaults.otp_length)),
            otp_expiry_s=int(email.get("otp_expiry", defaults.otp_expiry_s)),
            rate_limits=RateLimits(
                **{
                    f.name: int(limits.get(f.name, getattr(RateLimits(), f.name)))
                    for f in dataclasses.fields(RateLimits)
                }
            ),
            send_email_hook=hook,
        )
    except (TypeError, ValueError) as exc:
        raise AuthConfigError(f"supabase/config.toml: {exc}") from None


def load_config(path: Path, environ: Mapping[str, str] = os.environ) -> AuthConfig:
    try:
        document = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise AuthConfigError(f"cannot read {path}: {exc}") from None
    return parse_config(document, environ)
