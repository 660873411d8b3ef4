"""auth.users → public.users and a user.created event, kept in sync; GET /v1/me."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import pytest

from xtyl_devstack.issuer import LocalIssuer
from xtyl_devstack.service_process import RunningService

pytestmark = pytest.mark.integration


@pytest.fixture
async def db(migrated_database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(migrated_database_url)
    yield conn
    await conn.close()


async def sign_up(db: asyncpg.Connection, email: str | None, metadata: Any) -> uuid.UUID:
    user_id = uuid.uuid4()
    await db.execute(
        "insert into auth.users (id, aud, role, email, raw_user_meta_data, created_at)"
        " values ($1, 'authenticated', 'authenticated', $2, $3::jsonb, now())",
        user_id,
        email,
        None if metadata is None else json.dumps(metadata),
    )
    return user_id


async def test_sign_up_creates_the_row_and_one_event(db: asyncpg.Connection) -> None:
    user_id = await sign_up(db, "ada@example.com", {"full_name": "Ada Lovelace"})
    row = await db.fetchrow("select email, full_name from public.users where id = $1", user_id)
    assert row is not None
    assert (row["email"], row["full_name"]) == ("ada@example.com", "Ada Lovelace")
    events = await db.fetch(
        "select type, stream, payload::text as payload from xtyl_gateway.outbox"
        " where payload->>'user_id' = $1",
        str(user_id),
    )
    assert len(events) == 1
    assert events[0]["type"] == "user.created"
    assert events[0]["stream"] == "users"
    assert json.loads(events[0]["payload"]) == {
        "user_id": str(user_id),
        "email": "ada@example.com",
        "full_name": "Ada Lovelace",
    }


@pytest.mark.parametrize(
    ("metadata", "full_name"),
    [
        (None, ""),
        ({}, ""),
        ({"full_name": None}, ""),
        ({"full_name": 42}, "42"),
        ({"full_name": {"first": "A"}}, '{"first": "A"}'),
        (["not", "an", "object"], ""),
        ("just a string", ""),
        ({"full_name": "n" * 10_000}, "n" * 500),
    ],
)
async def test_odd_metadata_never_blocks_a_sign_up(
    db: asyncpg.Connection, metadata: Any, full_name: str
) -> None:
    user_id = await sign_up(db, None, metadata)
    assert await db.fetchval("select full_name from public.users where id = $1", user_id) == (
        full_name
    )


async def test_updates_follow_and_delete_cascades(db: asyncpg.Connection) -> None:
    user_id = await sign_up(db, "old@example.com", {"full_name": "Old"})
    await db.execute(
        "update auth.users set email = 'new@example.com',"
        ' raw_user_meta_data = \'{"full_name": "New"}\' where id = $1',
        user_id,
    )
    row = await db.fetchrow("select email, full_name from public.users where id = $1", user_id)
    assert row is not None
    assert (row["email"], row["full_name"]) == ("new@example.com", "New")
    await db.execute("delete from auth.users where id = $1", user_id)
    assert await db.fetchval("select count(*) from public.users where id = $1", user_id) == 0


async def test_me_returns_the_callers_row(
    db: asyncpg.Connection,
    gateway: RunningService,
    issuer: LocalIssuer,
    http: aiohttp.ClientSession,
) -> None:
    user_id = await sign_up(db, "me@example.com", {"full_name": "Me Myself"})
    token = issuer.mint(user_id=user_id, email="me@example.com")
    async with http.get(gateway.url + "/v1/me", headers={"Authorization": f"Bearer {token}"}) as r:
        assert r.status == 200
        body = await r.json()
    assert body["id"] == str(user_id)
    assert body["email"] == "me@example.com"
    assert body["full_name"] == "Me Myself"
    stranger = issuer.mint(user_id=uuid.uuid4())
    async with http.get(
        gateway.url + "/v1/me", headers={"Authorization": f"Bearer {stranger}"}
    ) as r:
        assert r.status == 404
        assert (await r.json(content_type=None))["code"] == "user_not_found"


async def test_user_created_reaches_the_users_stream(
    db: asyncpg.Connection, gateway: RunningService, redis_url: str
) -> None:
    """The gateway's relay publishes the trigger's outbox row to Redis."""
    import asyncio

    from redis.asyncio import Redis

    user_id = await sign_up(db, "streamed@example.com", {"full_name": "Streamed"})
    redis = Redis.from_url(redis_url)
    try:
        async with asyncio.timeout(10):
            while True:
                entries = await redis.xrange("xtyl:events:users")
                mine = [
                    fields for _, fields in entries if str(user_id).encode() in fields[b"event"]
                ]
                if mine:
                    break
                await asyncio.sleep(0.05)
    finally:
        await redis.aclose()
    assert len(mine) == 1
    assert mine[0][b"type"] == b"user.created"
    async with asyncio.timeout(10):  # the relay marks the row right after its XADD commits
        while not await db.fetchval(
            "select published_at is not null from xtyl_gateway.outbox"
            " where payload->>'user_id' = $1",
            str(user_id),
        ):
            await asyncio.sleep(0.05)


async def events_of(db: asyncpg.Connection, user_id: uuid.UUID) -> list[tuple[str, Any]]:
    rows = await db.fetch(
        "select type, payload::text as payload from xtyl_gateway.outbox"
        " where payload->>'user_id' = $1 order by seq",
        str(user_id),
    )
    return [(row["type"], json.loads(row["payload"])) for row in rows]


async def test_an_email_or_name_change_is_one_user_updated_event(db: asyncpg.Connection) -> None:
    user_id = await sign_up(db, "old@example.com", {"full_name": "Old Name"})
    await db.execute("update auth.users set email = 'new@example.com' where id = $1", user_id)
    await db.execute(  # a change of something else is no event
        "update auth.users set raw_user_meta_data = raw_user_meta_data where id = $1", user_id
    )
    await db.execute(
        """update auth.users set raw_user_meta_data = '{"full_name": "New Name"}' where id = $1""",
        user_id,
    )
    assert await events_of(db, user_id) == [
        (
            "user.created",
            {"user_id": str(user_id), "email": "old@example.com", "full_name": "Old Name"},
        ),
        (
            "user.updated",
            {"user_id": str(user_id), "email": "new@example.com", "full_name": "Old Name"},
        ),
        (
            "user.updated",
            {"user_id": str(user_id), "email": "new@example.com", "full_name": "New Name"},
        ),
    ]


@pytest.mark.parametrize("how", ["delete", "soft delete"])
async def test_a_deletion_is_one_user_deleted_event_and_the_earlier_events_go(
    db: asyncpg.Connection, how: str
) -> None:
    user_id = await sign_up(db, "gone@example.com", {"full_name": "Gone Soon"})
    # the relay published user.created: its copy in the outbox is kept for replay until pruned
    await db.execute(
        "update xtyl_gateway.outbox set published_at = now() where payload->>'user_id' = $1",
        str(user_id),
    )
    if how == "delete":
        await db.execute("delete from auth.users where id = $1", user_id)
        await db.execute("delete from auth.users where id = $1", user_id)  # nothing left: no-op
    else:
        await db.execute(
            "update auth.users set deleted_at = now(), email = null where id = $1", user_id
        )
        await db.execute("update auth.users set email = 'x@example.com' where id = $1", user_id)
    assert await events_of(db, user_id) == [("user.deleted", {"user_id": str(user_id)})]
    assert await db.fetchval("select count(*) from public.users where id = $1", user_id) == 0
    deleted_at = await db.fetchval(
        "select deleted_at from xtyl_gateway.user_deletions where user_id = $1", user_id
    )
    assert deleted_at is not None


async def test_deleting_the_account_needs_a_recent_sign_in(
    db: asyncpg.Connection,
    gateway: RunningService,
    issuer: LocalIssuer,
    http: aiohttp.ClientSession,
) -> None:
    """A valid token is not enough: its session must have signed in within the last 15
    minutes (a token lifted from a browser, a session kept for weeks cannot delete)."""
    user_id = await sign_up(db, "keep@example.com", {"full_name": "Keep Me"})
    now = int(time.time())
    long_ago = issuer.mint(user_id=user_id, amr=[{"method": "password", "timestamp": now - 86_400}])
    no_amr = issuer.mint(user_id=user_id, amr=None)
    for token in (long_ago, no_amr):
        async with http.delete(
            gateway.url + "/v1/me", headers={"Authorization": f"Bearer {token}"}
        ) as r:
            assert r.status == 403
            assert (await r.json(content_type=None))["code"] == "reauthentication_required"
    assert await db.fetchval("select count(*) from auth.users where id = $1", user_id) == 1
    # a fresh sign-in passes the check (this gateway has no service-role key: 503 after it)
    fresh = issuer.mint(user_id=user_id, amr=[{"method": "otp", "timestamp": now - 60}])
    async with http.delete(
        gateway.url + "/v1/me", headers={"Authorization": f"Bearer {fresh}"}
    ) as r:
        assert r.status == 503
        assert (await r.json(content_type=None))["code"] == "account_deletion_unavailable"
    assert await db.fetchval("select count(*) from auth.users where id = $1", user_id) == 1
