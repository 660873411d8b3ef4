"""Who is calling: token settings shared by every service, and Litestar dependencies.

Every service verifies the bearer token again (the gateway forwards it unchanged), so a service
reached directly is no weaker than the gateway. User routes take ``user: UserPrincipal``;
internal routes take ``service: ServicePrincipal`` (a short-lived token signed with the internal
secret, whose audience no user token can satisfy).
"""

from __future__ import annotations

import uuid
from typing import Any

import structlog
from litestar import Request
from litestar.di import Provide

from xtyl_common.auth import (
    AuthConfig,
    ServicePrincipal,
    TokenVerifier,
    UserPrincipal,
    bearer_token,
)
from xtyl_common.errors import Forbidden
from xtyl_common.settings import BaseSettings

VERIFIER_STATE_KEY = "verifier"


class AuthSettings(BaseSettings, frozen=True, kw_only=True):
    """``SUPABASE_URL`` (JWKS, ES256/RS256, exact ``iss``) and/or ``SUPABASE_JWT_SECRET``
    (legacy HS256); ``INTERNAL_JWT_SECRET`` signs service-to-service tokens."""

    supabase_url: str | None = None
    supabase_jwt_secret: str | None = None
    internal_jwt_secret: str
    supabase_anon_key: str | None = None
    supabase_service_role_key: str | None = None
    jwt_leeway_s: int = 10

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.supabase_url is None and self.supabase_jwt_secret is None:
            raise ValueError(
                "set SUPABASE_URL (signing keys) or SUPABASE_JWT_SECRET (legacy secret)"
                " (at `$.supabase_url`)"
            )
        try:
            self.auth_config()
        except ValueError as exc:
            raise ValueError(f"{exc} (at `$.internal_jwt_secret`)") from None

    def auth_config(self) -> AuthConfig:
        return AuthConfig(
            supabase_url=self.supabase_url,
            jwt_secret=self.supabase_jwt_secret,
            internal_secret=self.internal_jwt_secret,
            anon_key=self.supabase_anon_key,
            service_role_key=self.supabase_service_role_key,
            leeway_s=self.jwt_leeway_s,
        )


def verifier_of(request: Request[Any, Any, Any]) -> TokenVerifier:
    verifier: TokenVerifier = request.app.state[VERIFIER_STATE_KEY]
    return verifier


async def current_user(request: Request[Any, Any, Any]) -> UserPrincipal:
    token = bearer_token(request.headers.get("authorization"))
    user = await verifier_of(request).verify_user_token(token)
    structlog.contextvars.bind_contextvars(user_id=str(user.user_id))
    return user


async def current_service(request: Request[Any, Any, Any]) -> ServicePrincipal:
    token = bearer_token(request.headers.get("authorization"))
    return await verifier_of(request).verify_service_token(token)


async def acting_user(request: Request[Any, Any, Any]) -> uuid.UUID:
    """The user an internal call is made for: a service token that names one (the gateway's
    ``/v1/me/*`` fan-out), ``403 user_required`` for one that does not."""
    service = await current_service(request)
    if service.user_id is None:
        raise Forbidden(
            "this route answers for one user: the service token must name it", code="user_required"
        )
    structlog.contextvars.bind_contextvars(user_id=str(service.user_id))
    return service.user_id


#: ``dependencies=USER`` on a controller gives its handlers ``user: UserPrincipal``.
USER = {"user": Provide(current_user)}
SERVICE = {"service": Provide(current_service)}
#: ``dependencies=ON_BEHALF`` (internal ``/internal/me/*`` routes) gives ``user_id: UUID``, the
#: user a service token names.
ON_BEHALF = {"user_id": Provide(acting_user)}
