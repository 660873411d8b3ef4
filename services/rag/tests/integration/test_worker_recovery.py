"""Real rag-worker processes through a SIGKILL mid-ingest and through a start ahead of storage.

Each test runs its own storage process (on a port of its own, so it can stop and start it) and
its own rag-workers on a stream prefix of their own, with a short claim time and lease:

* a worker SIGKILLed while documents are being embedded: after a new worker starts, every
  document is ready within ``EVENTS_CLAIM_IDLE_MS`` + 60 s, with its chunks, vectors and
  ``document.indexed`` event exactly once;
* a worker started while storage is down: its jobs wait for storage before they claim their
  documents, none fails or spends a try, and every document is ready once storage answers.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from xtyl_devstack import s3
from xtyl_devstack.ports import free_port
from xtyl_devstack.processes import ManagedProcess
from xtyl_devstack.service_process import (
    RunningService,
    running_service_async,
    start_worker_process,
)
from xtyl_devstack.stack import StackInfo
from xtyl_rag.service import RagService

from .conftest import User, documents_by_file, storage_env, upload
from .samples import make_text

pytestmark = pytest.mark.integration

CLAIM_IDLE_MS = 3000
LEASE_S = 5
#: The claim under test: every document ready this long after the new worker was started.
READY_WITHIN_S = CLAIM_IDLE_MS / 1000 + 60
WORKING = ("extracting", "chunking", "embedding")


@dataclass(frozen=True)
class Recovery:
    """One test's own storage port, stream prefix and environments."""

    storage_env: dict[str, str]
    worker_env: dict[str, str]
    storage_port: int
    prefix: str
    log_dir: Path

    def storage(self) -> AbstractAsyncContextManager[RunningService]:
        return running_service_async(
            "xtyl_storage",
            self.storage_env,
            log_dir=self.log_dir,
            name="storage-recovery",
            port=self.storage_port,
            ready_path="/readyz",
        )

    async def start_worker(self, env: dict[str, str] | None = None) -> ManagedProcess:
        return await asyncio.to_thread(
            start_worker_process,
            "xtyl_rag.worker",
            self.worker_env | (env or {}),
            log_dir=self.log_dir,
            name="rag-worker-recovery",
            ready_log=b"rag_worker_started",
        )


@pytest.fixture
async def recovery(
    rag_env: dict[str, str], devstack: StackInfo, s3_client: Any, service_log_dir: Path
) -> AsyncIterator[Recovery]:
    bucket = f"rag-recovery-{secrets.token_hex(4)}"
    await asyncio.to_thread(s3_client.create_bucket, Bucket=bucket)
    prefix = f"test:recovery:{secrets.token_hex(4)}:events"
    port = free_port()
    events = {"EVENTS_STREAM_PREFIX": prefix}
    yield Recovery(
        storage_env=storage_env(rag_env, devstack, bucket) | events,
        worker_env=rag_env
        | events
        | {
            "STORAGE_URL": f"http://127.0.0.1:{port}",
            "EVENTS_CLAIM_IDLE_MS": str(CLAIM_IDLE_MS),
            "INDEX_LEASE_S": str(LEASE_S),
        },
        storage_port=port,
        prefix=prefix,
        log_dir=service_log_dir,
    )
    await asyncio.to_thread(s3.delete_bucket, s3_client, bucket)


async def statuses(service: RagService, owner: uuid.UUID) -> dict[uuid.UUID, str]:
    rows = await service.pool.fetch(
        "select id, status from xtyl_rag.documents where owner_id = $1", owner
    )
    return {row["id"]: row["status"] for row in rows}


async def wait_all_ready(
    http: aiohttp.ClientSession,
    rag: RunningService,
    user: User,
    file_ids: list[str],
    *,
    deadline: float,
) -> dict[str, dict[str, Any]]:
    """What the user sees once every file's document is ready; fails at ``deadline``."""
    while True:
        documents = await documents_by_file(http, rag, user)
        seen = Counter(documents[f]["status"] if f in documents else "absent" for f in file_ids)
        if seen["ready"] == len(file_ids):
            return documents
        assert seen["failed"] == 0, [d for d in documents.values() if d["status"] == "failed"]
        assert time.monotonic() < deadline, f"not all ready in time: {dict(seen)}"
        await asyncio.sleep(0.2)


