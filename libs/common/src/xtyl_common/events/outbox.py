"""Writing events to a service's outbox, inside the caller's transaction.

A service declares its outbox once, in one of its own migrations (the function comes from the
``common`` migration set, applied before every service's)::

    -- services/storage/src/xtyl_storage/migrations/0002_outbox.sql
    select xtyl_events.install_outbox('storage');

and appends events in the transaction that makes the change::

    async with conn.transaction():
        await conn.execute("insert into storage.files ...")
        await add_event(conn, FileUploaded(producer="storage", payload=...), schema="storage")

The row becomes visible to the relay only when the transaction commits, so an event is never
published for a change that was rolled back, and never lost for one that committed. SQL code
(triggers) calls ``xtyl_events.add_event(schema, stream, type, payload, producer, ...)``.

The event's trace context (``traceparent``, ``tracestate``: the current one when the event was
made) is written with it, so the worker that handles the event continues the trace.
"""

from __future__ import annotations

import re

import asyncpg
import msgspec
from asyncpg.pool import PoolConnectionProxy

from xtyl_common.events.contracts import Event

#: A plain connection or one borrowed from a pool.
Connection = asyncpg.Connection | PoolConnectionProxy

_SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]*$")
_payload_encoder = msgspec.json.Encoder()

_ADD_EVENT = (
    "select xtyl_events.add_event($1, $2, $3, $4::text::jsonb, $5, $6, $7, $8, $9, $10, $11)"
)


def check_schema_name(schema: str) -> str:
    """``schema`` if it is a plain lower-case identifier (what ``install_outbox`` accepts)."""
    if not _SCHEMA_RE.match(schema):
        raise ValueError(f"outbox schema {schema!r} is not a plain lower-case identifier")
    return schema


async def add_event(
    conn: Connection, event: Event, *, schema: str, timeout_s: float = 10.0
) -> None:
    """Append ``event`` to ``<schema>.outbox`` on ``conn`` (call it inside a transaction)."""
    payload: object = getattr(event, "payload", None)
    await conn.execute(
        _ADD_EVENT,
        check_schema_name(schema),
        event.domain,
        event.type,
        _payload_encoder.encode(payload).decode(),
        event.producer,
        event.request_id,
        event.version,
        event.id,
        event.occurred_at,
        event.traceparent,
        event.tracestate,
        timeout=timeout_s,
    )


async def install_outbox(conn: Connection, schema: str, *, timeout_s: float = 10.0) -> None:
    """``select xtyl_events.install_outbox(schema)``: for tests and ad-hoc tools; services do it
    in a migration."""
    await conn.execute(
        "select xtyl_events.install_outbox($1)", check_schema_name(schema), timeout=timeout_s
    )
