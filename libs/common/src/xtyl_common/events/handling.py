"""What one stream job does: decode the entry, call its handler, then acknowledge it; after a
failure, retry it or dead-letter it as :mod:`.retries` decides (the kind of failure, the retry
horizon measured from the entry's first failure).

Acknowledgements are batched (one ``XACK`` per stream every few milliseconds): if the process
dies before the batch goes out, whoever takes the entry over finds the job's successful arq
result and acknowledges it then, so the handler does not run again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import structlog
from arq.utils import timestamp_ms
from arq.worker import Retry
from redis.asyncio import Redis
from redis.exceptions import RedisError

from xtyl_common.context import set_request_id
from xtyl_common.events.contracts import InvalidEvent, UnknownEventType, decode_event
from xtyl_common.events.retries import (
    FINAL_ATTEMPT_KEY,
    GiveUp,
    RetryPolicy,
    RetryState,
    kind_of,
    load_states,
    save_state,
)
from xtyl_common.events.settings import EventSettings
from xtyl_common.events.streams import (
    EVENT_FIELD,
    TYPE_FIELD,
    Fields,
    dead_letter,
    retries_key,
)

log = structlog.stdlib.get_logger("xtyl.events.consumer")

#: ``await handler(event, ctx)``; ``ctx`` is the arq job context (the worker's ctx plus
#: ``job_id``, ``job_try``... and ``is_final_attempt(ctx)``). Must be idempotent. Raise a
#: ``ClientError`` for a permanent failure, a ``DependencyError`` for a transient one.
Handler = Callable[[Any, dict[str, Any]], Awaitable[object]]

#: Redis failing or unreachable (what the consumer's own Redis calls survive).
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
        self.policy = RetryPolicy.of(settings)
        #: Job ids whose last run asked arq for a deferred retry.
        self.retrying: set[str] = set()
        self._acks: dict[str, list[str]] = {}
        self._acks_waiting = asyncio.Event()

    async def run(
        self, ctx: dict[str, Any], stream: str, entry_id: str, event_type: str, data: bytes
    ) -> str:
        """The arq job: decode, call the handler, then XACK; on failure retry it later (arq
        ``Retry``) or dead-letter it."""
        s = self.settings
        job_try: int = ctx["job_try"]
        fields = {TYPE_FIELD: event_type.encode(), EVENT_FIELD: data}
        state: RetryState | None = None
        if job_try > 1:  # it ran before: failed (a retry state), or the worker stopped
            try:
                state = await self.retry_state(stream, entry_id)
            except TRANSIENT as exc:
                log.warning("retry_state_unreadable", entry_id=entry_id, error=describe(exc))
            else:
                stopped = job_try - 1 - (state.failures if state else 0)
                if stopped >= s.max_tries:
                    error = f"gave up after {stopped} tries: the worker stopped during each"
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
        final = self.policy.is_final(state, timestamp_ms())
        ctx[FINAL_ATTEMPT_KEY] = final
        try:
            async with asyncio.timeout(s.handler_timeout_s):
                await self.handlers[event_type](event, ctx)
        except Exception as exc:
            return await self._failed(ctx, stream, entry_id, fields, exc, state=state, final=final)
        # Acknowledged in a batch within milliseconds; if the process dies first, whoever
        # takes the entry over finds the job's successful result and acknowledges it then.
        self._acks.setdefault(stream, []).append(entry_id)
        self._acks_waiting.set()
        return "done"

    async def _failed(
        self,
        ctx: dict[str, Any],
        stream: str,
        entry_id: str,
        fields: Fields,
        exc: Exception,
        *,
        state: RetryState | None,
        final: bool,
    ) -> str:
        """Dead-letter the entry, or record the failure and ask arq to run the job again at
        the next attempt's time (the entry stays pending meanwhile)."""
        job_try: int = ctx["job_try"]
        error = describe(exc)
        kind = kind_of(exc)
        if state is None and job_try == 1:
            # a first try, but maybe not the entry's first failure (its job was lost and made
            # again): the horizon counts from the first one
            with contextlib.suppress(*TRANSIENT):
                state = await self.retry_state(stream, entry_id)
        now = timestamp_ms()
        decision = self.policy.decide(state, exc, error, now_ms=now, final=final)
        if isinstance(decision, GiveUp):
            await self.dead_letter(stream, entry_id, fields, decision.reason, job_try)
            return "dead_lettered"
        new_state = decision.state
        try:
            await save_state(
                self.redis,
                stream,
                self.group,
                entry_id,
                new_state,
                keep_ms=self.policy.keep_ms,
                timeout_s=self.settings.redis_timeout_s,
            )
        except TRANSIENT as save_error:
            # the retry still happens (arq's deferred job); only the horizon may start later
            log.warning("retry_state_not_saved", entry_id=entry_id, error=describe(save_error))
        delay_s = max(0.0, (new_state.next_attempt_ms - now) / 1000)
        horizon_left_s = new_state.first_failure_ms / 1000 + self.policy.horizon_s - now / 1000
        log.warning(
            "job_retry",
            kind=kind.value,
            job_try=job_try,
            failures=new_state.failures,
            retry_in_s=round(delay_s, 3),
            gives_up_in_s=round(max(0.0, horizon_left_s)),
            error=error,
        )
        self.retrying.add(ctx["job_id"])
        raise Retry(defer=delay_s) from exc

    async def retry_state(self, stream: str, entry_id: str) -> RetryState | None:
        states = await load_states(
            self.redis, stream, self.group, [entry_id], timeout_s=self.settings.redis_timeout_s
        )
        return states.get(entry_id)

    async def retry_states(self, entries: Iterable[tuple[str, str]]) -> dict[str, RetryState]:
        """The retry states of ``(stream, entry id)`` pairs, by entry id (those that have one)."""
        by_stream: dict[str, list[str]] = {}
        for stream, entry_id in entries:
            by_stream.setdefault(stream, []).append(entry_id)
        states: dict[str, RetryState] = {}
        for stream, entry_ids in by_stream.items():
            states.update(
                await load_states(
                    self.redis,
                    stream,
                    self.group,
                    entry_ids,
                    timeout_s=self.settings.redis_timeout_s,
                )
            )
        return states

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
        """XACK the entries and drop their retry states (one round trip)."""
        try:
            async with (
                asyncio.timeout(self.settings.redis_timeout_s),
                self.redis.pipeline(transaction=False) as pipe,
            ):
                pipe.xack(stream, self.group, *entry_ids)
                pipe.hdel(retries_key(stream, self.group), *entry_ids)
                await pipe.execute()
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
