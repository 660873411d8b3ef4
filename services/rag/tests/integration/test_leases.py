"""No document waits on a dead run, and no run is told "done" while another still works.

A run holds its document through a short lease that its heartbeat renews. A run that finds
the document held waits at most one lease period: a dead run's lease (the worker was killed,
or Postgres went away under it and the lease could not even be given back) runs out, and the
document is taken over; a live run keeps renewing, and the newcomer raises DocumentBusy (the
stream job is retried later, never acknowledged as done).
"""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable

import asyncpg
import pytest

from xtyl_common.events import EventSettings
from xtyl_common.migrate import migrate
from xtyl_common.settings import load_settings
from xtyl_devstack.postgres import PostgresServer, create_database, drop_database
from xtyl_devstack.stack import StackInfo
from xtyl_rag.adapters.postgres import DocumentRepository
from xtyl_rag.adapters.postgres.documents import Claim, NewChunks
from xtyl_rag.domain.documents import FileSource
from xtyl_rag.service import RagService, open_service, stuck_file_finder
from xtyl_rag.service.indexing import DocumentBusy, Indexer
from xtyl_rag.settings import RagSettings

from .conftest import add_file_document
from .samples import make_text

pytestmark = pytest.mark.integration

#: Margin for a loaded 2-core box on top of what the lease itself explains.
SLACK_S = 5.0


def indexer_with_lease(service: RagService, indexer: Indexer, lease_s: float) -> Indexer:
    """The session's indexer on the same database, with a lease of its own."""
    return Indexer(
        documents=DocumentRepository(service.pool, lease_s=lease_s),
        models=service.models,
        embedders=service.embedders,
        storage=service.storage,
        extractor=indexer.extractor,
        counter=indexer.counter,
        max_document_bytes=indexer.max_document_bytes,
        max_attempts=indexer.max_attempts,
    )


@pytest.fixture
def leased(service: RagService, indexer: Indexer) -> Callable[[float], Indexer]:
    return lambda lease_s: indexer_with_lease(service, indexer, lease_s)


async def chunk_rows(service: RagService, document_id: uuid.UUID) -> tuple[int, int, int, int]:
    """(chunks, distinct ordinals, vectors, document.indexed events) of one document."""
    row = await service.pool.fetchrow(
        "select (select count(*) from xtyl_rag.chunks where document_id = $1) as chunks,"
        " (select count(distinct ordinal) from xtyl_rag.chunks where document_id = $1)"
        " as ordinals,"
        " (select count(*) from xtyl_rag.chunk_embeddings where document_id = $1) as vectors,"
        " (select count(*) from xtyl_rag.outbox where type = 'document.indexed'"
        "  and payload->>'document_id' = $1::text) as events",
        document_id,
    )
    assert row is not None
    return row["chunks"], row["ordinals"], row["vectors"], row["events"]


async def wait_for_status(
    service: RagService, document_id: uuid.UUID, status: str, *, timeout_s: float = 60.0
) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        current = await service.documents.find(document_id)
        assert current is not None
        if current.status == status:
            return
        assert time.monotonic() < deadline, f"document still {current.status}, not {status}"
        await asyncio.sleep(0.02)


async def test_a_dead_runs_document_is_taken_over_when_its_lease_runs_out(
    service: RagService, leased: Callable[[float], Indexer]
) -> None:
    lease_s = 2.0
    indexer = leased(lease_s)
    data = make_text(2, seed=101)
    document = await add_file_document(service, uuid.uuid4(), "dead.txt", "text/plain", data)
    # a run claims the document and dies: nobody renews or gives back its lease
    assert await indexer.documents.claim(document.id) is not None

    started = time.monotonic()
    report = await indexer.index(document.id, data=data)
    took = time.monotonic() - started

    assert report.outcome == "ready"
    assert took < lease_s + SLACK_S, f"took {took:.1f} s with a {lease_s} s lease"
    stored = await service.documents.find(document.id)
    assert stored is not None
    assert stored.status == "ready"
    assert stored.attempts == 2  # the dead run and the one that took over
    chunks, ordinals, vectors, events = await chunk_rows(service, document.id)
    assert chunks == ordinals == vectors == stored.chunk_count > 0
    assert events == 1


@pytest.fixture
async def private_service(
    devstack: StackInfo, rag_env: dict[str, str], stream_prefix: str
) -> AsyncIterator[RagService]:
    """A rag service on a database of its own: no other process of the session (the workers
    and APIs other tests started, with their reconcilers) can touch its documents."""
    name = f"xtyl_leases_{secrets.token_hex(4)}"
    await asyncio.to_thread(create_database, devstack.postgres_dsn, name)
    url = devstack.dsn(name)
    await migrate(url)
    settings = load_settings(RagSettings, environ={**rag_env, "DATABASE_URL": url})
    async with open_service(settings, EventSettings(stream_prefix=stream_prefix)) as opened:
        await opened.models.ensure_index(opened.model_status.active.model, 384)
        yield opened
    await asyncio.to_thread(drop_database, devstack.postgres_dsn, name)


