"""The JSON bodies the gateway answers itself (msgspec Structs at the edge)."""

from __future__ import annotations

import uuid
from datetime import datetime

import msgspec

from xtyl_gateway.domain.users import UserProfile


# GET /v1/me (a docstring here would become the schema's description in the document)
class User(msgspec.Struct, frozen=True):
    id: uuid.UUID
    email: str | None
    full_name: str
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, profile: UserProfile) -> User:
        return cls(
            id=profile.id,
            email=profile.email,
            full_name=profile.full_name,
            created_at=profile.created_at,
            updated_at=profile.updated_at,
        )


# DELETE /v1/me (202)
class DeletionAccepted(msgspec.Struct, frozen=True, kw_only=True):
    user_id: uuid.UUID
    status: str
    #: Where to follow the erasure: GET this path.
    progress: str
