"""The reconciler cron through a Postgres outage: a pass while Postgres is down is a logged
skip (no error, no traceback), and the next pass, once it is back, re-emits the stuck work."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from typing import Any

import asyncpg
import pytest
import structlog

from xtyl_common.db import DatabaseConfig, create_pool
from xtyl_common.events import (
    Event,
    FileDeleted,
    FileDeletedPayload,
    install_outbox,
    reconciler_cron,
)
from xtyl_common.migrate import migrate
from xtyl_devstack.postgres import PostgresServer

pytestmark = pytest.mark.integration


@pytest.fixture
async def control_schema(postgres_control: PostgresServer) -> str:
    await migrate(postgres_control.dsn())
    name = f"rc_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(postgres_control.dsn())
    try:
        await install_outbox(conn, name)
    finally:
        await conn.close()
    return name


async def test_a_pass_while_postgres_is_down_is_skipped_and_the_next_one_reemits(
    postgres_control: PostgresServer, control_schema: str
) -> None:
    stuck = FileDeleted(
        producer="test", payload=FileDeletedPayload(file_id=uuid.uuid4(), owner_id=uuid.uuid4())
    )

    async def find_stuck(conn: asyncpg.Connection) -> list[Event]:
        return [stuck]

    job = reconciler_cron(find_stuck, schema=control_schema, pool_key="db", timeout_s=5.0)
    pool = await create_pool(DatabaseConfig(url=postgres_control.dsn(), connect_timeout_s=2.0))
    ctx: dict[str, Any] = {"db": pool}
    try:
        await asyncio.to_thread(postgres_control.stop)
        with structlog.testing.capture_logs() as logs:
            assert await job.coroutine(ctx) == 0
        skipped = [e for e in logs if e["event"] == "reconcile_skipped"]
        assert len(skipped) == 1
        assert skipped[0]["log_level"] == "warning"
        assert skipped[0]["schema"] == control_schema
        assert "exc_info" not in skipped[0]

        await asyncio.to_thread(postgres_control.start)
        assert await job.coroutine(ctx) == 1
        async with pool.acquire() as conn:
            rows = await conn.fetch(
                f"select type, payload->>'file_id' as file_id from {control_schema}.outbox"  # noqa: S608
            )
        assert [(r["type"], r["file_id"]) for r in rows] == [
            ("file.deleted", str(stuck.payload.file_id))
        ]
    finally:
        await pool.close()
