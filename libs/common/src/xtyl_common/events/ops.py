"""``xtyl-streams`` (``make streams``): what the event streams hold, for people on call.

Prints, per stream (``<EVENTS_STREAM_PREFIX>:*``, from ``REDIS_URL``): its length and dead-letter
count, then each consumer group's consumers, pending entries (delivered, not acknowledged), lag
(entries not yet delivered to the group: what an autoscaler reads), entries **retrying** (they
failed for a transient reason and wait, pending, for their next attempt: see
:mod:`.retries`) and entries **dead-lettered** by the group (in ``<stream>:dead``). One line
and exit 1 when Redis cannot be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from typing import Any

import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from xtyl_common.db import redact_url
from xtyl_common.events.contracts import DEAD_LETTER_SUFFIX, DOMAINS, dead_letter_key, stream_key
from xtyl_common.events.settings import ENV_PREFIX, EventSettings
from xtyl_common.events.streams import retries_key
from xtyl_common.redis_client import create_redis
from xtyl_common.settings import SettingsError, load_settings

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
_TIMEOUT_S = 5.0
_DEAD_PAGE = 1_000


class GroupStatus(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    consumers: int
    pending: int
    #: ``None`` when Redis cannot tell (entries were deleted in the middle of the stream).
    lag: int | None
    #: Pending entries that failed for a transient reason and wait for their next attempt.
    retrying: int = 0
    #: Entries of this group in the stream's dead letters.
    dead: int = 0


class StreamStatus(msgspec.Struct, frozen=True, kw_only=True):
    stream: str
    length: int
    dead: int
    groups: list[GroupStatus]


async def stream_names(redis: Redis, prefix: str) -> list[str]:
    """The known domains' streams plus any other stream under ``prefix`` (dead letters aside)."""
    names = {stream_key(domain, prefix) for domain in DOMAINS}
    async with asyncio.timeout(_TIMEOUT_S):
        async for key in redis.scan_iter(match=f"{prefix}:*", count=500, _type="stream"):
            name = key.decode()
            if not name.endswith(DEAD_LETTER_SUFFIX):
                names.add(name)
    return sorted(names)


class GroupCounts(msgspec.Struct, frozen=True, kw_only=True):
    """One consumer group of a stream as ``XINFO GROUPS`` tells it."""

    name: str
    consumers: int
    pending: int
    #: ``None`` when Redis cannot tell (entries were deleted in the middle of the stream).
    lag: int | None


async def group_counts(
    redis: Redis, stream: str, *, timeout_s: float = _TIMEOUT_S
) -> list[GroupCounts]:
    """The consumer groups of ``stream`` with their consumers, pending entries and lag (one
    ``XINFO GROUPS``; none when the stream does not exist). What ``make streams`` prints, and
    what a worker's ``xtyl_stream_lag`` / ``xtyl_stream_pending`` gauges are set from."""
    try:
        async with asyncio.timeout(timeout_s):
            groups: list[dict[str, Any]] = await redis.xinfo_groups(stream)
    except ResponseError as exc:
        if "no such key" in str(exc).lower():
            return []
        raise
    return [
        GroupCounts(
            name=_text(g["name"]),
            consumers=int(g["consumers"]),
            pending=int(g["pending"]),
            lag=None if g.get("lag") is None else int(g["lag"]),
        )
        for g in groups
    ]


async def stream_status(redis: Redis, stream: str) -> StreamStatus:
    async with asyncio.timeout(_TIMEOUT_S), redis.pipeline(transaction=False) as pipe:
        pipe.xlen(stream)
        pipe.xlen(dead_letter_key(stream))
        length, dead = await pipe.execute()
    groups = await group_counts(redis, stream)
    retrying: list[int] = []
    if groups:
        async with asyncio.timeout(_TIMEOUT_S), redis.pipeline(transaction=False) as pipe:
            for group in groups:
                pipe.hlen(retries_key(stream, group.name))
            retrying = [int(n) for n in await pipe.execute()]
    dead_by_group = await dead_letters_by_group(redis, stream) if dead else {}
    return StreamStatus(
        stream=stream,
        length=int(length),
        dead=int(dead),
        groups=[
            GroupStatus(
                name=g.name,
                consumers=g.consumers,
                pending=g.pending,
                lag=g.lag,
                retrying=retrying[index],
                dead=dead_by_group.get(g.name, 0),
            )
            for index, g in enumerate(groups)
        ],
    )


async def dead_letters_by_group(redis: Redis, stream: str) -> dict[str, int]:
    """How many of ``<stream>:dead``'s entries each group left there (read in pages)."""
    counts: dict[str, int] = {}
    start = "-"
    while True:
        async with asyncio.timeout(_TIMEOUT_S):
            page: list[tuple[bytes, dict[bytes, bytes]]] = await redis.xrange(
                dead_letter_key(stream), min=start, count=_DEAD_PAGE
            )
        for _, fields in page:
            group = fields.get(b"group", b"").decode(errors="replace")
            counts[group] = counts.get(group, 0) + 1
        if len(page) < _DEAD_PAGE:
            return counts
        start = "(" + page[-1][0].decode()


async def streams_report(redis: Redis, prefix: str) -> list[StreamStatus]:
    return [await stream_status(redis, name) for name in await stream_names(redis, prefix)]


def render(report: Sequence[StreamStatus]) -> str:
    width = max([len(s.stream) for s in report] + [6])
    lines = [
        f"{'stream':<{width}}  {'length':>8}  {'dead':>6}"
        "  group: consumers, pending, lag, retrying, dead-lettered"
    ]
    for status in report:
        head = f"{status.stream:<{width}}  {status.length:>8}  {status.dead:>6}"
        if not status.groups:
            lines.append(f"{head}  (no consumer group)")
        for index, g in enumerate(status.groups):
            lag = "?" if g.lag is None else str(g.lag)
            prefix = head if index == 0 else " " * len(head)
            lines.append(
                f"{prefix}  {g.name}: {g.consumers} consumers, {g.pending} pending, lag {lag},"
                f" {g.retrying} retrying, {g.dead} dead-lettered"
            )
    return "\n".join(lines)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def _run(url: str, prefix: str) -> list[StreamStatus]:
    redis = create_redis(url, socket_timeout_s=_TIMEOUT_S, connect_timeout_s=2.0)
    try:
        return await streams_report(redis, prefix)
    finally:
        await redis.aclose()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="xtyl-streams",
        description="Length, groups, pending, lag, retrying entries and dead letters of each"
        " event stream (REDIS_URL, EVENTS_STREAM_PREFIX).",
    )
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", DEFAULT_REDIS_URL))
    args = parser.parse_args(argv)
    try:
        settings = load_settings(EventSettings, prefix=ENV_PREFIX)
    except SettingsError as exc:
        print(f"streams: configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        report = asyncio.run(_run(args.redis_url, settings.stream_prefix))
    except (RedisError, OSError, TimeoutError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(
            f"streams: cannot reach Redis at {redact_url(args.redis_url)}: {reason}",
            file=sys.stderr,
        )
        return 1
    print(render(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
