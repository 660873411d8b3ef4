"""The storage service's outbox (``xtyl_storage.outbox``, migration 0003): an event is written
on the caller's connection, in the transaction of the row change it announces. The relay that
:func:`~xtyl_storage.service.open_service` starts publishes the rows to the ``files`` stream.
"""

from __future__ import annotations

import asyncpg

from xtyl_common.events.contracts import Event
from xtyl_common.events.outbox import add_event

#: The schema whose outbox holds our events.
OUTBOX_SCHEMA = "xtyl_storage"


async def record_event(conn: asyncpg.Connection, event: Event) -> None:
    """Append ``event`` to our outbox on ``conn`` (inside the transaction of the change)."""
    await add_event(conn, event, schema=OUTBOX_SCHEMA)
