"""``python -m xtyl_common.events.replay --since 2h``: publish again what Redis may have lost.

What a relay does by itself when it notices that Redis lost its data
(:mod:`xtyl_common.events.recovery`), on demand and from a moment an operator gives:

1. every outbox row published at or after ``--since`` is queued again (``published_at`` back
   to null); the running relays publish them within a poll interval, in order;
2. each ``--source module:NAME`` (an :class:`~xtyl_common.events.recovery.EventSource`, or a
   sequence of them, e.g. ``xtyl_storage.adapters.event_sources:EVENT_SOURCES``) writes the
   events that re-create, from its service's own tables, what changed since then: for what
   the outbox no longer holds (rows are pruned after ``EVENTS_OUTBOX_RETENTION_S``). An event
   equal to a row already queued is not written twice.

Handlers are idempotent, so replaying more than was lost is safe. ``--since`` is an ISO 8601
time (UTC when it has no offset) or a duration back from now (``90s``, ``15m``, ``2h``, ``3d``).
``--schema`` limits step 1 to some outboxes (default: every outbox of the database),
``--stream`` to some streams (``files``, ``users``, ``documents``); ``--dry-run`` only counts.
Reads ``DATABASE_URL``. Exit 0 when done, 1 when Postgres cannot be reached, 2 on bad input.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import re
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import asyncpg

from xtyl_common.db import redact_url
from xtyl_common.events.outbox import check_schema_name
from xtyl_common.events.recovery import (
    EventSource,
    outbox_schemas,
    reemit_from_sources,
    requeue_published_since,
)

_TIMEOUT_S = 60.0
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_COUNT_SINCE = (
    "select count(*) from {outbox} where published_at >= $1"
    " and ($2::text[] is null or stream = any($2::text[]))"
)


class ReplayInputError(ValueError):
    """An argument that cannot be used; the message says which and why."""


def parse_since(text: str, *, now: datetime | None = None) -> datetime:
    """``2h`` (back from ``now``) or an ISO 8601 time (UTC when it has no offset)."""
    now = now or datetime.now(UTC)
    match = _DURATION.match(text.strip())
    if match:
        return now - timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ReplayInputError(
            f"--since {text!r} is neither an ISO 8601 time nor a duration such as 2h"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def load_sources(specs: Sequence[str]) -> list[EventSource]:
    """Import each ``module:NAME`` (an EventSource or a sequence of them)."""
    sources: list[EventSource] = []
    for spec in specs:
        module_name, _, attribute = spec.partition(":")
        if not module_name or not attribute:
            raise ReplayInputError(f"--source {spec!r} is not module:NAME")
        try:
            value: object = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as exc:
            raise ReplayInputError(f"--source {spec!r} cannot be loaded: {exc}") from None
        found: list[object] = list(value) if isinstance(value, list | tuple) else [value]  # pyright: ignore[reportUnknownArgumentType]
        for item in found:
            if not isinstance(item, EventSource):
                raise ReplayInputError(f"--source {spec!r} is not an EventSource")
            sources.append(item)
    return sources


async def replay(
    conn: asyncpg.Connection,
    since: datetime,
    *,
    schemas: Sequence[str] | None = None,
    streams: Sequence[str] | None = None,
    sources: Sequence[EventSource] = (),
    dry_run: bool = False,
) -> list[str]:
    """Steps 1 and 2 of the module docstring; one line of report per outbox and source."""
    chosen = list(schemas) if schemas else await outbox_schemas(conn, timeout_s=_TIMEOUT_S)
    domains = list(streams) if streams else None
    lines: list[str] = []
    reason = f"make replay --since {since.isoformat()}"
    async with conn.transaction():
        for schema in chosen:
            if dry_run:
                count = await conn.fetchval(
                    _COUNT_SINCE.format(outbox=f"{check_schema_name(schema)}.outbox"),
                    since,
                    domains,
                    timeout=_TIMEOUT_S,
                )
                lines.append(f"{schema}: {count} outbox rows published since then (dry run)")
                continue
            queued = await requeue_published_since(
                conn, schema, since, domains=domains, reason=reason, timeout_s=_TIMEOUT_S
            )
            lines.append(f"{schema}: {queued} outbox rows published since then queued again")
        wanted = [s for s in sources if domains is None or s.domain in domains]
        if wanted and not dry_run:
            written = await reemit_from_sources(conn, wanted, since, timeout_s=_TIMEOUT_S)
            for source in wanted:
                lines.append(
                    f"{source.name}: {written[source.name]} events written to"
                    f" {source.schema}.outbox (events equal to one waiting there are not)"
                )
        elif wanted:
            lines += [f"{source.name}: not scanned (dry run)" for source in wanted]
    return lines


async def _run(
    url: str,
    since: datetime,
    *,
    schemas: Sequence[str] | None,
    streams: Sequence[str] | None,
    sources: Sequence[EventSource],
    dry_run: bool,
) -> list[str]:
    conn = await asyncpg.connect(url, timeout=10, command_timeout=_TIMEOUT_S)
    try:
        return await replay(
            conn, since, schemas=schemas, streams=streams, sources=sources, dry_run=dry_run
        )
    finally:
        await conn.close(timeout=10)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m xtyl_common.events.replay",
        description="Publish again the events of outbox rows published since a moment, and"
        " re-create from the services' tables what the outboxes no longer hold (DATABASE_URL).",
    )
    parser.add_argument("--since", required=True, help="ISO 8601 time, or a duration: 2h, 3d")
    parser.add_argument("--schema", action="append", help="an outbox's schema (repeatable)")
    parser.add_argument("--stream", action="append", help="files, users, documents (repeatable)")
    parser.add_argument("--source", action="append", default=[], help="module:NAME (repeatable)")
    parser.add_argument("--dry-run", action="store_true", help="count, change nothing")
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL", ""))
    args = parser.parse_args(argv)
    try:
        since = parse_since(args.since)
        schemas = [check_schema_name(s) for s in args.schema] if args.schema else None
        sources = load_sources(args.source)
    except ValueError as exc:  # ReplayInputError, or a schema name check_schema_name refused
        print(f"replay: {exc}", file=sys.stderr)
        return 2
    if not args.database_url:
        print("replay: set DATABASE_URL (or --database-url)", file=sys.stderr)
        return 2
    try:
        lines = asyncio.run(
            _run(
                args.database_url,
                since,
                schemas=schemas,
                streams=args.stream,
                sources=sources,
                dry_run=args.dry_run,
            )
        )
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        where = redact_url(args.database_url)
        print(f"replay: cannot replay with the database at {where}: {reason}", file=sys.stderr)
        return 1
    print(f"replay since {since.isoformat()}:")
    for line in lines:
        print(f"  {line}")
    if not args.dry_run:
        print("the running outbox relays publish what was queued within a poll interval")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
