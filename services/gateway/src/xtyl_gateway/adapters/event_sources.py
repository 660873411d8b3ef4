"""What the gateway announces again when Redis lost events its outbox no longer holds.

``user.created`` leaves ``auth.users`` through a trigger that writes the gateway's outbox
(migration 0005). The relay's recovery (:mod:`xtyl_common.events.recovery`) and ``make replay``
call :data:`USERS_SOURCE` with a moment: every user created since then gets its
``user.created`` again, with the payload the trigger writes. notify sends one welcome email
per user whatever it is told, so announcing a user twice is harmless.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg

from xtyl_common.events.contracts import USERS, Event, UserCreated, UserCreatedPayload
from xtyl_common.events.recovery import EventSource

#: The gateway's outbox (migration 0005 installs it; the auth.users trigger writes it).
OUTBOX_SCHEMA = "xtyl_gateway"
PRODUCER = "gateway"
_TIMEOUT_S = 60.0


async def users_created_since(conn: asyncpg.Connection, since: datetime) -> list[Event]:
    rows = await conn.fetch(
        "select id, email, full_name from public.users where created_at >= $1"
        " order by created_at, id",
        since,
        timeout=_TIMEOUT_S,
    )
    return [
        UserCreated(
            producer=PRODUCER,
            payload=UserCreatedPayload(
                user_id=row["id"], email=row["email"], full_name=row["full_name"]
            ),
        )
        for row in rows
    ]


USERS_SOURCE = EventSource(
    name="gateway.users", schema=OUTBOX_SCHEMA, domain=USERS, scan=users_created_since
)
#: Every source of this service (given to its relay, and to ``make replay``).
EVENT_SOURCES: tuple[EventSource, ...] = (USERS_SOURCE,)
