"""Configuration of token verification: one frozen struct, checked when it is built."""

from __future__ import annotations

import hmac
from urllib.parse import urlsplit

import msgspec

MAX_LEEWAY_S = 30
MAX_JWKS_TTL_S = 600.0
MIN_SECRET_CHARS = 32


class AuthConfig(msgspec.Struct, frozen=True, kw_only=True):
    """How tokens are verified. Build it once from the service's settings.

    ``supabase_url`` enables ES256/RS256 keys from ``<supabase_url>/auth/v1/.well-known/jwks.json``
    and the exact ``iss`` check; ``jwt_secret`` enables the legacy HS256 secret. At least one of
    the two is required. ``internal_secret`` signs service tokens and must differ from
    ``jwt_secret``. A bad value raises ``ValueError`` (``msgspec.ValidationError`` when decoded),
    naming the field, so a misconfigured service stops at start-up.
    """

    supabase_url: str | None = None
    jwt_secret: str | None = None
    internal_secret: str
    anon_key: str | None = None
    service_role_key: str | None = None
    leeway_s: int = 10
    max_token_bytes: int = 8192
    jwks_ttl_s: float = 600.0
    jwks_refetch_cooldown_s: float = 30.0
    jwks_timeout_s: float = 3.0
    jwks_max_stale_s: float = 3600.0
    verified_cache_size: int = 10_000

    def __post_init__(self) -> None:
        if self.supabase_url is None and self.jwt_secret is None:
            raise ValueError("auth: set supabase_url (JWKS) or jwt_secret (HS256), or both")
        if self.supabase_url is not None:
            _check_url(self.supabase_url)
        _check_secrets(self.jwt_secret, self.internal_secret)
        _check_range("leeway_s", self.leeway_s, 0, MAX_LEEWAY_S)
        _check_range("jwks_ttl_s", self.jwks_ttl_s, 1, MAX_JWKS_TTL_S)
        _check_range("jwks_refetch_cooldown_s", self.jwks_refetch_cooldown_s, 0, MAX_JWKS_TTL_S)
        _check_range("jwks_timeout_s", self.jwks_timeout_s, 0.01, 30)
        _check_range("jwks_max_stale_s", self.jwks_max_stale_s, self.jwks_ttl_s, 7 * 86_400)
        _check_range("max_token_bytes", self.max_token_bytes, 512, 65_536)
        _check_range("verified_cache_size", self.verified_cache_size, 0, 1_000_000)

    @property
    def issuer(self) -> str | None:
        """The exact ``iss`` of the project's access tokens, or None without ``supabase_url``."""
        if self.supabase_url is None:
            return None
        return self.supabase_url.rstrip("/") + "/auth/v1"

    @property
    def jwks_url(self) -> str | None:
        """The only URL keys are ever fetched from."""
        issuer = self.issuer
        return None if issuer is None else issuer + "/.well-known/jwks.json"

    def __repr__(self) -> str:
        return (
            f"AuthConfig(supabase_url={self.supabase_url!r}, "
            f"jwt_secret={'<set>' if self.jwt_secret else None}, internal_secret=<set>, "
            f"leeway_s={self.leeway_s}, jwks_ttl_s={self.jwks_ttl_s:g})"
        )


def _check_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError("auth: supabase_url must be an absolute http(s) URL")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError("auth: supabase_url must not carry credentials, query or fragment")


def _check_secrets(jwt_secret: str | None, internal_secret: str) -> None:
    for name, secret in (("jwt_secret", jwt_secret), ("internal_secret", internal_secret)):
        if secret is not None and len(secret) < MIN_SECRET_CHARS:
            raise ValueError(f"auth: {name} must be at least {MIN_SECRET_CHARS} characters")
    if jwt_secret is not None and hmac.compare_digest(
        jwt_secret.encode(), internal_secret.encode()
    ):
        raise ValueError("auth: internal_secret must differ from jwt_secret")


def _check_range(name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise ValueError(f"auth: {name} must be between {low:g} and {high:g}, not {value:g}")
