"""The migration runner: each file once under concurrency, edited files refused by name."""

from __future__ import annotations

import asyncio
import secrets
import sys
from collections.abc import AsyncIterator

import asyncpg
import pytest

from xtyl_common.migrate import MigrationError, apply_migrations, load_migrations
from xtyl_devstack.stack import StackInfo

pytestmark = pytest.mark.integration


@pytest.fixture
async def fresh_database(devstack: StackInfo) -> AsyncIterator[str]:
    name = f"migrate_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(devstack.dsn("postgres"))
    await admin.execute(f'create database "{name}"')
    conn = await asyncpg.connect(devstack.dsn(name))
    await conn.execute("create extension vector")  # the operator's "enable pgvector" step
    await conn.close()
    try:
        yield devstack.dsn(name)
    finally:
        await admin.execute(f'drop database "{name}" with (force)')
        await admin.close()


async def run_cli(url: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "xtyl_common.migrate",
        env={"DATABASE_URL": url, "LOG_JSON": "true", "PATH": "/usr/bin:/bin"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_two_runners_at_once_apply_each_file_once(fresh_database: str) -> None:
    first, second = await asyncio.gather(run_cli(fresh_database), run_cli(fresh_database))
    assert first[0] == 0, first
    assert second[0] == 0, second
    conn = await asyncpg.connect(fresh_database)
    try:
        rows = await conn.fetch(
            "select service, version, count(*) as n from xtyl_migrations.applied"
            " group by service, version"
        )
        # a file applied twice would also have failed on its own "create table"
        assert rows, "nothing was applied"
        assert all(row["n"] == 1 for row in rows)
        services = {row["service"] for row in rows}
        assert {"common", "gateway", "storage", "rag", "notify"} <= services
        assert await conn.fetchval("select to_regclass('public.users') is not null")
    finally:
        await conn.close()
    applied_now = [int(out.split()[1]) for _, out, _ in (first, second)]
    assert sorted(applied_now)[0] == 0, "the second runner found nothing left to do"
    assert sum(applied_now) == len(rows)


async def test_an_edited_applied_file_is_refused_by_name(fresh_database: str) -> None:
    conn = await asyncpg.connect(fresh_database)
    try:
        original = load_migrations("demo", [("0001_things.sql", "create table things (x int);")])
        assert [m.filename for m in await apply_migrations(conn, original)] == ["0001_things.sql"]
        assert await apply_migrations(conn, original) == []
        edited = load_migrations(
            "demo", [("0001_things.sql", "create table things (x int, y int);")]
        )
        with pytest.raises(MigrationError) as caught:
            await apply_migrations(conn, edited)
        message = str(caught.value)
        assert message.startswith("demo/0001_things.sql was edited after it was applied")
        assert "add a new migration" in message
        # nothing half-applied: the table still has its original shape
        columns = await conn.fetch(
            "select column_name from information_schema.columns where table_name = 'things'"
        )
        assert [c["column_name"] for c in columns] == ["x"]
    finally:
        await conn.close()


async def test_a_failing_file_rolls_back_and_names_itself(fresh_database: str) -> None:
    conn = await asyncpg.connect(fresh_database)
    try:
        broken = load_migrations(
            "demo",
            [("0001_ok.sql", "create table ok (x int);"), ("0002_bad.sql", "create tabel oops;")],
        )
        with pytest.raises(MigrationError, match=r"^demo/0002_bad\.sql failed: "):
            await apply_migrations(conn, broken)
        applied = await conn.fetch("select version from xtyl_migrations.applied")
        assert [r["version"] for r in applied] == [1]
    finally:
        await conn.close()
