"""A deleted user's erasure (``user.deleted``): nothing of theirs is left in any table of the
rag schema, the word statistics search reads no longer name them, another user keeps
everything and still finds it; a second run does nothing, a run cut short is finished by the
next; a write racing the erasure is either erased with the rest or refused, and an indexing run
in flight when it begins writes nothing.

Most tests run the service in process on a database of their own (every row in it is the
test's, so "no row names the user" is checked over whole tables), with its outbox relay, as
the worker runs it; one sends ``user.deleted`` through the stream to a real rag-worker.
"""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
import asyncpg
import pytest
from redis.asyncio import Redis

from xtyl_common.erasure import AccountDeleted
from xtyl_common.events import (
    EventSettings,
    FileUploadedPayload,
    UserDeleted,
    UserDeletedPayload,
    encode_event,
    stream_key,
)
from xtyl_common.events.streams import EVENT_FIELD, TYPE_FIELD
from xtyl_common.settings import load_settings
from xtyl_devstack.processes import ManagedProcess
from xtyl_devstack.service_process import RunningService
from xtyl_rag.adapters.postgres import DocumentRepository
from xtyl_rag.adapters.postgres.documents import Claim, NewChunks
from xtyl_rag.domain.documents import Document, sha256_text
from xtyl_rag.domain.search import SearchFilters
from xtyl_rag.service import RagService, open_service
from xtyl_rag.service.account import Accounts
from xtyl_rag.service.indexing import Indexer
from xtyl_rag.settings import RagSettings

from .conftest import User, add_file_document, gateway_headers
from .samples import make_text

pytestmark = pytest.mark.integration

#: What must outlive the user: the erasure's own record (the operator's proof), which holds
#: their id and the times and counts of the erasure, nothing else.
PROOF_TABLES = {"erasures"}
#: Tables with an owner column that hold a user's rows once they used the service (the
#: catalogue is asked for every such table; these must be among them).
EXPECTED_OWNED = {
    "documents",
    "chunks",
    "chunk_embeddings",
    "owner_stats",
    "owner_lexemes",
    "owner_text_stats",
    "answer_counts",
}


def now() -> datetime:
    return datetime.now(UTC)


@pytest.fixture
async def private(private_database_url: str, rag_env: dict[str, str]) -> AsyncIterator[RagService]:
    """The service on a database of its own, with its outbox relay (as rag-worker runs it),
    erasing three rows a statement."""
    env = {**rag_env, "DATABASE_URL": private_database_url, "ERASURE_BATCH_SIZE": "3"}
    settings = load_settings(RagSettings, environ=env)
    events = EventSettings(
        stream_prefix=f"test:erasure:{secrets.token_hex(4)}", relay_poll_interval_s=0.1
    )
    async with open_service(settings, events, relay=True) as opened:
        await opened.models.ensure_index(opened.model_status.active.model, 384)
        yield opened


async def add_inline(service: RagService, owner: uuid.UUID, title: str, text: str) -> Document:
    """An inline document as the API adds it, but queued for nobody (the test indexes it)."""
    return await service.documents.create_inline(
        owner, title=title, text=text, sha256=sha256_text(text), metadata={}
    )


async def a_user_of_everything(service: RagService, owner: uuid.UUID, seed: int) -> list[str]:
    """A user with an indexed inline document of several chunks, an indexed file, an inline
    text waiting to be indexed and an answer today; the words of their indexed texts."""
    long_text = make_text(3, seed).decode()
    inline = await add_inline(service, owner, f"notes {seed}", long_text)
    assert (await service.index_document(inline.id)).outcome == "ready"
    data = make_text(1, seed + 1000)
    file = await add_file_document(service, owner, f"file-{seed}.txt", "text/plain", data)
    assert (await service.indexer.index(file.id, data=data)).outcome == "ready"
    await add_inline(service, owner, "later", f"Zebra {seed} waits.")
    _, events = await service.answer(
        owner, "what do the notes say", k=3, mode="hybrid", filters=SearchFilters()
    )
    assert [event.event async for event in events][-1] == "done"
    return [long_text, data.decode()]


