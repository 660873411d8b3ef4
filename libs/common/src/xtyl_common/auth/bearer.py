"""The token from an ``Authorization`` header, independent of any web framework."""

from __future__ import annotations

from xtyl_common.auth import codes
from xtyl_common.auth.codes import rejected


def bearer_token(authorization_header: str | None) -> str:
    """``Bearer <token>`` (scheme case-insensitive, RFC 6750 §2.1) → ``<token>``."""
    if authorization_header is None or not authorization_header.strip():
        raise rejected(codes.MISSING_TOKEN, "an Authorization: Bearer token is required")
    scheme, _, token = authorization_header.strip().partition(" ")
    token = token.strip(" ")
    if scheme.lower() != "bearer" or not token or " " in token:
        raise rejected(
            codes.MALFORMED_AUTHORIZATION, "the Authorization header must be 'Bearer <token>'"
        )
    return token
