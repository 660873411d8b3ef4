"""The inline job's deferred retries: 2 s doubling to 60 s, or the wait the dependency asked for
(a long ``Retry-After`` of the embeddings endpoint is waited here, not in process)."""

from __future__ import annotations

from xtyl_common.errors import Unavailable
from xtyl_rag.worker import INLINE_JOB_BACKOFF_MAX_S, inline_retry_delay


def test_a_failed_run_waits_longer_each_try_up_to_a_minute() -> None:
    failure = Unavailable("postgres went away")
    delays = [inline_retry_delay(tries, failure) for tries in range(1, 8)]
    assert delays[:4] == [2.0, 4.0, 8.0, 16.0]
    assert max(delays) == INLINE_JOB_BACKOFF_MAX_S


def test_the_wait_a_dependency_asked_for_sets_the_delay() -> None:
    rate_limited = Unavailable("slow down", code="embedding_rate_limited", retry_after_s=90)
    assert inline_retry_delay(1, rate_limited) == 90
