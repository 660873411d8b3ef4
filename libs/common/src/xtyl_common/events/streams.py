"""Redis Streams pieces shared by the relay, the consumer and the ops view.

An entry carries two fields: ``type`` (the event type, readable without decoding) and
``event`` (the JSON envelope, see :mod:`xtyl_common.events.contracts`). A dead-letter entry
(``<stream>:dead``) keeps both and adds ``stream``, ``entry_id``, ``group``, ``consumer``,
``deliveries`` and ``error``. An entry waiting for a retry has a state in the hash
``<stream>:retries:<group>`` (see :mod:`xtyl_common.events.retries`), removed with its
acknowledgement or its dead letter. An entry whose handler succeeded has a *done marker*
``<stream>:done:<group>:<entry id>`` for a while (see :mod:`xtyl_common.events.handling`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from xtyl_common.events.contracts import dead_letter_key

log = structlog.stdlib.get_logger("xtyl.events")

TYPE_FIELD = b"type"
EVENT_FIELD = b"event"
_MAX_ERROR_CHARS = 2_000

Fields = Mapping[bytes, bytes]


def retries_key(stream: str, group: str) -> str:
    """The hash of ``group``'s retry states on ``stream``: entry id -> state (JSON)."""
    return f"{stream}:retries:{group}"


def done_key(stream: str, group: str, entry_id: str) -> str:
    """Set (with an expiry) once ``group``'s handler of the entry has succeeded: whoever takes
    the entry over before its acknowledgement acknowledges it instead of running it again."""
    return f"{stream}:done:{group}:{entry_id}"


def is_nogroup(exc: BaseException) -> bool:
    """True for the error XREADGROUP/XACK/XAUTOCLAIM give when the group (or stream) is gone."""
    return isinstance(exc, ResponseError) and str(exc).startswith("NOGROUP")


async def ensure_group(redis: Redis, stream: str, group: str, *, timeout_s: float) -> bool:
    """Create ``group`` on ``stream`` from the start (``0``), creating the stream if needed.
    True if it was created now, False if it existed."""
    try:
        async with asyncio.timeout(timeout_s):
            await redis.xgroup_create(stream, group, id="0", mkstream=True)
    except ResponseError as exc:
        if str(exc).startswith("BUSYGROUP"):
            return False
        raise
    log.info("group_created", stream=stream, group=group)
    return True


async def delivery_counts(
    redis: Redis, stream: str, group: str, entry_ids: Sequence[str], *, timeout_s: float
) -> dict[str, int]:
    """How many times each pending entry was delivered (``XPENDING``; 1 when it is not pending)."""
    async with asyncio.timeout(timeout_s), redis.pipeline(transaction=False) as pipe:
        for entry_id in entry_ids:
            pipe.xpending_range(stream, group, min=entry_id, max=entry_id, count=1)
        replies: list[list[dict[str, Any]]] = await pipe.execute()
    return {
        entry_id: int(reply[0]["times_delivered"]) if reply else 1
        for entry_id, reply in zip(entry_ids, replies, strict=True)
    }


async def dead_letter(
    redis: Redis,
    *,
    stream: str,
    group: str,
    consumer: str,
    entry_id: str,
    fields: Fields,
    error: str,
    deliveries: int,
    maxlen: int,
    timeout_s: float,
) -> None:
    """Move an entry to ``<stream>:dead``, acknowledge it and drop its retry state,
    atomically (MULTI/EXEC)."""
    dead: dict[bytes, bytes] = {
        TYPE_FIELD: fields.get(TYPE_FIELD, b""),
        EVENT_FIELD: fields.get(EVENT_FIELD, b""),
        b"stream": stream.encode(),
        b"entry_id": entry_id.encode(),
        b"group": group.encode(),
        b"consumer": consumer.encode(),
        b"deliveries": str(deliveries).encode(),
        b"error": error[:_MAX_ERROR_CHARS].encode(errors="replace"),
    }
    async with asyncio.timeout(timeout_s), redis.pipeline(transaction=True) as pipe:
        pipe.xadd(dead_letter_key(stream), dead, maxlen=maxlen, approximate=True)  # pyright: ignore[reportArgumentType]
        pipe.xack(stream, group, entry_id)
        pipe.hdel(retries_key(stream, group), entry_id)
        await pipe.execute()
    log.warning(
        "entry_dead_lettered",
        stream=stream,
        group=group,
        entry_id=entry_id,
        event_type=fields.get(TYPE_FIELD, b"").decode(errors="replace"),
        deliveries=deliveries,
        error=error[:200],
    )
