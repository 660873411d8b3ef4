"""How long Redis keeps events: entries every group has handled go after a while, by time.

``XADD MAXLEN ~`` caps a stream by count (``EVENTS_STREAM_MAXLEN``), which on a quiet stream is
forever: the ``users`` stream would keep every ``user.created`` (an address, a name) long after
the user deleted their account and every service erased them. :func:`trim_streams` is the
time limit, run by every outbox relay at each prune (``EVENTS_PRUNE_INTERVAL_S``):

* a stream loses the entries older than ``EVENTS_STREAM_RETENTION_S`` (7 days), **but only
  below the first entry some consumer group may not have handled yet** (its oldest pending
  entry, else the entry after the last one delivered: the replay point of
  :mod:`.recovery`). A group that lags, or an entry waiting for a retry, keeps its entries
  however old: retention never loses an event nobody handled. A stream with no group keeps
  everything (nothing reads it to say it was handled);
* a dead-letter stream loses the entries dead-lettered more than
  ``EVENTS_DEAD_LETTER_RETENTION_S`` (30 days) ago: an operator has that long to look at a
  dead letter and replay it.

Trimming is exact (``XTRIM ... MINID``, no ``~``): an entry past its time is gone at the next
prune, not whenever Redis frees a whole node. Entry ids are Redis's clock (milliseconds), so
"older" is Redis's time, read with ``TIME``, not the relay's. Each relay trims every stream:
the trim is idempotent, and a stream is kept short even while its producer's relay is down.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from redis.asyncio import Redis

from xtyl_common.events.contracts import dead_letter_key, stream_key
from xtyl_common.events.recovery import (
    EntryId,
    entry_id_at,
    format_entry_id,
    parse_entry_id,
    replay_positions,
)


def _before(now: EntryId, seconds: float) -> EntryId:
    return (max(0, now[0] - int(seconds * 1000)), 0)


async def trim_streams(
    redis: Redis,
    stream_prefix: str,
    domains: Sequence[str],
    *,
    retention_s: float,
    dead_letter_retention_s: float,
    timeout_s: float,
) -> dict[str, int]:
    """Trim each domain's stream and its dead letters (see the module docstring): the entries
    removed, per stream key (streams that lost none are left out)."""
    positions = await replay_positions(redis, stream_prefix, domains, timeout_s=timeout_s)
    async with asyncio.timeout(timeout_s):
        now = entry_id_at(await redis.time())
        removed: dict[str, int] = {}
        for domain in domains:
            key = stream_key(domain, stream_prefix)
            handled_below = parse_entry_id(positions[domain])
            cut = min(handled_below, _before(now, retention_s))
            dead_cut = _before(now, dead_letter_retention_s)
            for stream, minid in ((key, cut), (dead_letter_key(key), dead_cut)):
                count = int(
                    await redis.xtrim(stream, minid=format_entry_id(minid), approximate=False)
                )
                if count:
                    removed[stream] = count
    return removed
