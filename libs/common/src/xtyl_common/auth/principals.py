"""Who a verified token speaks for."""

from __future__ import annotations

import uuid

import msgspec


class UserPrincipal(msgspec.Struct, frozen=True, kw_only=True):
    """A signed-in Supabase user, from a verified access token.

    ``access_token`` is the raw token, kept to forward it to other services; it is left out of
    ``repr`` so logging a principal never leaks it. Do not encode a principal into a response.
    """

    user_id: uuid.UUID
    email: str | None
    role: str
    session_id: str | None
    aal: str | None
    is_anonymous: bool
    expires_at: int
    access_token: str
    #: When the user last signed in (or otherwise proved who they are) in this session, from
    #: the token's ``amr``; ``None`` when the token does not say.
    authenticated_at: int | None = None

    def __repr__(self) -> str:
        return (
            f"UserPrincipal(user_id={self.user_id!s}, role={self.role!r}, aal={self.aal!r}, "
            f"is_anonymous={self.is_anonymous}, expires_at={self.expires_at})"
        )


class ServicePrincipal(msgspec.Struct, frozen=True, kw_only=True):
    """An internal caller with no user session (a worker, another service).

    ``user_id`` is the user the call is made for, when the issuer named one.
    """

    service: str
    expires_at: int
    user_id: uuid.UUID | None = None
