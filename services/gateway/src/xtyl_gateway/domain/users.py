"""A user as the gateway knows one: the application's copy of ``auth.users``."""

from __future__ import annotations

import uuid
from datetime import datetime

import msgspec


class UserProfile(msgspec.Struct, frozen=True):
    """A ``public.users`` row, kept in step with ``auth.users`` by database triggers."""

    id: uuid.UUID
    email: str | None
    full_name: str
    created_at: datetime
    updated_at: datetime
