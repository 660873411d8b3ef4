"""Supervised background loops: a failed pass is logged and backed off, never the end.

A background task of a process (the outbox relay, a stream consumer's loops) runs one *pass*
after another. A pass may fail with anything: an error of a dependency (Postgres or Redis
gone, a timeout, asyncpg's ``InterfaceError`` on a pooled connection that broke meanwhile) or
a bug. The loop catches every ``Exception`` of a pass, logs it (:func:`log_failure`: a warning
for a dependency error, an error with the traceback for anything else), waits
(:class:`Backoff`: exponential, with jitter, capped) and goes on. Only cancellation ends it::

    backoff = Backoff(0.2, 5.0)
    while not stopping.is_set():
        try:
            await one_pass()
        except Exception as exc:
            delay = backoff.next_delay()
            health.failed(exc)
            log_failure(log, "thing_failed", exc, expected=DEPENDENCY_ERRORS, retry_in_s=delay)
            await pause(delay)
            continue
        health.passed()
        backoff.reset()
        await pause(poll_interval_s)

:class:`LoopHealth` is what the loop tells the outside: whether its task still runs, when a
pass last succeeded, how many failed since. ``/readyz`` checks read it, and so can a worker's
health listener (:meth:`LoopHealth.state` is plain data).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from typing import Any

import msgspec
import structlog

#: Dependency errors no code here can cause: a warning without a traceback is enough.
#: (Callers add their drivers' errors: asyncpg, redis-py.)
OS_ERRORS: tuple[type[BaseException], ...] = (OSError, TimeoutError)


def describe(exc: BaseException) -> str:
    """``"Type: first line of the message"``: short enough for a log field or a reason."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def log_failure(
    logger: structlog.stdlib.BoundLogger,
    event: str,
    exc: BaseException,
    *,
    expected: tuple[type[BaseException], ...],
    **fields: Any,
) -> None:
    """Log a failed pass: a warning when ``exc`` is one of the ``expected`` dependency
    errors, an error with the traceback otherwise (a bug, or a failure nobody foresaw)."""
    if isinstance(exc, expected):
        logger.warning(event, error=describe(exc), **fields)
    else:
        logger.error(event, error=describe(exc), unexpected=True, exc_info=exc, **fields)


class Backoff:
    """Delays after consecutive failures: ``initial_s`` doubling up to ``max_s``, each drawn
    from ``[(1 - jitter) * d, d]`` so replicas do not retry in step and ``max_s`` is a cap."""

    def __init__(self, initial_s: float, max_s: float, *, jitter: float = 0.2) -> None:
        if initial_s <= 0 or max_s < initial_s or not 0 <= jitter < 1:
            raise ValueError("need 0 < initial_s <= max_s and 0 <= jitter < 1")
        self.initial_s = initial_s
        self.max_s = max_s
        self.jitter = jitter
        self._next = initial_s

    def next_delay(self) -> float:
        delay = self._next
        self._next = min(self._next * 2, self.max_s)
        return delay * random.uniform(1 - self.jitter, 1.0)  # noqa: S311 - not a secret

    def reset(self) -> None:
        self._next = self.initial_s


class LoopState(msgspec.Struct, frozen=True, kw_only=True):
    """A supervised loop as a health listener reports it."""

    name: str
    #: Its task exists and has not ended.
    running: bool
    #: Passes that succeeded since it started.
    passes: int
    #: Passes that failed in a row (0 after a success).
    failures: int
    #: Seconds since the last successful pass (or since the start, before the first one).
    since_last_pass_s: float
    stale_after_s: float
    last_error: str | None
    #: ``None`` when healthy, else why not (:meth:`LoopHealth.problem`).
    problem: str | None


class LoopHealth:
    """The liveness of one supervised loop: is its task alive, do its passes succeed.

    Unhealthy when its task is missing or has ended (it died, or was stopped), or when no pass
    has succeeded for ``stale_after_s`` (it fails every time, or is stuck in one pass). Pick
    ``stale_after_s`` far above the loop's poll interval plus its longest backoff.
    """

    def __init__(
        self, name: str, *, stale_after_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.name = name
        self.stale_after_s = stale_after_s
        self.passes = 0
        self.failures = 0
        self.last_error: str | None = None
        self._clock = clock
        self._last_ok = clock()
        self._task: asyncio.Task[Any] | None = None

    def watch(self, task: asyncio.Task[Any]) -> asyncio.Task[Any]:
        """Follow ``task`` (the loop's); the staleness clock starts now."""
        self._task = task
        self._last_ok = self._clock()
        return task

    def passed(self) -> None:
        self.passes += 1
        self.failures = 0
        self._last_ok = self._clock()

    def progressed(self) -> None:
        """Part of a long pass succeeded (a batch committed): not stale, even if the whole
        pass takes longer than ``stale_after_s``."""
        self._last_ok = self._clock()

    def failed(self, exc: BaseException) -> None:
        self.failures += 1
        self.last_error = describe(exc)

    @property
    def since_last_pass_s(self) -> float:
        return self._clock() - self._last_ok

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def stale(self) -> bool:
        """No pass has succeeded for ``stale_after_s``."""
        return self.since_last_pass_s > self.stale_after_s

    def problem(self) -> str | None:
        """Why the loop is unhealthy, or ``None``."""
        task = self._task
        if task is None:
            return f"{self.name} is not running"
        if task.done():
            if task.cancelled():
                return f"{self.name} stopped (cancelled)"
            error = task.exception()
            ended = f"died: {describe(error)}" if error is not None else "stopped"
            return f"{self.name} {ended}"
        if self.stale():
            reason = (
                f"{self.name}: no pass succeeded for {self.since_last_pass_s:.0f} s"
                f" (limit {self.stale_after_s:g} s)"
            )
            if self.failures:
                reason += f"; {self.failures} failed in a row, last: {self.last_error}"
            return reason
        return None

    def healthy(self) -> bool:
        return self.problem() is None

    def state(self) -> LoopState:
        return LoopState(
            name=self.name,
            running=self.running,
            passes=self.passes,
            failures=self.failures,
            since_last_pass_s=round(self.since_last_pass_s, 3),
            stale_after_s=self.stale_after_s,
            last_error=self.last_error,
            problem=self.problem(),
        )
