"""Claim checks for Supabase access tokens and xtyl service tokens.

Pure functions over an already signature-checked payload and an explicit ``now``: no clock, no
I/O, so every rule is tested with exact times.
"""

from __future__ import annotations

import math
import re
import uuid
from typing import Any, Final, cast

import msgspec

from xtyl_common.auth import codes
from xtyl_common.auth.codes import rejected
from xtyl_common.auth.principals import ServicePrincipal, UserPrincipal

USER_AUDIENCE: Final = "authenticated"
USER_ROLE: Final = "authenticated"
SERVICE_AUDIENCE: Final = "xtyl-internal"
SERVICE_ISSUER: Final = "xtyl-internal"
SERVICE_SUBJECT_PREFIX: Final = "service:"
SERVICE_NAME = re.compile(r"[a-z][a-z0-9_-]{0,62}")
MAX_SERVICE_TOKEN_TTL_S: Final = 300
_CANONICAL_UUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")


class TokenClaims(msgspec.Struct, frozen=True):
    """The claims we read. Every one is optional here so that absence gets its own code."""

    iss: str | None = None
    sub: str | None = None
    aud: str | list[str] | None = None
    exp: float | None = None
    iat: float | None = None
    nbf: float | None = None
    role: str | None = None
    email: str | None = None
    session_id: str | None = None
    aal: str | None = None
    is_anonymous: bool | None = None
    user_id: str | None = None  # service tokens: the user a call is made for
    #: Supabase's authentication methods of the session: [{"method", "timestamp"}, ...].
    #: Read leniently (a shape we do not know is no reason to refuse a token).
    amr: Any = None


_claims_decoder = msgspec.json.Decoder(TokenClaims)


def authenticated_at(amr: Any) -> int | None:
    """When the user last proved who they are in this session (a password, a link, an OTP):
    the latest ``timestamp`` of Supabase's ``amr`` claim; ``None`` when it says nothing."""
    if not isinstance(amr, list):
        return None
    stamps = [
        int(item["timestamp"])
        for item in cast("list[Any]", amr)
        if isinstance(item, dict)
        and isinstance(item.get("timestamp"), int | float)
        and not isinstance(item.get("timestamp"), bool)
    ]
    return max(stamps) if stamps else None


def decode_claims(payload: bytes) -> TokenClaims:
    try:
        return _claims_decoder.decode(payload)
    except ValueError:  # msgspec.MsgspecError, or UnicodeDecodeError for invalid UTF-8
        raise rejected(codes.INVALID_CLAIMS, "token payload is not a valid claims object") from None


def refuse_api_keys(claims: TokenClaims) -> None:
    """Supabase's anon and service-role keys are JWTs too; say so rather than a vague 401."""
    if claims.role == "anon":
        raise rejected(codes.ANON_KEY, "the anon key is not a user access token; sign in first")
    if claims.role == "service_role":
        raise rejected(codes.SERVICE_ROLE_KEY, "the service-role key is not accepted here")


def _timestamp(value: float | None, name: str) -> int:
    if value is None:
        raise rejected(codes.MISSING_CLAIM, f"token has no {name} claim")
    if not math.isfinite(value) or value < 0:
        raise rejected(codes.INVALID_CLAIMS, f"token {name} claim is not a timestamp")
    return int(value)


def check_times(claims: TokenClaims, *, now: float, leeway_s: int) -> tuple[int, int]:
    """Check ``exp``, ``iat`` and ``nbf`` against ``now``; returns (iat, exp)."""
    exp = _timestamp(claims.exp, "exp")
    iat = _timestamp(claims.iat, "iat")
    if exp <= now - leeway_s:
        raise rejected(codes.TOKEN_EXPIRED, "token has expired")
    if iat > now + leeway_s:
        raise rejected(codes.TOKEN_NOT_YET_VALID, "token is issued in the future")
    if claims.nbf is not None and _timestamp(claims.nbf, "nbf") > now + leeway_s:
        raise rejected(codes.TOKEN_NOT_YET_VALID, "token is not valid yet")
    if exp <= iat:
        raise rejected(codes.INVALID_LIFETIME, "token expires before it is issued")
    return iat, exp


def _has_audience(aud: str | list[str] | None, expected: str) -> bool:
    if isinstance(aud, str):
        return aud == expected
    return aud is not None and expected in aud


def user_principal(
    claims: TokenClaims, *, token: str, now: float, leeway_s: int, issuer: str | None
) -> UserPrincipal:
    """Apply every rule for a Supabase user access token."""
    refuse_api_keys(claims)
    _, exp = check_times(claims, now=now, leeway_s=leeway_s)
    if claims.aud is None:
        raise rejected(codes.MISSING_CLAIM, "token has no aud claim")
    if not _has_audience(claims.aud, USER_AUDIENCE):
        raise rejected(codes.INVALID_AUDIENCE, "token is not meant for this API")
    if issuer is not None and claims.iss != issuer:
        raise rejected(codes.INVALID_ISSUER, "token was issued by another project")
    if claims.role is None:
        raise rejected(codes.MISSING_CLAIM, "token has no role claim")
    if claims.role != USER_ROLE:
        raise rejected(codes.INVALID_ROLE, "token role is not authenticated")
    if claims.sub is None:
        raise rejected(codes.MISSING_CLAIM, "token has no sub claim")
    user_id = parse_uuid(claims.sub)
    if user_id is None:
        raise rejected(codes.INVALID_SUBJECT, "token sub is not a user id")
    return UserPrincipal(
        user_id=user_id,
        email=claims.email or None,
        role=claims.role,
        session_id=claims.session_id,
        aal=claims.aal,
        is_anonymous=bool(claims.is_anonymous),
        expires_at=exp,
        authenticated_at=authenticated_at(claims.amr),
        access_token=token,
    )


def service_principal(claims: TokenClaims, *, now: float, leeway_s: int) -> ServicePrincipal:
    """Apply every rule for an xtyl service token."""
    iat, exp = check_times(claims, now=now, leeway_s=leeway_s)
    if exp - iat > MAX_SERVICE_TOKEN_TTL_S:
        raise rejected(codes.INVALID_LIFETIME, "service token lives too long")
    if claims.aud != SERVICE_AUDIENCE:
        raise rejected(codes.INVALID_AUDIENCE, "token is not a service token")
    if claims.iss != SERVICE_ISSUER:
        raise rejected(codes.INVALID_ISSUER, "token is not a service token")
    sub = claims.sub or ""
    name = sub.removeprefix(SERVICE_SUBJECT_PREFIX)
    if not sub.startswith(SERVICE_SUBJECT_PREFIX) or SERVICE_NAME.fullmatch(name) is None:
        raise rejected(codes.INVALID_SUBJECT, "token sub does not name a service")
    user_id = None
    if claims.user_id is not None:
        user_id = parse_uuid(claims.user_id)
        if user_id is None:
            raise rejected(codes.INVALID_CLAIMS, "service token user_id is not a UUID")
    return ServicePrincipal(service=name, expires_at=exp, user_id=user_id)


def parse_uuid(value: str) -> uuid.UUID | None:
    """Only the canonical hyphenated form, as Supabase writes user ids; never the nil UUID."""
    if _CANONICAL_UUID.fullmatch(value) is None:
        return None
    parsed = uuid.UUID(value)
    return None if parsed.int == 0 else parsed
