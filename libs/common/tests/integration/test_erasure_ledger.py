"""The erasure ledger on a real Postgres: what an operator reads back, runs counted, a finished
erasure not redone, and the lock that keeps a write racing the erasure's start from being left
behind."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from xtyl_common.erasure import AccountDeleted, ErasureBacklog, ErasureLedger
from xtyl_devstack.testing import eventually

from .conftest import MetricSample

pytestmark = pytest.mark.integration

ASKED = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


@pytest.fixture
async def ledger(pool: asyncpg.Pool) -> AsyncIterator[ErasureLedger]:
    name = f"er_{secrets.token_hex(4)}"
    async with pool.acquire() as conn:
        await conn.execute("select xtyl_events.install_erasures($1)", name)
        await conn.execute(f"create table {name}.items (owner uuid not null)")
    yield ErasureLedger(name)
    async with pool.acquire() as conn:
        await conn.execute(f"drop schema {name} cascade")


async def test_a_finished_erasure_reads_back_and_is_not_redone(
    pool: asyncpg.Pool, ledger: ErasureLedger, migrated_database_url: str
) -> None:
    user = uuid.uuid4()
    async with pool.acquire() as conn:
        assert (await ledger.state(conn, user)).status == "none"
        async with conn.transaction():
            assert await ledger.begin(conn, user, requested_at=ASKED)
        async with conn.transaction():  # a redelivery after a kill: counted, run again
            assert await ledger.begin(conn, user, requested_at=ASKED)
        running = await ledger.state(conn, user)
        assert (running.status, running.attempts) == ("erasing", 2)
        await ledger.complete(conn, user, {"files": 3, "objects": 4})
        async with conn.transaction():
            assert not await ledger.begin(conn, user, requested_at=ASKED)
        done = await ledger.state(conn, user)
    # the pool's jsonb codec and a plain connection read the same counts
    plain = await asyncpg.connect(migrated_database_url)
    try:
        assert (await ledger.state(plain, user)).erased == {"files": 3, "objects": 4}
    finally:
        await plain.close()
    assert done.status == "erased"
    assert done.erased == {"files": 3, "objects": 4}
    assert done.requested_at == ASKED
    assert done.attempts == 2
    assert done.completed_at is not None


async def test_a_write_in_flight_commits_before_the_erasure_begins_and_one_after_is_refused(
    pool: asyncpg.Pool, ledger: ErasureLedger
) -> None:
    user = uuid.uuid4()
    insert = f"insert into {ledger.schema}.items values ($1)"  # noqa: S608 (our schema)
    count = f"select count(*) from {ledger.schema}.items where owner = $1"  # noqa: S608
    writer = await pool.acquire()
    eraser = await pool.acquire()
    try:
        write = writer.transaction()
        await write.start()
        await ledger.refuse_if_erased(writer, user)  # the write checked: not erased yet
        await writer.execute(insert, user)

        async def begin() -> None:
            async with eraser.transaction():
                await ledger.begin(eraser, user, requested_at=ASKED)

        started = asyncio.create_task(begin())
        await asyncio.sleep(0.3)
        assert not started.done()  # the erasure waits for the write in flight
        await write.commit()
        await asyncio.wait_for(started, 5)
        # what the erasure reads now holds the write: it is erased with the rest
        assert await eraser.fetchval(count, user) == 1

        async def write_after() -> None:
            async with writer.transaction():
                await ledger.refuse_if_erased(writer, user)
                await writer.execute(insert, user)

        with pytest.raises(AccountDeleted) as refused:
            await write_after()
        assert refused.value.code == "account_deleted"
        assert refused.value.status == 403
        assert await eraser.fetchval(count, user) == 1
    finally:
        await pool.release(writer)
        await pool.release(eraser)


def test_a_schema_name_is_checked() -> None:
    with pytest.raises(ValueError, match="schema"):
        ErasureLedger("x; drop table users")


async def test_the_backlog_counts_what_is_not_finished_and_how_old_it_is(
    pool: asyncpg.Pool, ledger: ErasureLedger, sample: MetricSample
) -> None:
    backlog = ErasureBacklog(pool, ledger, interval_s=0.05)
    assert await backlog.measure() == (0, 0.0)
    now = datetime.now(UTC)
    stuck, fresh, done = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    async with pool.acquire() as conn:
        for user, asked in ((stuck, now - timedelta(hours=2)), (fresh, now), (done, ASKED)):
            async with conn.transaction():
                assert await ledger.begin(conn, user, requested_at=asked)
        await ledger.complete(conn, done, {"files": 1})  # the oldest, but finished

    backlog.start()  # measures at once, then every interval
    try:

        async def measured() -> bool:
            return sample("xtyl_erasures_incomplete", schema=ledger.schema) == 2

        await eventually(measured)
        age = sample("xtyl_erasure_oldest_incomplete_age_seconds", schema=ledger.schema)
        assert age is not None
        assert 7200 <= age < 7200 + 60  # the stuck one's, not the finished older one's
        async with pool.acquire() as conn:
            await ledger.complete(conn, stuck, {})
            await ledger.complete(conn, fresh, {})

        async def caught_up() -> bool:
            return sample("xtyl_erasures_incomplete", schema=ledger.schema) == 0

        await eventually(caught_up)
        assert sample("xtyl_erasure_oldest_incomplete_age_seconds", schema=ledger.schema) == 0
    finally:
        await backlog.stop()
