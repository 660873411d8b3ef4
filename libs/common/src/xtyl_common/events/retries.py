"""Retry horizons: what becomes of a stream entry whose handler failed, and where that is kept.

A handler's exception is read through the error tree (:func:`kind_of`):

* **permanent**: a :class:`~xtyl_common.errors.ClientError` (a dependency refused the request
  with a 4xx, a bad document, invalid input). Retrying cannot help: the entry is dead-lettered
  at once.
* **transient**: a :class:`~xtyl_common.errors.DependencyError` (``Unavailable``, ``TimedOut``),
  a Redis error, a database that cannot be reached (``xtyl_common.db.DB_UNAVAILABLE_ERRORS``),
  ``OSError``, ``TimeoutError`` (the handler ran out of ``handler_timeout_s``). Retried with
  exponential backoff and jitter (``retry_backoff_s`` doubling, capped at
  ``retry_backoff_max_s``), or after the dependency's own ``retry_after_s`` when it gave one
  (``Retry-After``, Brevo's ``x-sib-ratelimit-reset``), until ``retry_horizon_s`` after the
  entry's **first failure**, not a count of tries. The last attempt is made at the horizon;
  handlers can tell (:func:`is_final_attempt`) and record a final failure; if that attempt
  fails too, the entry is dead-lettered.
* **unexpected**: anything else (a bug): ``max_tries`` tries with backoff, then dead-lettered.

Where a waiting retry lives, so that it survives the worker:

* the stream entry stays **pending** (not acknowledged) in its group until it is handled or
  dead-lettered, so nothing is lost when a worker dies; the consumer holding it keeps it fresh
  (its heartbeat) and schedules the next attempt in memory;
* a :class:`RetryState` per entry (first failure, next attempt, failures, last error) in the
  hash ``<stream>:retries:<group>`` (field: the entry id), written on each failure and removed
  with the acknowledgement or the dead letter. A consumer that takes the entry over from a dead
  one reads it, keeps its schedule and its horizon from there, and ``make streams`` counts the
  hash as the group's *retrying* entries.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, cast

import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError

from xtyl_common.db import DB_UNAVAILABLE_ERRORS
from xtyl_common.errors import ClientError, DependencyError
from xtyl_common.events.settings import EventSettings
from xtyl_common.events.streams import retries_key
from xtyl_common.retry import retry_after_of

#: Set in a handler's ctx: True when a transient failure of this attempt is the last one
#: (the entry's retry horizon has passed); see :func:`is_final_attempt`.
FINAL_ATTEMPT_KEY = "xtyl_final_attempt"
#: How much longer than the horizon retry states are kept in Redis.
STATE_MARGIN_S = 86_400.0


class FailureKind(StrEnum):
    PERMANENT = "permanent"
    TRANSIENT = "transient"
    UNEXPECTED = "unexpected"


_TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    DependencyError,
    RedisError,
    *DB_UNAVAILABLE_ERRORS,
)


def kind_of(exc: BaseException) -> FailureKind:
    if isinstance(exc, ClientError):
        return FailureKind.PERMANENT
    if isinstance(exc, _TRANSIENT_ERRORS):
        return FailureKind.TRANSIENT
    return FailureKind.UNEXPECTED


def is_final_attempt(ctx: Mapping[str, Any]) -> bool:
    """In a handler: True when this attempt is the entry's last (its retry horizon has passed),
    so a transient failure now is final (record it as such, then raise)."""
    return bool(ctx.get(FINAL_ATTEMPT_KEY, False))


class RetryState(msgspec.Struct, frozen=True, kw_only=True):
    """What the group remembers of an entry that failed and waits for its next attempt."""

    first_failure_ms: int
    next_attempt_ms: int
    #: Every failed attempt, whatever its kind.
    failures: int
    #: Of which unexpected (bugs): these are bounded by ``max_tries``.
    unexpected: int = 0
    last_error: str = ""


_state_encoder = msgspec.json.Encoder()
_state_decoder = msgspec.json.Decoder(RetryState)


@dataclass(frozen=True, slots=True)
class GiveUp:
    """Dead-letter the entry, with this reason."""

    reason: str


@dataclass(frozen=True, slots=True)
class RetryAt:
    """Try again at ``state.next_attempt_ms``."""

    state: RetryState


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    first_delay_s: float
    max_delay_s: float
    horizon_s: float
    max_unexpected_tries: int

    @classmethod
    def of(cls, settings: EventSettings) -> RetryPolicy:
        return cls(
            first_delay_s=settings.retry_backoff_s,
            max_delay_s=settings.retry_backoff_max_s,
            horizon_s=settings.retry_horizon_s,
            max_unexpected_tries=settings.max_tries,
        )

    @property
    def keep_ms(self) -> int:
        """How long retry states are kept: past any horizon they can reach."""
        return int((self.horizon_s + self.max_delay_s + STATE_MARGIN_S) * 1000)

    def backoff_s(self, failures: int, jitter: Callable[[], float] = random.random) -> float:
        """Exponential, capped at ``max_delay_s``, then scaled by 0.5-1.0 (equal jitter: entries
        that failed together spread out, and no wait falls below half the nominal one)."""
        nominal = min(self.max_delay_s, self.first_delay_s * 2 ** min(failures - 1, 62))
        return nominal * (0.5 + 0.5 * jitter())

    def is_final(self, state: RetryState | None, now_ms: int) -> bool:
        return state is not None and now_ms >= state.first_failure_ms + self.horizon_s * 1000

    def decide(
        self,
        previous: RetryState | None,
        exc: BaseException,
        error: str,
        *,
        now_ms: int,
        final: bool,
        jitter: Callable[[], float] = random.random,
    ) -> GiveUp | RetryAt:
        """What to do after an attempt that raised ``exc`` (described by ``error``)."""
        kind = kind_of(exc)
        if kind is FailureKind.PERMANENT:
            return GiveUp(f"permanent failure: {error}")
        unexpected = int(kind is FailureKind.UNEXPECTED)
        if previous is None:
            state = RetryState(
                first_failure_ms=now_ms,
                next_attempt_ms=now_ms,
                failures=1,
                unexpected=unexpected,
                last_error=error,
            )
        else:
            state = msgspec.structs.replace(
                previous,
                failures=previous.failures + 1,
                unexpected=previous.unexpected + unexpected,
                last_error=error,
            )
        if kind is FailureKind.UNEXPECTED:
            if state.unexpected >= self.max_unexpected_tries:
                return GiveUp(f"failed {state.unexpected} times with an unexpected error: {error}")
            delay_s = self.backoff_s(state.unexpected, jitter)
            return RetryAt(msgspec.structs.replace(state, next_attempt_ms=now_ms + ms(delay_s)))
        if final:
            waited = (now_ms - state.first_failure_ms) / 1000
            return GiveUp(
                f"still failing {_duration(waited)} after the first failure"
                f" ({state.failures} failures): {error}"
            )
        retry_after = retry_after_of(exc)
        delay_s = retry_after * (1 + 0.1 * jitter()) if retry_after is not None else None
        if delay_s is None:
            delay_s = self.backoff_s(state.failures, jitter)
        due = now_ms + ms(delay_s)
        horizon_end = state.first_failure_ms + ms(self.horizon_s)
        if due > horizon_end:
            # one last attempt at the horizon (later only if the dependency asked to wait)
            floor = now_ms + ms(retry_after) if retry_after is not None else now_ms
            due = max(horizon_end, floor)
        return RetryAt(msgspec.structs.replace(state, next_attempt_ms=due))


def ms(seconds: float) -> int:
    return round(seconds * 1000)


def now_ms() -> int:
    """Wall-clock milliseconds: retry states are shared by every consumer of the group."""
    return time.time_ns() // 1_000_000


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.1f} s"


# --- where the states live -----------------------------------------------------------------


async def load_states(
    redis: Redis, stream: str, group: str, entry_ids: Sequence[str], *, timeout_s: float
) -> dict[str, RetryState]:
    """The retry states of these entries of ``stream`` in ``group`` (those that have one)."""
    if not entry_ids:
        return {}
    async with asyncio.timeout(timeout_s):
        raw = await cast(
            "Awaitable[list[bytes | None]]",
            redis.hmget(retries_key(stream, group), list(entry_ids)),
        )
    states: dict[str, RetryState] = {}
    for entry_id, value in zip(entry_ids, raw, strict=True):
        if value is not None:
            try:
                states[entry_id] = _state_decoder.decode(value)
            except msgspec.DecodeError:
                continue  # unreadable: as if the entry had not failed before
    return states


async def save_state(
    redis: Redis,
    stream: str,
    group: str,
    entry_id: str,
    state: RetryState,
    *,
    keep_ms: int,
    timeout_s: float,
) -> None:
    key = retries_key(stream, group)
    async with asyncio.timeout(timeout_s), redis.pipeline(transaction=False) as pipe:
        pipe.hset(key, entry_id, _state_encoder.encode(state).decode())
        pipe.pexpire(key, keep_ms)  # a hash nobody writes to for that long holds nothing alive
        await pipe.execute()