@pytest.mark.timeout(240)
async def test_a_live_run_keeps_its_document_and_a_redelivery_is_told_to_retry(
    private_service: RagService,
) -> None:
    service = private_service
    # a short lease, renewed every third of it, on a 2-core box busy with the rest of the suite
    lease_s = 1.5
    live = indexer_with_lease(service, service.indexer, lease_s)
    redelivered = indexer_with_lease(service, service.indexer, lease_s)
    data = make_text(100, seed=102)  # embedding takes several lease periods
    document = await add_file_document(service, uuid.uuid4(), "long.txt", "text/plain", data)

    run = asyncio.create_task(live.index(document.id, data=data))
    await wait_for_status(service, document.id, "embedding")
    started = time.monotonic()
    with pytest.raises(DocumentBusy):
        await redelivered.index(document.id, data=data)
    waited = time.monotonic() - started
    assert not run.done(), "the live run ended before the check: make its document longer"
    assert waited >= lease_s  # it watched the lease for a whole period before giving up

    report = await asyncio.wait_for(run, timeout=120)
    assert report.outcome == "ready"  # the live run, renewing, was never taken over
    stored = await service.documents.find(document.id)
    assert stored is not None
    assert stored.attempts == 1
    chunks, ordinals, vectors, events = await chunk_rows(service, document.id)
    assert chunks == ordinals == vectors == stored.chunk_count > 60
    assert events == 1


async def test_a_repeated_event_leaves_a_stuck_document_to_the_reconciler(
    service: RagService,
) -> None:
    """The reconciler finds stuck documents by an old ``updated_at``: a redelivery of the same
    ``file.uploaded`` must not make a stuck document look fresh."""
    data = make_text(2, seed=103)
    document = await add_file_document(service, uuid.uuid4(), "same.txt", "text/plain", data)
    await service.pool.execute(
        "update xtyl_rag.documents set status = 'embedding', updated_at = now() - interval"
        " '1 hour' where id = $1",
        document.id,
    )
    assert document.file_id is not None
    same = FileSource(
        file_id=document.file_id,
        owner_id=document.owner_id,
        key=document.file_key,
        name=document.file_name or "",
        content_type=document.content_type or "",
        size=len(data),
        sha256=document.content_sha256,
    )
    await service.documents.upsert_file(same, title="same")  # the event, delivered again

    async with service.pool.acquire() as conn:
        stuck = await stuck_file_finder(600)(conn)
    assert document.file_id in {event.payload.file_id for event in stuck}


@pytest.fixture
async def service_on_control(
    postgres_control: PostgresServer, rag_env: dict[str, str], stream_prefix: str
) -> AsyncIterator[RagService]:
    """A rag service on the private Postgres (which the test stops and starts), lease 2 s."""
    await migrate(postgres_control.dsn())
    env = {**rag_env, "DATABASE_URL": postgres_control.dsn(), "INDEX_LEASE_S": "2"}
    settings = load_settings(RagSettings, environ=env)
    async with open_service(settings, EventSettings(stream_prefix=stream_prefix)) as opened:
        yield opened


@pytest.mark.timeout(360)
async def test_after_a_postgres_outage_the_retry_takes_the_document_over(
    service_on_control: RagService, postgres_control: PostgresServer
) -> None:
    """Postgres stops under a run: its result cannot be written and its lease cannot be given
    back. Once Postgres is back, the job's retry takes the document over within a lease."""
    service = service_on_control
    lease_s = service.settings.index_lease_s
    on_control = service.indexer
    data = make_text(100, seed=104)
    document = await add_file_document(service, uuid.uuid4(), "outage.txt", "text/plain", data)

    run = asyncio.create_task(on_control.index(document.id, data=data))
    await wait_for_status(service, document.id, "embedding")
    await asyncio.to_thread(postgres_control.stop)
    with pytest.raises((OSError, asyncpg.PostgresError, asyncpg.InterfaceError)):
        await asyncio.wait_for(run, timeout=120)
    await asyncio.to_thread(postgres_control.start)
    back = time.monotonic()

    retry = asyncio.create_task(on_control.index(document.id, data=data))  # the job's retry
    while not retry.done():
        current = await service.documents.find(document.id)
        if current is None or current.attempts >= 2:
            break
        await asyncio.sleep(0.02)
    took = time.monotonic() - back
    assert took < lease_s + SLACK_S, f"taken over {took:.1f} s after Postgres came back"
    assert (await asyncio.wait_for(retry, timeout=180)).outcome == "ready"
    stored = await service.documents.find(document.id)
    assert stored is not None
    assert stored.status == "ready"
    assert stored.attempts == 2
    chunks, ordinals, vectors, events = await chunk_rows(service, document.id)
    assert chunks == ordinals == vectors == stored.chunk_count > 60
    assert events == 1


class SlowToReturn(DocumentRepository):
    """complete() commits, then takes two lease periods to hand its answer back: the heartbeat
    renews meanwhile and finds the lease cleared by that very commit."""

    async def complete(self, claim: Claim, new: NewChunks, *, title: str | None = None) -> bool:
        done = await super().complete(claim, new, title=title)
        await asyncio.sleep(2 * self.lease_s)
        return done


async def test_a_run_that_completed_is_ready_though_its_heartbeat_then_finds_no_lease(
    private_service: RagService,
) -> None:
    service = private_service
    indexer = indexer_with_lease(service, service.indexer, 0.6)
    indexer.documents = SlowToReturn(service.pool, lease_s=0.6)
    data = make_text(2, seed=105)
    document = await add_file_document(service, uuid.uuid4(), "done.txt", "text/plain", data)

    report = await indexer.index(document.id, data=data)

    assert report.outcome == "ready"  # not "gone": complete() cleared the lease, not a rival
    stored = await service.documents.find(document.id)
    assert stored is not None
    assert stored.status == "ready"
    assert stored.attempts == 1
