"""The limiter's circuit breaker: stop calling a failing Redis, probe it once per cool-down."""

from __future__ import annotations

import pytest

from xtyl_gateway.domain.circuit import CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def breaker(clock: Clock) -> CircuitBreaker:
    return CircuitBreaker(failures_to_open=3, cooldown_s=1.0, monotonic=clock)


def test_opens_after_consecutive_failures_only(breaker: CircuitBreaker) -> None:
    for _ in range(5):
        assert breaker.allow()
        breaker.record_failure("timeout")
        assert breaker.allow()
        breaker.record_failure("timeout")
        assert breaker.allow()
        breaker.record_success()  # a success in between: the count starts again
    assert breaker.state == "closed"

    assert [breaker.record_failure("refused") for _ in range(3)] == [False, False, True]
    assert breaker.state == "open"
    assert not breaker.allow()
    assert breaker.last_failure == "refused"


def test_late_failures_while_open_change_nothing(breaker: CircuitBreaker, clock: Clock) -> None:
    for _ in range(3):
        breaker.record_failure("timeout")
    clock.now += 0.9
    assert breaker.record_failure("timeout") is False  # a call that started before it opened
    clock.now += 0.1
    assert breaker.state == "half-open", "the cool-down runs from when it opened"


def test_one_probe_after_the_cool_down_closes_or_reopens(
    breaker: CircuitBreaker, clock: Clock
) -> None:
    for _ in range(3):
        breaker.record_failure("timeout")
    clock.now += 0.99
    assert not breaker.allow()

    clock.now += 0.01
    assert breaker.state == "half-open"
    assert breaker.allow(), "the first caller after the cool-down probes"
    assert not breaker.allow(), "everyone else passes without waiting for the probe"
    assert breaker.record_failure("timeout") is True
    assert breaker.state == "open"
    assert not breaker.allow()

    clock.now += 1.0
    assert breaker.allow()
    assert breaker.record_success() is True
    assert breaker.state == "closed"
    assert all(breaker.allow() for _ in range(10))


def test_an_abandoned_probe_lets_the_next_caller_probe(
    breaker: CircuitBreaker, clock: Clock
) -> None:
    for _ in range(3):
        breaker.record_failure("timeout")
    clock.now += 1.0
    assert breaker.allow()
    breaker.abandon()  # the probing request was cancelled
    assert breaker.allow()
    assert not breaker.allow()


def test_refuses_nonsense_settings() -> None:
    with pytest.raises(ValueError, match="failures_to_open"):
        CircuitBreaker(failures_to_open=0, cooldown_s=1.0)
    with pytest.raises(ValueError, match="cooldown_s"):
        CircuitBreaker(failures_to_open=1, cooldown_s=0)