async def owner_tables(conn: Any) -> list[str]:
    """Every table of the rag schema with an owner column (owner_id or user_id)."""
    rows = await conn.fetch(
        "select c.table_name, c.column_name from information_schema.columns c"
        " join information_schema.tables t using (table_schema, table_name)"
        " where c.table_schema = 'xtyl_rag' and t.table_type = 'BASE TABLE'"
        " and c.column_name in ('owner_id', 'user_id') order by 1"
    )
    return [f"{row['table_name']}.{row['column_name']}" for row in rows]


async def owned_rows(pool: asyncpg.Pool, owner: uuid.UUID) -> dict[str, int]:
    """Rows of ``owner`` in every table with an owner column (the proof tables aside)."""
    async with pool.acquire() as conn:
        counts: dict[str, int] = {}
        for qualified in await owner_tables(conn):
            table, column = qualified.split(".")
            if table in PROOF_TABLES:
                continue
            counts[table] = await conn.fetchval(
                f"select count(*) from xtyl_rag.{table} where {column} = $1",  # noqa: S608
                owner,
            )
        return counts


async def rows_naming(pool: asyncpg.Pool, owner: uuid.UUID) -> dict[str, int]:
    """Rows that name ``owner`` anywhere (any column, JSON payloads included) in every table
    of the rag schema but the proof tables."""
    async with pool.acquire() as conn:
        tables = await conn.fetch(
            "select table_name from information_schema.tables"
            " where table_schema = 'xtyl_rag' and table_type = 'BASE TABLE'"
        )
        found: dict[str, int] = {}
        for row in tables:
            if row["table_name"] in PROOF_TABLES:
                continue
            table = f'xtyl_rag."{row["table_name"]}"'  # from the catalogue
            count = await conn.fetchval(
                f"select count(*) from {table} t where t::text like '%' || $1 || '%'",  # noqa: S608
                str(owner),
            )
            if count:
                found[row["table_name"]] = count
        return found


async def fulltext_finds(service: RagService, owner: uuid.UUID, text: str) -> bool:
    query = " ".join(text.split()[2:10])
    for mode in ("fulltext", "semantic"):
        result = await service.search(owner, query, k=5, mode=mode, filters=SearchFilters())
        if not result.hits:
            return False
    return True


@pytest.mark.timeout(180)
async def test_an_erasure_leaves_no_row_of_the_user_and_every_row_of_the_others(
    private: RagService,
) -> None:
    alice, bob = uuid.uuid4(), uuid.uuid4()
    await a_user_of_everything(private, alice, seed=1)
    bobs_texts = await a_user_of_everything(private, bob, seed=2)
    pool = private.pool
    async with pool.acquire() as conn:
        tables = {name.split(".")[0] for name in await owner_tables(conn)}
    assert tables >= EXPECTED_OWNED | PROOF_TABLES, tables
    before = await owned_rows(pool, alice)
    for table in EXPECTED_OWNED:  # the check sees the user wherever they are
        assert before[table] > 0, (table, before)
    inline_ids = [
        row["id"]
        for row in await pool.fetch(
            "select id from xtyl_rag.documents where owner_id = $1 and source = 'inline'", alice
        )
    ]
    bobs_before = await owned_rows(pool, bob)
    bobs_events = await pool.fetchval(
        "select count(*) from xtyl_rag.outbox where payload->>'owner_id' = $1", str(bob)
    )

    counts = await private.erase_user(alice, now())

    assert counts == {"documents": 3, "chunks": before["chunks"]}
    assert await owned_rows(pool, alice) == dict.fromkeys(before, 0)
    assert await rows_naming(pool, alice) == {}  # outbox payloads included
    assert not await pool.fetchval(
        "select count(*) from xtyl_rag.inline_sources where document_id = any($1::uuid[])",
        inline_ids,
    )
    # the word statistics search reads: not a row naming her, not even at zero
    for table in ("owner_lexemes", "owner_text_stats", "owner_stats"):
        assert not await pool.fetchval(
            f"select count(*) from xtyl_rag.{table} where owner_id = $1",  # noqa: S608
            alice,
        )
    state = await private.erasure_state(alice)
    assert (state.status, state.erased, state.attempts) == ("erased", counts, 1)
    assert state.started_at is not None
    assert state.completed_at is not None

    # bob lost nothing and still finds his documents
    assert await owned_rows(pool, bob) == bobs_before
    assert bobs_events == await pool.fetchval(
        "select count(*) from xtyl_rag.outbox where payload->>'owner_id' = $1", str(bob)
    )
    for text in bobs_texts:
        assert await fulltext_finds(private, bob, text)

    # a second delivery does nothing
    assert await private.erase_user(alice, now()) is None
    assert await private.erasure_state(alice) == state
    assert await owned_rows(pool, bob) == bobs_before


