"""The arq job records behind stream entries: create them, see what became of them, move them.

Only arq's public key prefixes (``arq.constants``) and its (de)serialization functions are used;
payloads are msgpack (:mod:`.serialization`). A job's args are
``(stream, entry_id, event_type, event_json)``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from arq.constants import in_progress_key_prefix, job_key_prefix, result_key_prefix
from arq.jobs import DeserializationError, deserialize_result
from arq.jobs import serialize_job as arq_serialize_job
from arq.utils import timestamp_ms
from redis.asyncio import Redis

from xtyl_common.events.serialization import deserialize_job, serialize_job
from xtyl_common.events.streams import EVENT_FIELD, TYPE_FIELD

#: The arq function name of every stream job.
JOB_FUNCTION = "xtyl_stream_entry"


@dataclass(frozen=True, slots=True)
class EntryJob:
    """One stream entry, as its arq job carries it."""

    stream: str
    entry_id: str
    event_type: str
    data: bytes

    @property
    def fields(self) -> dict[bytes, bytes]:
        return {TYPE_FIELD: self.event_type.encode(), EVENT_FIELD: self.data}


@dataclass(frozen=True, slots=True)
class JobRecord:
    """What Redis holds for a job id: the job (queued or running) and/or its result."""

    exists: bool
    result: bytes | None


async def enqueue(
    redis: Redis,
    queue: str,
    jobs: Sequence[tuple[str, EntryJob]],
    *,
    expires_ms: int,
    timeout_s: float,
    due_ms: Mapping[str, int] | None = None,
) -> None:
    """Create the jobs (``SET NX``, so an existing job is never replaced; kept ``expires_ms``,
    longer than any retry horizon) and queue them now, or at ``due_ms[job id]``."""
    now = timestamp_ms()
    due_ms = due_ms or {}
    async with asyncio.timeout(timeout_s), redis.pipeline(transaction=False) as pipe:
        for job_id, job in jobs:
            args = (job.stream, job.entry_id, job.event_type, job.data)
            payload = arq_serialize_job(JOB_FUNCTION, args, {}, None, now, serializer=serialize_job)
            pipe.set(job_key_prefix + job_id, payload, px=expires_ms, nx=True)
            pipe.zadd(queue, {job_id: due_ms.get(job_id, now)})
        await pipe.execute()


async def records(redis: Redis, job_ids: Sequence[str], *, timeout_s: float) -> list[JobRecord]:
    async with asyncio.timeout(timeout_s), redis.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.exists(job_key_prefix + job_id)
            pipe.get(result_key_prefix + job_id)
        replies: list[Any] = await pipe.execute()
    return [
        JobRecord(exists=bool(replies[2 * i]), result=replies[2 * i + 1])
        for i in range(len(job_ids))
    ]


async def take_over(
    redis: Redis,
    queue: str,
    job_ids: Sequence[str],
    *,
    timeout_s: float,
    due_ms: Mapping[str, int] | None = None,
) -> None:
    """Queue existing jobs of a dead consumer in ``queue``, dropping its in-progress locks; due
    now, or at ``due_ms[job id]`` (a retry keeps its time)."""
    now = timestamp_ms()
    due_ms = due_ms or {}
    async with asyncio.timeout(timeout_s), redis.pipeline(transaction=True) as pipe:
        for job_id in job_ids:
            pipe.delete(in_progress_key_prefix + job_id)
            pipe.zadd(queue, {job_id: due_ms.get(job_id, now)})
        await pipe.execute()


def read_result(raw: bytes) -> tuple[bool, str]:
    """``(success, what it returned or raised)`` of a stored arq result."""
    try:
        result = deserialize_result(raw, deserializer=deserialize_job)
    except DeserializationError:
        return False, "unreadable job result"
    return result.success, str(result.result)


async def delivery_counts(
    redis: Redis, stream: str, group: str, entry_ids: Sequence[str], *, timeout_s: float
) -> dict[str, int]:
    """How many times each pending entry was delivered (``XPENDING``)."""
    async with asyncio.timeout(timeout_s), redis.pipeline(transaction=False) as pipe:
        for entry_id in entry_ids:
            pipe.xpending_range(stream, group, min=entry_id, max=entry_id, count=1)
        replies: list[list[dict[str, Any]]] = await pipe.execute()
    return {
        entry_id: int(reply[0]["times_delivered"]) if reply else 1
        for entry_id, reply in zip(entry_ids, replies, strict=True)
    }
