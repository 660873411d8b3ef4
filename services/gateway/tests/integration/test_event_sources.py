"""``make replay``'s gateway source: after the outbox lost its rows (pruned), the users are
announced again from ``public.users``, with the payload the ``auth.users`` trigger wrote."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import asyncpg
import pytest

from xtyl_common.events.replay import main as replay_main
from xtyl_common.migrate import migrate
from xtyl_devstack.postgres import create_database, drop_database
from xtyl_devstack.stack import StackInfo

from .test_users import sign_up

pytestmark = pytest.mark.integration

SOURCES = "xtyl_gateway.adapters.event_sources:EVENT_SOURCES"


@pytest.fixture
async def own_database_url(devstack: StackInfo) -> AsyncIterator[str]:
    """A database of this test's own: in the session's, other gateways' relays may announce
    users again at the same moment (a Redis-loss drill), adding rows this test counts."""
    name = f"xtyl_sources_{secrets.token_hex(4)}"
    await asyncio.to_thread(create_database, devstack.postgres_dsn, name)
    url = devstack.dsn(name)
    await migrate(url)
    yield url
    await asyncio.to_thread(drop_database, devstack.postgres_dsn, name)


@pytest.fixture
async def db(own_database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(own_database_url)
    yield conn
    await conn.close()


async def user_events(db: asyncpg.Connection, user_id: object) -> list[dict[str, Any]]:
    rows = await db.fetch(
        "select type, stream, payload::text as payload from xtyl_gateway.outbox"
        " where payload->>'user_id' = $1 order by seq",
        str(user_id),
    )
    return [{**dict(row.items()), "payload": json.loads(row["payload"])} for row in rows]


async def test_replay_recreates_user_created_the_outbox_no_longer_holds(
    db: asyncpg.Connection, own_database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    moment = await db.fetchval("select now()")
    assert isinstance(moment, datetime)
    user_id = await sign_up(db, "grace@example.com", {"full_name": "Grace Hopper"})
    announced = await user_events(db, user_id)
    args = ["--since", moment.isoformat(), "--schema", "xtyl_gateway", "--source", SOURCES]
    args += ["--database-url", own_database_url]

    # while the trigger's row still waits in the outbox, the source adds nothing
    assert await asyncio.to_thread(replay_main, args) == 0
    assert await user_events(db, user_id) == announced

    await db.execute(
        "delete from xtyl_gateway.outbox where payload->>'user_id' = $1", str(user_id)
    )  # pruned: only public.users remembers the user
    assert await asyncio.to_thread(replay_main, args) == 0

    assert "gateway.users: " in capsys.readouterr().out
    assert await user_events(db, user_id) == announced
