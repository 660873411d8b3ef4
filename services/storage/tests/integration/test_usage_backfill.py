"""Migration 0005 on a database that already holds files (a database of its own: the schema
before 0005): each owner's usage row is backfilled from their ready files, and from then on
the trigger keeps it in step with every change of the files table."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from xtyl_common.migrate import apply_migrations, package_migrations
from xtyl_devstack.postgres import create_database, drop_database
from xtyl_devstack.stack import StackInfo

pytestmark = pytest.mark.integration


@pytest.fixture
async def before_0005(devstack: StackInfo) -> AsyncIterator[asyncpg.Connection]:
    """A database with common's migrations and storage's up to 0004."""
    name = f"xtyl_backfill_{secrets.token_hex(4)}"
    await asyncio.to_thread(create_database, devstack.postgres_dsn, name)
    conn: asyncpg.Connection = await asyncpg.connect(devstack.dsn(name))
    try:
        common = package_migrations("common", "xtyl_common")
        storage = package_migrations("storage", "xtyl_storage")
        await apply_migrations(conn, [*common, *(m for m in storage if m.version < 5)])
        yield conn
    finally:
        await conn.close()
        await asyncio.to_thread(drop_database, devstack.postgres_dsn, name)


async def add_file(
    conn: asyncpg.Connection, owner: uuid.UUID, size: int, status: str = "ready"
) -> uuid.UUID:
    file_id = uuid.uuid4()
    await conn.execute(
        "insert into xtyl_storage.files (id, owner_id, key, name, content_type, size, sha256,"
        " status) values ($1, $2, $3, 'f.txt', 'text/plain', $4, $5, $6)",
        file_id,
        owner,
        f"{owner}/{file_id}/f.txt",
        size,
        None if status == "pending" else "0" * 64,
        status,
    )
    return file_id


async def usage(conn: asyncpg.Connection) -> dict[uuid.UUID, tuple[int, int]]:
    rows = await conn.fetch("select owner_id, bytes, files from xtyl_storage.usage")
    return {row["owner_id"]: (row["bytes"], row["files"]) for row in rows}


async def test_existing_ready_files_are_counted_and_kept_in_step(
    before_0005: asyncpg.Connection,
) -> None:
    conn = before_0005
    alice, bob, carol = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    await add_file(conn, alice, 100)
    await add_file(conn, alice, 250)
    await add_file(conn, alice, 999, "deleted")
    pending = await add_file(conn, bob, 40, "pending")
    await add_file(conn, bob, 7)
    await add_file(conn, carol, 5, "pending")

    storage = package_migrations("storage", "xtyl_storage")
    applied = await apply_migrations(conn, storage)

    assert [m.filename for m in applied] == ["0005_user_lifecycle.sql"]
    assert await usage(conn) == {alice: (350, 2), bob: (7, 1)}

    # from now on every change of the files table moves the owner's usage with it
    await conn.execute(
        "update xtyl_storage.files set status = 'ready', sha256 = $2 where id = $1",
        pending,
        "1" * 64,
    )
    dropped = await add_file(conn, carol, 30)
    await conn.execute(
        "update xtyl_storage.files set status = 'deleted' where owner_id = $1", alice
    )
    await conn.execute("delete from xtyl_storage.files where id = $1", dropped)
    assert await usage(conn) == {alice: (0, 0), bob: (47, 2), carol: (0, 0)}
