"""The stable ``code`` of every 401 that token verification can answer.

Clients and dashboards key on these strings: add new ones, never rename one.
"""

from __future__ import annotations

from typing import Final

from xtyl_common.errors import Unauthorized

# Authorization header
MISSING_TOKEN: Final = "missing_token"
MALFORMED_AUTHORIZATION: Final = "malformed_authorization"
# Shape of the compact JWS
TOKEN_TOO_LARGE: Final = "token_too_large"
MALFORMED_TOKEN: Final = "malformed_token"
FORBIDDEN_HEADER: Final = "forbidden_header"
ALG_NONE: Final = "alg_none"
MISSING_SIGNATURE: Final = "missing_signature"
# Keys and signature
UNSUPPORTED_ALGORITHM: Final = "unsupported_algorithm"
MISSING_KID: Final = "missing_kid"
UNKNOWN_KEY: Final = "unknown_key"
ALGORITHM_MISMATCH: Final = "algorithm_mismatch"
INVALID_SIGNATURE: Final = "invalid_signature"
# Supabase API keys sent where a user's access token belongs
ANON_KEY: Final = "anon_key"
SERVICE_ROLE_KEY: Final = "service_role_key"
# Claims
INVALID_CLAIMS: Final = "invalid_claims"
MISSING_CLAIM: Final = "missing_claim"
TOKEN_EXPIRED: Final = "token_expired"
TOKEN_NOT_YET_VALID: Final = "token_not_yet_valid"
INVALID_AUDIENCE: Final = "invalid_audience"
INVALID_ISSUER: Final = "invalid_issuer"
INVALID_SUBJECT: Final = "invalid_subject"
INVALID_ROLE: Final = "invalid_role"
INVALID_LIFETIME: Final = "invalid_lifetime"


def rejected(code: str, detail: str) -> Unauthorized:
    """The error for a refused token. ``detail`` must never contain the token."""
    return Unauthorized(detail, code=code)
