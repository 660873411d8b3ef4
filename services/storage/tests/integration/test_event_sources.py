"""``make replay``'s storage source: after the outbox lost its rows (pruned), the files are
announced again from ``xtyl_storage.files``, with the payloads the uploads announced."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import asyncpg
import pytest

from xtyl_common.events.replay import main as replay_main

from .asgi import AsgiClient
from .conftest import User, events_of
from .test_files_api import upload

pytestmark = pytest.mark.integration

SOURCES = "xtyl_storage.adapters.event_sources:EVENT_SOURCES"


async def test_replay_recreates_file_events_the_outbox_no_longer_holds(
    client: AsgiClient,
    alice: User,
    db: asyncpg.Connection,
    migrated_database_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    moment = await db.fetchval("select now()")
    assert isinstance(moment, datetime)
    kept: dict[str, Any] = await upload(client, alice, name="kept.txt")
    gone: dict[str, Any] = await upload(client, alice, name="gone.txt")
    resp = await client.delete(f"/v1/files/{gone['id']}", headers=alice.headers)
    assert resp.status_code == 204, resp.text
    announced = {f["id"]: await events_of(db, f["id"]) for f in (kept, gone)}
    await db.execute(
        "delete from xtyl_storage.outbox where payload->>'file_id' = any($1::text[])",
        [kept["id"], gone["id"]],
    )  # pruned: only the files table remembers them

    args = ["--since", moment.isoformat(), "--schema", "xtyl_storage", "--source", SOURCES]
    code = await asyncio.to_thread(replay_main, [*args, "--database-url", migrated_database_url])

    assert code == 0
    assert "storage.files: " in capsys.readouterr().out
    assert await events_of(db, kept["id"]) == [announced[kept["id"]][0]]
    # a deleted file is announced deleted (rag drops its document), not uploaded again
    assert await events_of(db, gone["id"]) == [announced[gone["id"]][1]]

    # the same replay again writes nothing twice: equal events are still waiting
    code = await asyncio.to_thread(replay_main, [*args, "--database-url", migrated_database_url])
    assert code == 0
    assert len(await events_of(db, kept["id"])) == 1
