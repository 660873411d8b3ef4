"""The one retry mechanism: tries bounded by the policy, only the errors named, and the wait a
dependency asks for (``retry_after_s``) deciding the delay."""

from __future__ import annotations

import time

import pytest

from xtyl_common.errors import InvalidInput, Unavailable
from xtyl_common.retry import RetryPolicy, retry_after_of

FAST = RetryPolicy(attempts=3, timeout_s=None, wait_initial_s=0.001, wait_jitter_s=0.0)


class Flaky:
    def __init__(self, failures: list[Exception]) -> None:
        self.failures = failures
        self.calls: list[float] = []

    async def __call__(self, value: str) -> str:
        self.calls.append(time.monotonic())
        if self.failures:
            raise self.failures.pop(0)
        return value

    def gaps(self) -> list[float]:
        return [b - a for a, b in zip(self.calls, self.calls[1:], strict=False)]


async def test_a_transient_error_is_tried_again_until_it_succeeds() -> None:
    flaky = Flaky([Unavailable("down"), Unavailable("down")])
    assert await FAST.call(Unavailable, flaky, "done") == "done"
    assert len(flaky.calls) == 3


async def test_the_last_error_goes_up_after_the_policy_s_tries() -> None:
    flaky = Flaky([Unavailable(str(n)) for n in range(5)])
    with pytest.raises(Unavailable, match="2"):
        await FAST.call(Unavailable, flaky, "never")
    assert len(flaky.calls) == 3


async def test_an_error_not_named_is_not_retried() -> None:
    flaky = Flaky([InvalidInput("bad")])
    with pytest.raises(InvalidInput):
        await FAST.call(Unavailable, flaky, "never")
    assert len(flaky.calls) == 1


async def test_the_dependency_s_retry_after_sets_the_wait() -> None:
    # stamina's own backoff would wait ~1 ms here; the dependency asks for 0.25 s
    flaky = Flaky([Unavailable("slow down", retry_after_s=0.25)])
    assert await FAST.call(Unavailable, flaky, "ok") == "ok"
    (gap,) = flaky.gaps()
    assert 0.24 <= gap < 1.0


async def test_a_retry_after_too_long_to_sleep_here_raises_at_once() -> None:
    policy = RetryPolicy(attempts=5, timeout_s=None, max_retry_after_s=1.0)
    flaky = Flaky([Unavailable("come back in an hour", retry_after_s=3600)])
    started = time.monotonic()
    with pytest.raises(Unavailable) as raised:
        await policy.call(Unavailable, flaky, "never")
    assert raised.value.retry_after_s == 3600  # for the layer that can wait (a stream retry)
    assert len(flaky.calls) == 1
    assert time.monotonic() - started < 0.5


async def test_a_block_is_retried_the_same_way() -> None:
    flaky = Flaky([Unavailable("once")])
    seen: list[str] = []
    async for attempt in FAST.retrying(Unavailable):
        with attempt:
            seen.append(await flaky("block"))
    assert seen == ["block"]
    assert len(flaky.calls) == 2


def test_retry_after_is_read_from_the_exception_only_when_numeric() -> None:
    assert retry_after_of(Unavailable("x", retry_after_s=2.5)) == 2.5
    assert retry_after_of(Unavailable("x", retry_after_s=-1)) == 0.0
    assert retry_after_of(Unavailable("x")) is None
    assert retry_after_of(ValueError("x")) is None


def test_a_policy_makes_at_least_one_attempt() -> None:
    with pytest.raises(ValueError, match="at least one"):
        RetryPolicy(attempts=0)
