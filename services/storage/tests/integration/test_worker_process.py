"""A real ``python -m xtyl_storage.worker`` on the ``users`` stream: ``user.deleted`` erases
the user, and a worker SIGKILLed half-way through (a DeleteObjects call in flight) leaves the
entry pending: the next worker takes it over and finishes the erasure."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from redis.asyncio import Redis

from xtyl_common.events import (
    Event,
    UserCreated,
    UserCreatedPayload,
    UserDeleted,
    UserDeletedPayload,
    encode_event,
    stream_key,
)
from xtyl_common.redis_client import create_redis
from xtyl_devstack.processes import ManagedProcess
from xtyl_devstack.service_process import start_worker_process
from xtyl_devstack.testing import eventually

from .asgi import AsgiClient
from .conftest import FaultyS3, User, service_headers

pytestmark = pytest.mark.integration


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = create_redis(redis_url)
    yield client
    await client.aclose()


async def publish(redis: Redis, prefix: str, event: Event) -> None:
    await redis.xadd(
        stream_key(event.domain, prefix),
        {b"type": event.type.encode(), b"event": encode_event(event)},
    )


async def start_worker(env: dict[str, str], log_dir: Path) -> ManagedProcess:
    return await asyncio.to_thread(
        start_worker_process,
        "xtyl_storage.worker",
        env,
        log_dir=log_dir,
        name="storage-worker",
        ready_log=b"consumer_started",
    )


def keys_under(s3_client: Any, bucket: str, prefix: str) -> list[str]:
    response = s3_client.list_objects_v2(Bucket=bucket, Prefix=prefix)
    return sorted(item["Key"] for item in response.get("Contents", []))


@pytest.mark.timeout(180)
async def test_a_worker_killed_half_way_through_an_erasure_is_finished_by_the_next(
    client: AsgiClient,
    storage_env: dict[str, str],
    faulty_s3: FaultyS3,
    alice: User,
    bob: User,
    db: asyncpg.Connection,
    redis: Redis,
    s3_client: Any,
    s3_bucket: str,
    service_log_dir: Path,
) -> None:
    for user in (alice, alice, bob):
        resp = await client.post(
            "/v1/files",
            params={"filename": "a.txt"},
            headers={**user.headers, "Content-Type": "text/plain"},
            content=b"some text",
        )
        assert resp.status_code == 201, resp.text
    for n in range(6):
        s3_client.put_object(Bucket=s3_bucket, Key=f"{alice.id}/stray-{n}/x.bin", Body=b"x")
    bob_keys = keys_under(s3_client, s3_bucket, f"{bob.id}/")

    deletes: list[str] = []

    def second_delete_objects(request: Any) -> bool:
        if request.method == "POST" and "delete" in request.query:
            deletes.append(request.path_qs)
            return len(deletes) > 1
        return False

    faulty_s3.hold = second_delete_objects
    prefix = f"test:{uuid.uuid4().hex[:8]}:events"
    env = {
        **storage_env,
        "EVENTS_STREAM_PREFIX": prefix,
        "EVENTS_READ_BLOCK_MS": "200",
        "EVENTS_CLAIM_IDLE_MS": "1000",
        "ERASURE_BATCH_SIZE": "2",
    }
    # another type of the users stream first: acknowledged and skipped
    await publish(
        redis,
        prefix,
        UserCreated(
            producer="test",
            payload=UserCreatedPayload(user_id=alice.id, email="a@example.com", full_name=None),
        ),
    )
    await publish(
        redis, prefix, UserDeleted(producer="test", payload=UserDeletedPayload(user_id=alice.id))
    )

    first = await start_worker({**env, "R2_ENDPOINT": faulty_s3.url}, service_log_dir)
    try:
        async with asyncio.timeout(30):
            while not faulty_s3.held:
                await asyncio.sleep(0.05)
        assert first.pid is not None
        os.killpg(first.pid, signal.SIGKILL)
    finally:
        await asyncio.to_thread(first.stop)
    started = await db.fetchrow(
        "select attempts, completed_at from xtyl_storage.erasures where user_id = $1", alice.id
    )
    assert started is not None
    assert started["completed_at"] is None
    faulty_s3.resume.set()

    second = await start_worker(env, service_log_dir)
    try:

        async def erased() -> bool:
            done = await db.fetchval(
                "select completed_at is not null from xtyl_storage.erasures where user_id = $1",
                alice.id,
            )
            return bool(done)

        await eventually(erased, timeout_s=60, interval_s=0.1)
    finally:
        await asyncio.to_thread(second.stop)

    assert keys_under(s3_client, s3_bucket, f"{alice.id}/") == []
    assert keys_under(s3_client, s3_bucket, f"{bob.id}/") == bob_keys
    assert (
        await db.fetchval("select count(*) from xtyl_storage.files where owner_id = $1", alice.id)
        == 0
    )
    assert (
        await db.fetchval("select count(*) from xtyl_storage.files where owner_id = $1", bob.id)
        == 1
    )
    state = (
        await client.get("/internal/me/erasure", headers=service_headers("gateway", alice.id))
    ).json()
    assert state["status"] == "erased"
    assert state["attempts"] == 2  # the killed run and the one that finished it
    assert state["erased"]["files"] == 2
