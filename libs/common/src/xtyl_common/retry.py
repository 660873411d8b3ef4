"""Retries, done one way: stamina (tenacity underneath), never a hand-written loop.

Every call path that retries in process names one :class:`RetryPolicy`, so its number of tries
and its waits stand in one place, and runs through :meth:`RetryPolicy.call` (a coroutine
function) or :meth:`RetryPolicy.retrying` (a block)::

    STORAGE_READS = RetryPolicy(attempts=3, wait_initial_s=0.1, wait_max_s=1.0)

    body = await STORAGE_READS.call(DependencyError, client.get, url)

    async for attempt in STORAGE_READS.retrying(DependencyError):
        with attempt:
            await write_part()

Waits are exponential with jitter (stamina's), bounded by ``attempts`` and ``timeout_s``. A
dependency that says how long to wait (``retry_after_s`` on the exception: Brevo's
``x-sib-ratelimit-reset``, a ``Retry-After``) sets the wait of that retry instead; a wait longer
than ``max_retry_after_s`` is not slept in process: the error goes up at once, to the layer that
can wait without holding anything (a stream entry's deferred retry, see
:mod:`xtyl_common.events.retries`, which honours the same ``retry_after_s``).

One layer per call path: a call retried here is not retried again by its caller in process.
Each retry is logged as ``retry_scheduled`` (what is retried, the try, the wait, the error's
type and message), never with the call's arguments: stamina's own hooks would log those, and
they may hold secrets, so :func:`install_retry_log` replaces them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import ParamSpec, TypeVar

import msgspec
import stamina
import structlog
from stamina import Attempt
from stamina.instrumentation import RetryDetails, set_on_retry_hooks

log = structlog.stdlib.get_logger("xtyl.retry")

P = ParamSpec("P")
T = TypeVar("T")

#: What may be retried: exception classes.
RetryOn = type[Exception] | tuple[type[Exception], ...]


def retry_after_of(exc: BaseException) -> float | None:
    """The wait a dependency asked for (``retry_after_s`` on the exception), if it said."""
    after = getattr(exc, "retry_after_s", None)
    if isinstance(after, int | float) and not isinstance(after, bool):
        return max(0.0, float(after))
    return None


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """How one call path retries: at most ``attempts`` calls in ``timeout_s`` in all."""

    attempts: int = 3
    #: the whole call path, waits included; ``None``: only ``attempts`` bounds it
    timeout_s: float | None = 30.0
    wait_initial_s: float = 0.05
    wait_max_s: float = 1.0
    wait_jitter_s: float = 0.05
    wait_exp_base: float = 2.0
    #: the longest wait a dependency may ask for that is slept here (longer: raised at once)
    max_retry_after_s: float = 30.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("a retry policy makes at least one attempt")

    def decide(self, on: RetryOn) -> Callable[[Exception], bool | float]:
        """stamina's backoff hook: not an ``on`` error: raise; a wait the dependency asked
        for: that wait (or raise when it is too long to sleep here); else stamina's backoff."""

        def hook(exc: Exception) -> bool | float:
            if not isinstance(exc, on):
                return False
            after = retry_after_of(exc)
            if after is None:
                return True
            return after if after <= self.max_retry_after_s else False

        return hook

    async def call(
        self, on: RetryOn, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """``await fn(*args, **kwargs)``, tried again after an ``on`` error."""
        caller = stamina.AsyncRetryingCaller(
            attempts=self.attempts,
            timeout=self.timeout_s,
            wait_initial=self.wait_initial_s,
            wait_max=self.wait_max_s,
            wait_jitter=self.wait_jitter_s,
            wait_exp_base=self.wait_exp_base,
        )
        return await caller(self.decide(on), fn, *args, **kwargs)

    async def retrying(self, on: RetryOn) -> AsyncIterator[Attempt]:
        """The attempts of a block (``async for attempt in ...: with attempt: ...``)."""
        async for attempt in stamina.retry_context(
            on=self.decide(on),
            attempts=self.attempts,
            timeout=self.timeout_s,
            wait_initial=self.wait_initial_s,
            wait_max=self.wait_max_s,
            wait_jitter=self.wait_jitter_s,
            wait_exp_base=self.wait_exp_base,
        ):
            yield attempt


def _log_retry(details: RetryDetails) -> None:
    log.warning(
        "retry_scheduled",
        retried=details.name,
        retry_num=details.retry_num,
        wait_s=round(details.wait_for, 3),
        waited_s=round(details.waited_so_far, 3),
        error=f"{type(details.caused_by).__name__}: {details.caused_by}"[:300],
    )


def install_retry_log() -> None:
    """Log retries as :func:`_log_retry` does, instead of stamina's default hooks."""
    set_on_retry_hooks([_log_retry])


install_retry_log()

#: No retry: one attempt (a call path that must not repeat, e.g. a non-idempotent request).
NO_RETRY = RetryPolicy(attempts=1)
