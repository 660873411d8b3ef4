"""What one stream job does: decode the entry, call its handler, then acknowledge it; retry a
failing handler with backoff (arq ``Retry``) and dead-letter the entry when it is hopeless.

Acknowledgements are batched (one ``XACK`` per stream every few milliseconds): if the process
dies before the batch goes out, whoever takes the entry over finds the job's successful arq
result and acknowledges it then, so the handler does not run again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from arq.worker import Retry
from redis.asyncio import Redis
from redis.exceptions import RedisError

from xtyl_common.context import set_request_id
from xtyl_common.events.contracts import InvalidEvent, UnknownEventType, decode_event
from xtyl_common.events.settings import EventSettings
from xtyl_common.events.streams import EVENT_FIELD, TYPE_FIELD, Fields, dead_letter

log = structlog.stdlib.get_logger("xtyl.events.consumer")

#: ``await handler(event, ctx)``; ``ctx`` is the arq job context (the worker's ctx plus
#: ``job_id``, ``job_try``...). Must be idempotent.
Handler = Callable[[Any, dict[str, Any]], Awaitable[object]]

TRANSIENT = (RedisError, OSError, TimeoutError)


class EntryHandling:
    """The stream job function of one consumer and the acknowledgements it leaves."""

    def __init__(
        self,
        redis: Redis,
        *,
        group: str,
        consumer: str,
        handlers: dict[str, Handler],
        settings: EventSettings,
    ) -> None:
        self.redis = redis
        self.group = group
        self.consumer = consumer
        self.handlers = handlers
        self.settings = settings
        #: Job ids whose last run asked arq for a deferred retry.
        self.retrying: set[str] = set()
        self._acks: dict[str, list[str]] = {}
        self._acks_waiting = asyncio.Event()

    async def run(
        self, ctx: dict[str, Any], stream: str, entry_id: str, event_type: str, data: bytes
    ) -> str:
        """The arq job: decode, call the handler, then XACK; dead-letter when it is hopeless."""
        s = self.settings
        job_try: int = ctx["job_try"]
        fields = {TYPE_FIELD: event_type.encode(), EVENT_FIELD: data}
        if job_try > s.max_tries:
            error = f"gave up after {job_try - 1} tries: the worker stopped during each"
            await self.dead_letter(stream, entry_id, fields, error, job_try - 1)
            return "dead_lettered"
        try:
            event = decode_event(data)
        except (UnknownEventType, InvalidEvent) as exc:
            await self.dead_letter(stream, entry_id, fields, f"undecodable event: {exc}", job_try)
            return "dead_lettered"
        structlog.contextvars.bind_contextvars(
            job_id=ctx["job_id"],
            event_id=str(event.id),
            event_type=event_type,
            request_id=event.request_id,
        )
        set_request_id(event.request_id)
        try:
            async with asyncio.timeout(s.handler_timeout_s):
                await self.handlers[event_type](event, ctx)
        except Exception as exc:
            if job_try >= s.max_tries:
                await self.dead_letter(stream, entry_id, fields, describe(exc), job_try)
                return "dead_lettered"
            delay = min(s.retry_backoff_s * 2 ** (job_try - 1), s.retry_backoff_max_s)
            log.warning("job_retry", job_try=job_try, retry_in_s=delay, error=describe(exc))
            self.retrying.add(ctx["job_id"])
            raise Retry(defer=delay) from exc
        # Acknowledged in a batch within milliseconds; if the process dies first, whoever
        # takes the entry over finds the job's successful result and acknowledges it then.
        self._acks.setdefault(stream, []).append(entry_id)
        self._acks_waiting.set()
        return "done"

    async def flush_acks(self) -> None:
        """XACK what the finished jobs left, one command per stream (waits for work)."""
        if not self._acks:
            self._acks_waiting.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._acks_waiting.wait()
        acks, self._acks = self._acks, {}
        for stream, entry_ids in acks.items():
            await self.ack(stream, entry_ids)

    async def ack(self, stream: str, entry_ids: list[str]) -> None:
        try:
            async with asyncio.timeout(self.settings.redis_timeout_s):
                await self.redis.xack(stream, self.group, *entry_ids)
        except TRANSIENT as exc:
            # Left pending: whoever claims it finds the job finished and acknowledges it.
            log.warning(
                "entry_ack_failed", stream=stream, count=len(entry_ids), error=describe(exc)
            )

    async def dead_letter(
        self, stream: str, entry_id: str, fields: Fields, error: str, deliveries: int
    ) -> None:
        s = self.settings
        await dead_letter(
            self.redis,
            stream=stream,
            group=self.group,
            consumer=self.consumer,
            entry_id=entry_id,
            fields=fields,
            error=error,
            deliveries=deliveries,
            maxlen=s.dead_letter_maxlen,
            timeout_s=s.redis_timeout_s,
        )

    def wake(self) -> None:
        """Let a waiting :meth:`flush_acks` return now (shutdown)."""
        self._acks_waiting.set()


def describe(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