async def assert_indexed_once(service: RagService, documents: dict[str, dict[str, Any]]) -> None:
    """Each document's chunks, vectors and ``document.indexed`` event exist exactly once."""
    for document in documents.values():
        row = await service.pool.fetchrow(
            "select (select count(*) from xtyl_rag.chunks where document_id = $1) as chunks,"
            " (select count(distinct ordinal) from xtyl_rag.chunks where document_id = $1)"
            " as ordinals,"
            " (select count(*) from xtyl_rag.chunk_embeddings where document_id = $1)"
            " as vectors,"
            " (select count(*) from xtyl_rag.outbox where type = 'document.indexed'"
            "  and payload->>'document_id' = $1::text) as events",
            uuid.UUID(document["id"]),
        )
        assert row is not None
        expected = document["chunk_count"]
        assert expected > 0, document
        found = (row["chunks"], row["ordinals"], row["vectors"], row["events"])
        assert found == (expected, expected, expected, 1), (document, found)


@pytest.mark.timeout(420)
async def test_a_sigkilled_worker_leaves_no_document_stuck(
    http: aiohttp.ClientSession,
    rag_service: RunningService,
    service: RagService,
    recovery: Recovery,
    make_user: Callable[[], User],
    capsys: pytest.CaptureFixture[str],
) -> None:
    user = make_user()
    async with recovery.storage() as storage:
        worker = await recovery.start_worker()
        try:
            file_ids = [
                await upload(
                    http, storage, user, f"doc-{i}.txt", "text/plain", make_text(2, seed=1000 + i)
                )
                for i in range(24)
            ]
            # kill it while some documents are ready and two are in flight, one being embedded
            deadline = time.monotonic() + 120
            while True:
                seen = await statuses(service, user.id)
                counts = Counter(seen.values())
                working = sum(counts[status] for status in WORKING)
                if counts["ready"] >= 4 and counts["embedding"] >= 1 and working >= 2:
                    break
                assert counts["ready"] < len(file_ids), "every document finished before the kill"
                assert time.monotonic() < deadline, f"no document embedding: {counts}"
                await asyncio.sleep(0.02)
            assert worker.pid is not None
            os.killpg(worker.pid, signal.SIGKILL)  # the worker and its extraction children
            await asyncio.to_thread(worker.stop)
            at_kill = await statuses(service, user.id)
            in_flight = {doc for doc, status in at_kill.items() if status in WORKING}
            assert in_flight, at_kill

            restarted = time.monotonic()
            worker = await recovery.start_worker()
            documents = await wait_all_ready(
                http, rag_service, user, file_ids, deadline=restarted + READY_WITHIN_S
            )
            took = time.monotonic() - restarted
        finally:
            await asyncio.to_thread(worker.stop)

    await assert_indexed_once(service, documents)
    for document in documents.values():
        # the interrupted runs were taken over once (not run again and again)
        expected_attempts = 2 if uuid.UUID(document["id"]) in in_flight else 1
        assert document["attempts"] == expected_attempts, document
        assert document["error"] is None, document
    with capsys.disabled():
        print(
            f"\nSIGKILL mid-ingest: {len(in_flight)} in flight, "
            f"{Counter(at_kill.values())['ready']} ready at the kill; all {len(file_ids)} ready "
            f"{took:.1f} s after the restart (bound {READY_WITHIN_S:.0f} s)"
        )


@pytest.mark.timeout(300)
async def test_a_worker_started_before_storage_waits_and_spends_no_try(
    http: aiohttp.ClientSession,
    rag_service: RunningService,
    service: RagService,
    recovery: Recovery,
    redis_url: str,
    make_user: Callable[[], User],
) -> None:
    user = make_user()
    files_stream = f"{recovery.prefix}:files"
    redis = Redis.from_url(redis_url, socket_timeout=5)
    try:
        async with recovery.storage() as storage:
            file_ids = [
                await upload(
                    http, storage, user, f"early-{i}.txt", "text/plain", make_text(1, seed=2000 + i)
                )
                for i in range(6)
            ]
            deadline = time.monotonic() + 30
            while await redis.xlen(files_stream) < len(file_ids):  # published before it stops
                assert time.monotonic() < deadline, "storage did not publish its uploads"
                await asyncio.sleep(0.05)
        # storage is down: a worker starts (after a restart of everything, it came up first)
        # and takes the jobs; they wait for storage, up to STORAGE_READY_WAIT_S
        worker = await recovery.start_worker(env={"STORAGE_READY_WAIT_S": "60"})
        try:
            await asyncio.sleep(6)
            async with recovery.storage():
                documents = await wait_all_ready(
                    http, rag_service, user, file_ids, deadline=time.monotonic() + 60
                )
        finally:
            await asyncio.to_thread(worker.stop)
        dead_letters = await redis.xlen(f"{files_stream}:dead")
    finally:
        await redis.aclose()

    for document in documents.values():
        assert document["attempts"] == 1, document  # no run was spent on the outage
        assert document["error"] is None, document
    assert dead_letters == 0
    await assert_indexed_once(service, documents)
    assert worker.log_path is not None
    log = worker.log_path.read_bytes()
    assert b"storage_not_ready" in log
    assert b"job_retry" not in log
    assert b"document_retry" not in log
