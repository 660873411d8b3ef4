"""Re-emit events for work stuck in a non-final database state (Postgres is the truth).

After Redis lost its data (or an entry was dead-lettered and the cause fixed), rows can sit in
a state such as ``documents.status = 'pending'`` with no event left to move them on. A service
gives a query that finds them and builds the events that should have moved them; an arq cron
job writes those events to the service's outbox again, and the relay publishes them::

    async def find_unindexed(conn: asyncpg.Connection) -> list[Event]:
        rows = await conn.fetch(
            "select ... from rag.documents where status = 'pending'"
            " and updated_at < now() - interval '15 minutes'")
        return [FileUploaded(producer="rag", payload=...) for row in rows]

    cron_jobs=[reconciler_cron(find_unindexed, schema="rag", pool_key="db", minute={0, 30})]

The query decides what "stuck" means (give work time to finish: handlers are idempotent, but
re-emitting running work wastes it). An event equal (type and payload) to one still waiting in
the outbox is not written twice; each one written is a new occurrence with a new ``id``.

The reconciler has no loop of its own to die: arq runs each pass as a cron job, and the next
pass comes on schedule whatever became of this one. A pass that finds Postgres unreachable
logs ``reconcile_skipped`` (a warning: the next pass finds the same work); any other failure
is raised to arq, which logs it with its traceback.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast
from uuid import uuid4

import asyncpg
import msgspec
import structlog
from arq.cron import CronJob, cron
from arq.typing import OptionType

from xtyl_common.db import DB_UNAVAILABLE_ERRORS
from xtyl_common.events.contracts import Event
from xtyl_common.events.outbox import Connection, add_event, check_schema_name
from xtyl_common.supervise import describe

log = structlog.stdlib.get_logger("xtyl.events.reconciler")

FindStuck = Callable[[asyncpg.Connection], Awaitable[Sequence[Event]]]

_payload_encoder = msgspec.json.Encoder()
_STILL_WAITING = (
    "select exists (select 1 from {outbox} where published_at is null"
    " and type = $1 and payload = $2::text::jsonb)"
)


async def reemit_stuck(
    conn: Connection, *, schema: str, find_stuck: FindStuck, timeout_s: float = 30.0
) -> int:
    """Write the events ``find_stuck`` returns to ``<schema>.outbox``, in one transaction;
    returns how many were written."""
    still_waiting = _STILL_WAITING.format(outbox=f"{check_schema_name(schema)}.outbox")
    written = 0
    async with conn.transaction():
        events = await find_stuck(cast(asyncpg.Connection, conn))
        for event in events:
            payload = _payload_encoder.encode(getattr(event, "payload", None)).decode()
            if await conn.fetchval(still_waiting, event.type, payload, timeout=timeout_s):
                continue
            reemitted = msgspec.structs.replace(event, id=uuid4())
            await add_event(conn, reemitted, schema=schema, timeout_s=timeout_s)
            written += 1
    if written:
        log.info("events_reemitted", schema=schema, count=written, found=len(events))
    return written


def reconciler_cron(
    find_stuck: FindStuck,
    *,
    schema: str,
    pool_key: str = "db",
    name: str | None = None,
    hour: OptionType = None,
    minute: OptionType = None,
    second: OptionType = 0,
    run_at_startup: bool = False,
    timeout_s: float = 60.0,
) -> CronJob:
    """An arq cron job running :func:`reemit_stuck` with the asyncpg pool at ``ctx[pool_key]``
    (every minute unless ``hour``/``minute``/``second`` say otherwise)."""
    check_schema_name(schema)
    job_name = name or f"xtyl_reconcile_{schema}"

    async def reconcile(ctx: dict[Any, Any]) -> int:
        pool: asyncpg.Pool = ctx[pool_key]
        try:
            async with pool.acquire(timeout=timeout_s) as conn:
                return await reemit_stuck(
                    conn, schema=schema, find_stuck=find_stuck, timeout_s=timeout_s
                )
        except DB_UNAVAILABLE_ERRORS as exc:
            log.warning("reconcile_skipped", schema=schema, error=describe(exc))
            return 0

    reconcile.__qualname__ = job_name
    return cron(
        reconcile,
        name=job_name,
        hour=hour,
        minute=minute,
        second=second,
        run_at_startup=run_at_startup,
        timeout=timeout_s,
    )
