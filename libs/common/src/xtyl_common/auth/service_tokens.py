"""Short-lived tokens for calls with no user behind them (workers, service to service).

Signed HS256 with the internal secret (never the Supabase secret), with ``aud`` and ``iss``
``xtyl-internal`` and ``sub`` ``service:<name>``: they can never pass the user checks (wrong
key, audience, role and a ``sub`` that is not a UUID), and a user token can never pass the
service checks.
"""

from __future__ import annotations

import time
import uuid

import jwt

from xtyl_common.auth.claims import (
    MAX_SERVICE_TOKEN_TTL_S,
    SERVICE_AUDIENCE,
    SERVICE_ISSUER,
    SERVICE_NAME,
    SERVICE_SUBJECT_PREFIX,
)
from xtyl_common.auth.config import MIN_SECRET_CHARS
from xtyl_common.auth.keys import HS256


def issue_service_token(
    secret: str,
    *,
    service: str,
    ttl_s: int = 60,
    user_id: uuid.UUID | None = None,
    now: float | None = None,
) -> str:
    """A service token for ``service`` (``[a-z][a-z0-9_-]*``), valid ``ttl_s`` ≤ 300 seconds.

    ``secret`` is ``AuthConfig.internal_secret``; ``user_id`` names the user a call is made
    for, if any; ``now`` is for tests.
    """
    if len(secret) < MIN_SECRET_CHARS:
        raise ValueError(f"internal secret must be at least {MIN_SECRET_CHARS} characters")
    if SERVICE_NAME.fullmatch(service) is None:
        raise ValueError(f"service name {service!r} must match {SERVICE_NAME.pattern}")
    if not 0 < ttl_s <= MAX_SERVICE_TOKEN_TTL_S:
        raise ValueError(f"ttl_s must be in (0, {MAX_SERVICE_TOKEN_TTL_S}]")
    iat = int(time.time() if now is None else now)
    claims: dict[str, object] = {
        "iss": SERVICE_ISSUER,
        "aud": SERVICE_AUDIENCE,
        "sub": SERVICE_SUBJECT_PREFIX + service,
        "iat": iat,
        "exp": iat + ttl_s,
        "jti": uuid.uuid4().hex,
    }
    if user_id is not None:
        claims["user_id"] = str(user_id)
    return jwt.encode(claims, secret, algorithm=HS256, headers={"typ": "JWT"})
