"""A stream consumer's loops are supervised: an exception nobody foresaw in a read does not end
reading; the entry is handled after the backoff, and the consumer reports its health.

Real Redis; the failure comes from a real redis-py client whose first reads raise.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import structlog
from redis.asyncio import Redis

from xtyl_common.events import (
    EventSettings,
    FileUploaded,
    FileUploadedPayload,
    StreamConsumer,
    encode_event,
    stream_key,
)
from xtyl_devstack.testing import eventually

pytestmark = pytest.mark.integration


class BrokenRead(Exception):
    """Not a Redis or OS error: nothing the consumer knows of."""


class FirstReadsFail(Redis):
    """A real client whose first ``failures`` XREADGROUPs raise :class:`BrokenRead`."""

    failures = 3
    raised = 0

    async def xreadgroup(self, *args: Any, **kwargs: Any) -> Any:
        if self.raised < self.failures:
            self.raised += 1
            raise BrokenRead(f"read #{self.raised} broke")
        return await super().xreadgroup(*args, **kwargs)


@pytest.fixture
def settings(redis_prefix: str) -> EventSettings:
    return EventSettings(
        stream_prefix=redis_prefix + "events",
        read_block_ms=200,
        claim_idle_ms=60_000,
        retry_poll_s=0.05,
        redis_timeout_s=2.0,
    )


@pytest.fixture
async def flaky_redis(redis_url: str) -> AsyncIterator[FirstReadsFail]:
    client = FirstReadsFail.from_url(redis_url, socket_timeout=3)
    yield client
    await client.aclose()


def _uploaded() -> FileUploaded:
    return FileUploaded(
        producer="test",
        payload=FileUploadedPayload(
            file_id=uuid.uuid4(),
            owner_id=uuid.uuid4(),
            key="k/a.txt",
            name="a.txt",
            content_type="text/plain",
            size=1,
            sha256="0" * 64,
        ),
    )


async def test_reading_survives_an_unknown_exception_and_the_entry_is_handled(
    flaky_redis: FirstReadsFail, settings: EventSettings
) -> None:
    handled: list[uuid.UUID] = []

    async def handler(event: FileUploaded, ctx: dict[str, Any]) -> None:
        handled.append(event.id)

    event = _uploaded()
    await flaky_redis.xadd(
        stream_key("files", settings.stream_prefix),
        {b"type": event.type.encode(), b"event": encode_event(event)},
    )
    consumer = StreamConsumer(
        flaky_redis, group="workers", handlers={FileUploaded: handler}, settings=settings
    )
    with structlog.testing.capture_logs() as logs:
        await consumer.start({})
        try:

            async def was_handled() -> bool:
                return handled == [event.id]

            await eventually(was_handled, timeout_s=10)
            assert flaky_redis.raised == 3
            assert consumer.healthy()
            read = next(s for s in consumer.state() if s.name == "stream-read")
            assert (read.running, read.failures, read.last_error) == (
                True,
                0,
                "BrokenRead: read #3 broke",
            )
        finally:
            await consumer.stop(grace_period_s=1.0)

    failures = [e for e in logs if e["event"] == "consumer_step_failed"]
    assert len(failures) == 3
    assert all(e["step"] == "read_once" and e["log_level"] == "error" for e in failures)
    assert all(isinstance(e["exc_info"], BrokenRead) for e in failures), "traceback logged"
    assert not consumer.healthy(), "a stopped consumer is not healthy"