@pytest.mark.timeout(180)
async def test_an_erasure_cut_short_is_finished_by_the_next_run_with_every_count(
    private: RagService,
) -> None:
    alice = uuid.uuid4()
    await a_user_of_everything(private, alice, seed=3)
    before = await owned_rows(private.pool, alice)
    slow = Accounts(
        documents=private.accounts.documents,
        erasures=private.accounts.erasures,
        usage=private.accounts.usage,
        reader=private.accounts.reader,
        batch_size=1,
        pause_s=0.05,
    )
    run = asyncio.create_task(slow.erase(alice, requested_at=now()))
    deadline = time.monotonic() + 30
    while not await private.pool.fetchval(
        "select chunks >= 2 from xtyl_rag.erasure_progress where user_id = $1", alice
    ):
        assert time.monotonic() < deadline, "the erasure never got going"
        await asyncio.sleep(0.01)
    run.cancel()  # the worker dies mid-erasure
    with pytest.raises(asyncio.CancelledError):
        await run

    half = await owned_rows(private.pool, alice)
    assert 0 < half["chunks"] < before["chunks"], half
    assert (await private.erasure_state(alice)).status == "erasing"
    with pytest.raises(AccountDeleted):  # refused from the moment it began
        await private.add_text(alice, title="late", text="Too late.", metadata={})

    counts = await private.erase_user(alice, now())  # the redelivery

    assert counts == {"documents": 3, "chunks": before["chunks"]}
    assert await owned_rows(private.pool, alice) == dict.fromkeys(before, 0)
    assert await rows_naming(private.pool, alice) == {}
    state = await private.erasure_state(alice)
    assert (state.status, state.erased, state.attempts) == ("erased", counts, 2)


async def waiting_for_a_lock(pool: asyncpg.Pool) -> None:
    deadline = time.monotonic() + 20
    while not await pool.fetchval(
        "select count(*) from pg_catalog.pg_locks where locktype = 'advisory' and not granted"
    ):
        assert time.monotonic() < deadline, "nobody waits for the user's lock"
        await asyncio.sleep(0.01)


async def test_a_write_racing_the_start_is_erased_with_the_rest_and_later_ones_refused(
    private: RagService,
) -> None:
    alice = uuid.uuid4()
    ledger = private.documents.ledger
    async with private.pool.acquire() as conn:
        writing = conn.transaction()
        await writing.start()
        # a write for alice is in flight: it checked she is not erased and holds her lock
        await ledger.refuse_if_erased(conn, alice)
        await conn.execute(
            "insert into xtyl_rag.documents (owner_id, source, title, content_sha256)"
            " values ($1, 'inline', 'in flight', repeat('0', 64))",
            alice,
        )
        erasure = asyncio.create_task(private.erase_user(alice, now()))
        await waiting_for_a_lock(private.pool)  # the erasure waits for the write
        assert not erasure.done()
        await writing.commit()
    counts = await erasure

    assert counts == {"documents": 1, "chunks": 0}  # the write was erased with the rest
    assert await rows_naming(private.pool, alice) == {}
    with pytest.raises(AccountDeleted) as refused:
        await private.add_text(alice, title="late", text="Too late.", metadata={})
    assert (refused.value.status, refused.value.code) == (403, "account_deleted")
    assert await rows_naming(private.pool, alice) == {}


