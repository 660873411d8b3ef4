"""Noticing that Redis lost its data, and putting back what it held (Postgres is the truth).

A Redis that restarts empty (a managed failover without persistence, a wiped node) takes with
it every stream entry not yet handled, while the outboxes say those rows were published. Each
outbox relay runs a :class:`StreamRecovery` (every ``recovery_check_interval_s``) that:

1. reads the **epoch**: a random token in ``<stream_prefix>:epoch``, written with ``SET NX`` by
   whoever finds it missing. Nothing deletes it but a loss of data, so a token different from
   the one recorded in ``xtyl_events.stream_checkpoints`` means the entries are gone;
2. while the epoch holds, records per stream the **replay point**: the first entry id that a
   consumer group may not have handled yet (its oldest pending entry, else the entry after the
   last one delivered to it; the lowest over all groups; never below the stream's first entry);
3. when the epoch changed, queues again every outbox row published at or after the replay point
   (``published_at`` back to null, in one transaction that locks the checkpoint, so one relay
   replica does it): the relay publishes them right away, in order. Handlers are idempotent,
   so what was handled already and comes again is harmless;
4. where the outbox may no longer hold the lost rows (the replay point is older than
   ``outbox_retention_s``, so they may have been pruned), asks the producer's **sources**
   (:class:`EventSource`: events re-created from the service's own tables, e.g. every ready
   file since a moment) and writes those to the outbox too.

The first check of a relay against a Redis it has no record of only records the epoch: there
is nothing to compare with. Tokens are checked before and after reading the groups, so a replay
point is never recorded from a Redis that was wiped while it was read.

``python -m xtyl_common.events.replay`` (``make replay``) does steps 3 and 4 on demand, from a
moment an operator gives (:func:`requeue_published_since`, :func:`reemit_from_sources`).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import msgspec
import structlog
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from xtyl_common.events.contracts import DOMAINS, Event, stream_key
from xtyl_common.events.outbox import Connection, check_schema_name
from xtyl_common.events.reconciler import reemit_stuck
from xtyl_common.events.settings import EventSettings

log = structlog.stdlib.get_logger("xtyl.events.recovery")

EPOCH_SUFFIX = "epoch"
#: Source scans start this much before the replay point (Redis and Postgres clocks differ).
CLOCK_MARGIN = timedelta(minutes=1)

#: ``await scan(conn, since)``: the events that announce, again, what changed since ``since``.
SourceScan = Callable[[asyncpg.Connection, datetime], Awaitable[Sequence[Event]]]

EntryId = tuple[int, int]

_json = msgspec.json.Encoder()
_positions = msgspec.json.Decoder(dict[str, str])

_REQUEUE_FROM_POSITIONS = (
    "update {outbox} as o set published_at = null, stream_id = null,"
    " last_error = 'queued again: ' || $2"
    " where o.published_at is not null and o.stream_id is not null"
    " and xtyl_events.entry_position(o.stream_id)"
    " >= coalesce(xtyl_events.entry_position($1::text::jsonb ->> o.stream), array[0, 0]::numeric[])"
)
_REQUEUE_SINCE = (
    "update {outbox} set published_at = null, stream_id = null,"
    " last_error = 'queued again: ' || $2"
    " where published_at >= $1 and ($3::text[] is null or stream = any($3::text[]))"
)
_OUTBOXES = (
    "select distinct event_object_schema as schema from information_schema.triggers"
    " where trigger_name = 'outbox_notify' and event_object_table = 'outbox' order by 1"
)


@dataclass(frozen=True, slots=True)
class EventSource:
    """Where a producer's events can be re-created from its own tables.

    ``scan`` returns the events that announce what changed since a moment (e.g. a
    ``file.uploaded`` for every file that became ready since then); they are written to
    ``schema``'s outbox. Consumers are idempotent, so announcing too much is harmless.
    """

    name: str
    #: The outbox the events go to (the producer's schema).
    schema: str
    #: The stream (domain) they feed; a source runs when that stream's lost entries may be
    #: missing from the outbox.
    domain: str
    scan: SourceScan


def epoch_key(stream_prefix: str) -> str:
    return f"{stream_prefix}:{EPOCH_SUFFIX}"


def parse_entry_id(text: str | bytes) -> EntryId:
    raw = text.decode() if isinstance(text, bytes) else text
    ms, _, seq = raw.partition("-")
    return int(ms), int(seq or 0)


def format_entry_id(entry: EntryId) -> str:
    return f"{entry[0]}-{entry[1]}"


def entry_id_at(time_reply: Sequence[Any]) -> EntryId:
    """The entry id Redis would make at the moment of a ``TIME`` reply (seconds, microseconds)."""
    seconds, micros = time_reply
    return ((int(seconds) * 1_000_000 + int(micros)) // 1000, 0)


def entry_time(entry_id: str) -> datetime:
    """When Redis made the entry id (its milliseconds part)."""
    return datetime.fromtimestamp(parse_entry_id(entry_id)[0] / 1000, UTC)


async def current_epoch(redis: Redis, stream_prefix: str, *, timeout_s: float) -> str:
    """The epoch token, created now when Redis has none."""
    key = epoch_key(stream_prefix)
    async with asyncio.timeout(timeout_s):
        existing: bytes | None = await redis.get(key)
        if existing is not None:
            return existing.decode()
        token = f"{int(time.time())}-{secrets.token_hex(8)}"
        if await redis.set(key, token, nx=True):
            log.info("redis_epoch_created", key=key, epoch=token)
            return token
        again: bytes | None = await redis.get(key)
    return again.decode() if again is not None else token


async def read_epoch(redis: Redis, stream_prefix: str, *, timeout_s: float) -> str | None:
    async with asyncio.timeout(timeout_s):
        value: bytes | None = await redis.get(epoch_key(stream_prefix))
    return value.decode() if value is not None else None


async def replay_positions(
    redis: Redis, stream_prefix: str, domains: Sequence[str], *, timeout_s: float
) -> dict[str, str]:
    """Per domain, the first entry id that some consumer group may not have handled yet."""
    keys = [stream_key(d, stream_prefix) for d in domains]
    async with asyncio.timeout(timeout_s):
        async with redis.pipeline(transaction=False) as pipe:
            pipe.time()
            for key in keys:
                pipe.xinfo_stream(key)
                pipe.xinfo_groups(key)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        now = entry_id_at(replies[0])
        positions: dict[str, str] = {}
        for index, (domain, key) in enumerate(zip(domains, keys, strict=True)):
            info, groups = replies[1 + 2 * index], replies[2 + 2 * index]
            if isinstance(info, ResponseError) or isinstance(groups, ResponseError):
                positions[domain] = format_entry_id(now)  # no stream: nothing published yet
                continue
            positions[domain] = format_entry_id(
                await _first_unhandled(redis, key, info, groups, now)
            )
    return positions


async def _first_unhandled(
    redis: Redis, key: str, info: dict[str, Any], groups: list[dict[str, Any]], now: EntryId
) -> EntryId:
    first_entry = info.get("first-entry")
    if first_entry is not None:
        floor = parse_entry_id(first_entry[0])
    else:  # empty: what comes next (or, for a stream that never had an entry, from now on)
        last = parse_entry_id(info.get("last-generated-id") or b"0-0")
        floor = now if last == (0, 0) else (last[0], last[1] + 1)
    lowest: EntryId | None = None
    for group in groups:
        if int(group.get("pending") or 0) > 0:
            summary: dict[str, Any] = await redis.xpending(key, group["name"])
            oldest = summary.get("min")
            first = parse_entry_id(oldest) if oldest is not None else floor
        else:
            last = parse_entry_id(group.get("last-delivered-id") or b"0-0")
            first = (last[0], last[1] + 1)
        lowest = first if lowest is None else min(lowest, first)
    return floor if lowest is None else max(lowest, floor)


async def requeue_published_from(
    conn: Connection, schema: str, replay_from: Mapping[str, str], *, reason: str, timeout_s: float
) -> int:
    """Mark unpublished again the rows of ``schema``'s outbox published at or after
    ``replay_from[stream]`` (every published row of a stream not in it); rows queued."""
    sql = _REQUEUE_FROM_POSITIONS.format(outbox=f"{check_schema_name(schema)}.outbox")
    status = await conn.execute(
        sql, _json.encode(dict(replay_from)).decode(), reason, timeout=timeout_s
    )
    return int(status.split()[-1])


async def requeue_published_since(
    conn: Connection,
    schema: str,
    since: datetime,
    *,
    domains: Sequence[str] | None = None,
    reason: str,
    timeout_s: float,
) -> int:
    """Mark unpublished again the rows of ``schema``'s outbox published at or after ``since``
    (of ``domains`` only, when given); rows queued. The relay publishes them in order."""
    sql = _REQUEUE_SINCE.format(outbox=f"{check_schema_name(schema)}.outbox")
    status = await conn.execute(
        sql, since, reason, list(domains) if domains is not None else None, timeout=timeout_s
    )
    return int(status.split()[-1])


async def reemit_from_sources(
    conn: Connection, sources: Sequence[EventSource], since: datetime, *, timeout_s: float
) -> dict[str, int]:
    """Write what each source announces since ``since`` to its outbox; events per source."""
    written: dict[str, int] = {}
    for source in sources:

        async def scan(c: asyncpg.Connection, source: EventSource = source) -> Sequence[Event]:
            return await source.scan(c, since)

        written[source.name] = await reemit_stuck(
            conn, schema=source.schema, find_stuck=scan, timeout_s=timeout_s
        )
        log.info(
            "source_reemitted",
            source=source.name,
            since=since.isoformat(),
            count=written[source.name],
        )
    return written


async def outbox_schemas(conn: Connection, *, timeout_s: float) -> list[str]:
    """Every schema of the database with an outbox (``xtyl_events.install_outbox``)."""
    rows = await conn.fetch(_OUTBOXES, timeout=timeout_s)
    return [str(row["schema"]) for row in rows]


class _Checkpoint(msgspec.Struct, frozen=True):
    epoch: str
    replay_from: dict[str, str]


class StreamRecovery:
    """The check of :mod:`recovery` for the outboxes a relay publishes (``schemas``)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        redis: Redis,
        *,
        schemas: Sequence[str],
        settings: EventSettings,
        sources: Sequence[EventSource] = (),
        domains: Sequence[str] = DOMAINS,
    ) -> None:
        self.pool = pool
        self.redis = redis
        self.schemas = [check_schema_name(s) for s in schemas]
        self.settings = settings
        self.sources = list(sources)
        self.domains = list(domains)
        self._next_check = 0.0

    async def check_if_due(self) -> int:
        """:meth:`check` once every ``recovery_check_interval_s``; rows queued again."""
        if time.monotonic() < self._next_check:
            return 0
        self._next_check = time.monotonic() + self.settings.recovery_check_interval_s
        return await self.check()

    async def check(self) -> int:
        """Compare the epoch with the recorded one; queue again what a loss took. Rows queued."""
        s = self.settings
        epoch = await current_epoch(self.redis, s.stream_prefix, timeout_s=s.redis_timeout_s)
        positions = await replay_positions(
            self.redis, s.stream_prefix, self.domains, timeout_s=s.redis_timeout_s
        )
        # a wipe while the groups were read would make these positions those of the new Redis
        steady = await read_epoch(self.redis, s.stream_prefix, timeout_s=s.redis_timeout_s) == epoch
        queued = 0
        for schema in self.schemas:
            queued += await self._check_schema(schema, epoch, positions if steady else None)
        return queued

    async def _check_schema(self, schema: str, epoch: str, positions: dict[str, str] | None) -> int:
        s = self.settings
        timeout_s = s.db_timeout_s
        async with self.pool.acquire(timeout=timeout_s) as conn, conn.transaction():
            row = await conn.fetchrow(
                "select epoch, replay_from::text as replay_from from xtyl_events.stream_checkpoints"
                " where outbox_schema = $1 and stream_prefix = $2 for update",
                schema,
                s.stream_prefix,
                timeout=timeout_s,
            )
            if row is None:
                await conn.execute(
                    "insert into xtyl_events.stream_checkpoints"
                    " (outbox_schema, stream_prefix, epoch, replay_from)"
                    " values ($1, $2, $3, $4::text::jsonb) on conflict do nothing",
                    schema,
                    s.stream_prefix,
                    epoch,
                    _json.encode(positions or {}).decode(),
                    timeout=timeout_s,
                )
                return 0
            recorded = _Checkpoint(row["epoch"], _positions.decode(row["replay_from"]))
            if recorded.epoch == epoch:
                if positions is not None and positions != recorded.replay_from:
                    await self._record(conn, schema, epoch, positions)
                return 0
            # Redis lost its data since the last check: what was not known handled goes again.
            queued = await requeue_published_from(
                conn,
                schema,
                recorded.replay_from,
                reason=f"redis lost its data (epoch {recorded.epoch} -> {epoch})",
                timeout_s=timeout_s,
            )
            reemitted = await self._reemit_beyond_outbox(conn, schema, recorded.replay_from)
            await self._record(conn, schema, epoch, positions or {})
        log.warning(
            "redis_data_loss_detected",
            schema=schema,
            stream_prefix=s.stream_prefix,
            previous_epoch=recorded.epoch,
            epoch=epoch,
            replay_from=recorded.replay_from,
            rows_queued_again=queued,
            events_reemitted=reemitted,
        )
        return queued + sum(reemitted.values())

    async def _reemit_beyond_outbox(
        self, conn: Connection, schema: str, replay_from: Mapping[str, str]
    ) -> dict[str, int]:
        """Sources of streams whose replay point is older than what the outbox keeps."""
        kept_since = datetime.now(UTC) - timedelta(seconds=self.settings.outbox_retention_s)
        written: dict[str, int] = {}
        for source in self.sources:
            if source.schema != schema:
                continue
            point = replay_from.get(source.domain)
            since = entry_time(point) - CLOCK_MARGIN if point is not None else None
            if since is not None and since >= kept_since:
                continue  # the outbox still holds every row published since then
            since = since or datetime.fromtimestamp(0, UTC)
            written |= await reemit_from_sources(
                conn, [source], since, timeout_s=self.settings.db_timeout_s
            )
        return written

    async def _record(
        self, conn: Connection, schema: str, epoch: str, positions: Mapping[str, str]
    ) -> None:
        await conn.execute(
            "update xtyl_events.stream_checkpoints set epoch = $3,"
            " replay_from = $4::text::jsonb, checked_at = now()"
            " where outbox_schema = $1 and stream_prefix = $2",
            schema,
            self.settings.stream_prefix,
            epoch,
            _json.encode(dict(positions)).decode(),
            timeout=self.settings.db_timeout_s,
        )
