"""The retry policy of stream entries: what kind a failure is, when the next attempt is, when
the entry is given up (dead-lettered), which attempt a handler is told it runs."""

from __future__ import annotations

import asyncpg
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from xtyl_common.errors import Conflict, InvalidInput, TimedOut, Unavailable
from xtyl_common.events.handling import Entry
from xtyl_common.events.retries import (
    FailureKind,
    GiveUp,
    RetryAt,
    RetryPolicy,
    RetryState,
    kind_of,
)

HOUR_MS = 3_600_000
POLICY = RetryPolicy(
    first_delay_s=1.0, max_delay_s=300.0, horizon_s=24 * 3600, max_unexpected_tries=5
)


def highest() -> float:
    return 1.0 - 1e-9


def lowest() -> float:
    return 0.0


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (InvalidInput("bad document"), FailureKind.PERMANENT),
        (Conflict("refused"), FailureKind.PERMANENT),
        (Unavailable("brevo 503"), FailureKind.TRANSIENT),
        (TimedOut("embeddings"), FailureKind.TRANSIENT),
        (asyncpg.CannotConnectNowError("starting up"), FailureKind.TRANSIENT),
        (ConnectionRefusedError(), FailureKind.TRANSIENT),
        (TimeoutError(), FailureKind.TRANSIENT),
        (RedisConnectionError("down"), FailureKind.TRANSIENT),
        (KeyError("bug"), FailureKind.UNEXPECTED),
        (asyncpg.UniqueViolationError("dup"), FailureKind.UNEXPECTED),
    ],
)
def test_failures_are_read_through_the_error_tree(exc: BaseException, kind: FailureKind) -> None:
    assert kind_of(exc) is kind


def test_a_permanent_failure_gives_up_at_once() -> None:
    decision = POLICY.decide(None, InvalidInput("4xx"), "InvalidInput: 4xx", now_ms=0, final=False)
    assert decision == GiveUp("permanent failure: InvalidInput: 4xx")


def test_transient_delays_double_up_to_the_cap_with_jitter_between_half_and_all() -> None:
    state: RetryState | None = None
    highs: list[float] = []
    now = 0
    for _ in range(12):
        decision = POLICY.decide(
            state, Unavailable("down"), "x", now_ms=now, final=False, jitter=highest
        )
        assert isinstance(decision, RetryAt)
        state = decision.state
        highs.append((state.next_attempt_ms - now) / 1000)
        now = state.next_attempt_ms
    assert highs == pytest.approx([1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300], abs=0.01)
    assert state is not None
    assert (state.first_failure_ms, state.failures) == (0, 12)
    assert POLICY.backoff_s(3, lowest) == pytest.approx(2.0)  # half of the nominal 4 s


def test_a_dependency_that_asks_to_wait_is_waited_for_even_beyond_the_cap() -> None:
    limited = Unavailable("rate limited", retry_after_s=900)
    decision = POLICY.decide(None, limited, "x", now_ms=0, final=False, jitter=lowest)
    assert isinstance(decision, RetryAt)
    assert decision.state.next_attempt_ms == 900_000


def test_the_last_attempt_is_at_the_horizon_and_a_failure_there_gives_up() -> None:
    state = RetryState(first_failure_ms=0, next_attempt_ms=0, failures=40)
    almost = 24 * HOUR_MS - 10_000  # 10 s before the horizon, the next wait would be 300 s
    decision = POLICY.decide(state, Unavailable("down"), "x", now_ms=almost, final=False)
    assert isinstance(decision, RetryAt)
    assert decision.state.next_attempt_ms == 24 * HOUR_MS
    assert not POLICY.is_final(decision.state, almost)
    assert POLICY.is_final(decision.state, 24 * HOUR_MS)

    last = POLICY.decide(
        decision.state, TimedOut("slow"), "TimedOut: slow", now_ms=24 * HOUR_MS, final=True
    )
    assert last == GiveUp(
        "still failing 24.0 h after the first failure (42 failures): TimedOut: slow"
    )


def test_unexpected_errors_give_up_after_max_tries_whatever_the_horizon() -> None:
    state: RetryState | None = None
    decisions: list[GiveUp | RetryAt] = []
    for now in range(5):
        decision = POLICY.decide(state, KeyError("bug"), "KeyError: 'bug'", now_ms=now, final=False)
        decisions.append(decision)
        if isinstance(decision, RetryAt):
            state = decision.state
    assert [type(d) for d in decisions] == [RetryAt] * 4 + [GiveUp]
    assert decisions[-1] == GiveUp("failed 5 times with an unexpected error: KeyError: 'bug'")


def test_transient_failures_do_not_use_up_the_tries_of_unexpected_ones() -> None:
    state = RetryState(first_failure_ms=0, next_attempt_ms=0, failures=100, unexpected=3)
    decision = POLICY.decide(state, KeyError("bug"), "KeyError", now_ms=HOUR_MS, final=False)
    assert isinstance(decision, RetryAt)
    assert (decision.state.failures, decision.state.unexpected) == (101, 4)


def _state(failures: int) -> RetryState:
    return RetryState(first_failure_ms=0, next_attempt_ms=0, failures=failures)


@pytest.mark.parametrize(
    ("deliveries", "failures", "job_try"),
    [
        (1, 0, 1),  # first run
        (1, 2, 3),  # third run in the same consumer after two failures
        (2, 0, 2),  # taken over from a worker that died while running it
        (2, 1, 2),  # failed, waited, taken over from a worker that died meanwhile
        (4, 1, 4),  # failed once, three workers died on it
    ],
)
def test_a_handler_is_told_which_attempt_it_runs(
    deliveries: int, failures: int, job_try: int
) -> None:
    state = _state(failures) if failures else None
    entry = Entry("s", "1-0", "file.uploaded", b"{}", deliveries=deliveries, state=state)

    assert entry.job_try == job_try
