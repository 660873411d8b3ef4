"""Backoff and LoopHealth: the delays a failing loop waits, and the reasons it reports."""

from __future__ import annotations

import asyncio

import pytest

from xtyl_common.supervise import Backoff, LoopHealth


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_backoff_doubles_up_to_a_cap_that_jitter_never_exceeds() -> None:
    backoff = Backoff(0.2, 5.0, jitter=0.2)
    delays = [backoff.next_delay() for _ in range(12)]
    nominal = [min(0.2 * 2**n, 5.0) for n in range(12)]
    for delay, expected in zip(delays, nominal, strict=True):
        assert expected * 0.8 <= delay <= expected
    assert max(delays) <= 5.0

    backoff.reset()
    assert 0.16 <= backoff.next_delay() <= 0.2


def test_backoff_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="initial_s"):
        Backoff(1.0, 0.5)


async def test_a_loop_is_healthy_while_its_passes_succeed_and_stale_after_the_limit() -> None:
    clock = Clock()
    health = LoopHealth("relay", stale_after_s=30.0, clock=clock)
    assert health.problem() == "relay is not running"

    task = asyncio.create_task(asyncio.sleep(60))
    try:
        health.watch(task)
        clock.now += 29
        assert health.healthy()

        health.failed(ConnectionRefusedError(111, "Connection refused"))
        health.failed(ConnectionRefusedError(111, "Connection refused"))
        clock.now += 2
        assert health.problem() == (
            "relay: no pass succeeded for 31 s (limit 30 s); 2 failed in a row,"
            " last: ConnectionRefusedError: [Errno 111] Connection refused"
        )
        state = health.state()
        assert (state.running, state.failures, state.passes) == (True, 2, 0)

        health.passed()
        assert health.healthy()
        assert (health.failures, health.passes) == (0, 1)
        clock.now += 20
        health.progressed()  # a long pass that commits batch after batch is not stale
        clock.now += 20
        assert health.healthy()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert health.problem() == "relay stopped (cancelled)"


async def test_a_loop_whose_task_died_says_with_what() -> None:
    async def crash() -> None:
        raise RuntimeError("a bug\nwith details")

    health = LoopHealth("consumer read", stale_after_s=30.0)
    task = health.watch(asyncio.create_task(crash()))
    await asyncio.gather(task, return_exceptions=True)

    assert health.problem() == "consumer read died: RuntimeError: a bug"
    assert health.state().running is False
