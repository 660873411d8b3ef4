"""A circuit breaker: stop calling a dependency that keeps failing, probe it now and then.

closed     every call goes through; ``failures_to_open`` failures in a row open the circuit.
open       no call goes through (the caller skips the dependency at once) until
           ``cooldown_s`` has passed since the last failure.
half-open  exactly one call (the probe) goes through; its success closes the circuit, its
           failure opens it again for another cool-down. Everyone else is refused meanwhile.

Plain logic with an injected clock; the adapter that owns the calls reports each outcome.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

CircuitState = Literal["closed", "open", "half-open"]


class CircuitBreaker:
    def __init__(
        self,
        *,
        failures_to_open: int,
        cooldown_s: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if failures_to_open < 1 or cooldown_s <= 0:
            raise ValueError("failures_to_open must be >= 1 and cooldown_s > 0")
        self._failures_to_open = failures_to_open
        self._cooldown_s = cooldown_s
        self._monotonic = monotonic
        self._state: CircuitState = "closed"
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False
        #: why the circuit last opened (the last failure), for logs and readiness
        self.last_failure = ""

    @property
    def state(self) -> CircuitState:
        if self._state == "open" and self._cool_down_over():
            return "half-open"
        return self._state

    def allow(self) -> bool:
        """Whether a call may go through now; a True in half-open makes the caller the probe,
        which must then report its outcome (or :meth:`abandon`)."""
        if self._state == "closed":
            return True
        if self._state == "open":
            if not self._cool_down_over():
                return False
            self._state = "half-open"
        if self._probing:
            return False
        self._probing = True
        return True

    def record_success(self) -> bool:
        """A call succeeded; True when this closed the circuit."""
        closed = self._state != "closed"
        self._state = "closed"
        self._failures = 0
        self._probing = False
        return closed

    def record_failure(self, reason: str) -> bool:
        """A call failed; True when this opened the circuit (or opened it again after a probe).

        A failure reported while the circuit is already open (a call that started before it
        opened) changes nothing.
        """
        self.last_failure = reason
        if self._state == "open":
            return False
        if self._state == "closed":
            self._failures += 1
            if self._failures < self._failures_to_open:
                return False
        self._state = "open"
        self._opened_at = self._monotonic()
        self._probing = False
        return True

    def abandon(self) -> None:
        """The call ended with no verdict (cancelled): let another caller probe."""
        self._probing = False

    def _cool_down_over(self) -> bool:
        return self._monotonic() - self._opened_at >= self._cooldown_s