class HeldAtTheEnd(DocumentRepository):
    """A repository whose runs wait, with everything embedded, just before they write."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        super().__init__(pool)
        self.reached = asyncio.Event()
        self.go_on = asyncio.Event()

    async def complete(self, claim: Claim, new: NewChunks, *, title: str | None = None) -> bool:
        self.reached.set()
        await self.go_on.wait()
        return await super().complete(claim, new, title=title)


async def test_an_indexing_run_in_flight_when_the_erasure_begins_writes_nothing(
    private: RagService,
) -> None:
    alice = uuid.uuid4()
    held = HeldAtTheEnd(private.pool)
    indexer = Indexer(
        documents=held,
        models=private.models,
        embedders=private.embedders,
        storage=private.storage,
        extractor=private.indexer.extractor,
        counter=private.indexer.counter,
        max_document_bytes=private.indexer.max_document_bytes,
        max_attempts=private.indexer.max_attempts,
    )
    document = await add_inline(private, alice, "in flight", make_text(2, 5).decode())
    run = asyncio.create_task(indexer.index(document.id))
    await asyncio.wait_for(held.reached.wait(), 60)

    # the erasure begins while the run is about to write (its document still there)
    assert await private.accounts.erasures.begin(alice, requested_at=now())
    held.go_on.set()
    report = await run

    assert report.outcome == "gone"
    assert await owned_rows(private.pool, alice) == {
        **dict.fromkeys(EXPECTED_OWNED, 0),
        "documents": 1,  # the erasure has yet to remove it
        "erasure_progress": 0,
    }
    assert not await private.pool.fetchval(
        "select count(*) from xtyl_rag.outbox where payload->>'owner_id' = $1", str(alice)
    )
    counts = await private.erase_user(alice, now())  # the rest of the erasure
    assert counts == {"documents": 1, "chunks": 0}
    assert await rows_naming(private.pool, alice) == {}
    # later work of hers finds nothing to do and writes nothing
    payload = FileUploadedPayload(
        file_id=uuid.uuid4(),
        owner_id=alice,
        key=f"{alice}/x/late.txt",
        name="late.txt",
        content_type="text/plain",
        size=10,
        sha256="0" * 64,
    )
    skipped = await private.on_file_uploaded(payload)
    assert (skipped.outcome, skipped.error_code) == ("skipped", "account_deleted")
    assert (await private.index_document(document.id)).outcome == "gone"
    assert await rows_naming(private.pool, alice) == {}


@pytest.mark.timeout(180)
async def test_user_deleted_on_the_stream_erases_the_user_through_the_worker(
    service: RagService,
    rag_worker: ManagedProcess,
    rag_service: RunningService,
    rag_env: dict[str, str],
    redis_url: str,
    stream_prefix: str,
    http: aiohttp.ClientSession,
    make_user: Callable[[], User],
) -> None:
    alice, bob = make_user(), make_user()
    await a_user_of_everything(service, alice.id, seed=7)
    bobs = await a_user_of_everything(service, bob.id, seed=8)
    event = UserDeleted(producer="gateway", payload=UserDeletedPayload(user_id=alice.id))
    redis = Redis.from_url(redis_url)
    try:
        await redis.xadd(
            stream_key("users", stream_prefix),
            {TYPE_FIELD: event.type.encode(), EVENT_FIELD: encode_event(event)},
        )
    finally:
        await redis.aclose()

    url = f"{rag_service.url}/internal/me/erasure"
    deadline = time.monotonic() + 90
    while True:
        async with http.get(url, headers=gateway_headers(rag_env, alice.id)) as resp:
            assert resp.status == 200, await resp.text()
            state: dict[str, Any] = await resp.json()
        if state["status"] == "erased":
            break
        assert time.monotonic() < deadline, state
        await asyncio.sleep(0.1)

    assert state["erased"]["documents"] == 3
    assert datetime.fromisoformat(state["requested_at"]) == event.occurred_at
    assert not await service.pool.fetchval(
        "select count(*) from xtyl_rag.documents where owner_id = $1", alice.id
    )
    assert not await service.pool.fetchval(
        "select count(*) from xtyl_rag.owner_lexemes where owner_id = $1", alice.id
    )
    async with http.post(
        f"{rag_service.url}/v1/documents",
        json={"title": "late", "text": "Written after the account went."},
        headers=alice.headers,
    ) as resp:
        assert resp.status == 403, await resp.text()
        assert (await resp.json())["code"] == "account_deleted"
    async with http.post(
        f"{rag_service.url}/v1/answer", json={"query": "anything"}, headers=alice.headers
    ) as resp:
        assert resp.status == 403, await resp.text()
        assert (await resp.json())["code"] == "account_deleted"
    for text in bobs:
        assert await fulltext_finds(service, bob.id, text)
