"""Drills: Brevo or Postgres down for minutes under a real notify-worker process. Nothing is
given up while the dependency is away, and once it is back every email is sent exactly once.

Each drill runs worker processes of its own (its own streams, the default retry horizon of
24 h, the backoff capped at a few seconds so the drill ends soon after the outage).

Why Brevo stays down the full 5 minutes of the incident, not 60 s: the old budget was ~15 s
(~65 s with a hanging Brevo), and the path holds timers of a minute or more (a consumer's job
queue expires 60 s after its last heartbeat, finished jobs are remembered 60 s, the email's
lease is BREVO_TIMEOUT_S + 10 s); a 60 s outage would not outlast them all."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import msgspec
import pytest
from aiohttp import web
from redis.asyncio import Redis

from xtyl_common.events import UserCreated
from xtyl_common.events.ops import streams_report
from xtyl_common.migrate import migrate
from xtyl_devstack.brevo import SEND_PATH, BrevoRequestError, LocalBrevo, check_send_request
from xtyl_devstack.loopback import LoopbackServer
from xtyl_devstack.postgres import PostgresServer
from xtyl_devstack.processes import ManagedProcess
from xtyl_devstack.service_process import start_worker_process

from .conftest import BREVO_KEY, GROUP, Bus, user_created

pytestmark = pytest.mark.integration

#: The drill worker's backoff: 1 s doubling, capped at 5 s (production: 300 s).
DRILL_ENV = {
    "EVENTS_RETRY_BACKOFF_S": "1",
    "EVENTS_RETRY_BACKOFF_MAX_S": "5",
    "EVENTS_CLAIM_IDLE_MS": "3000",
    "EVENTS_READ_BLOCK_MS": "200",
    "EVENTS_RETRY_POLL_S": "0.1",
}
#: Left at their defaults in the drills: 5 tries for unexpected errors, a 24 h horizon.
SESSION_ONLY = {"EVENTS_MAX_TRIES", "EVENTS_RETRY_HORIZON_S", "EVENTS_RETRY_BACKOFF_MAX_S"}


@dataclass(frozen=True, slots=True)
class Seen:
    """One send request as Brevo's front received it."""

    at: float
    mode: str
    to: str
    idempotency_key: str | None
    api_key: str | None
    problem: str | None  # why Brevo would refuse it, if it would


class BrevoFront(LoopbackServer):
    """Brevo as the worker sees it: ``down`` answers 503 like Brevo, ``hang`` never answers
    (until the outage ends, when the held requests get a 503 nobody reads any more), ``up``
    forwards to the stand-in (which checks each send and de-duplicates by idempotencyKey).
    Every request is checked and kept."""

    what = "the Brevo front of the outage drill"

    def __init__(self, upstream: str) -> None:
        super().__init__()
        self.upstream = upstream
        self.mode = "up"
        self.seen: list[Seen] = []
        self._restored = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None

    def outage(self, mode: str) -> None:
        self.mode = mode
        self._restored.clear()

    def restore(self) -> None:
        self.mode = "up"
        self._restored.set()

    def to(self, address: str) -> list[Seen]:
        return [s for s in self.seen if s.to == address.lower()]

    async def make_app(self) -> web.Application:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        app = web.Application()
        app.router.add_post(SEND_PATH, self._send)
        app.on_cleanup.append(self._close)
        return app

    async def _close(self, app: web.Application) -> None:
        if self._session is not None:
            await self._session.close()

    async def _send(self, request: web.Request) -> web.Response:
        body = await request.read()
        mode = self.mode
        problem: str | None = None
        try:
            checked = check_send_request(msgspec.json.decode(body))
        except (msgspec.DecodeError, BrevoRequestError) as exc:
            checked, problem = {}, str(exc)
        to: list[dict[str, Any]] = checked.get("to", [{}])
        headers: dict[str, str] = checked.get("headers", {})
        self.seen.append(
            Seen(
                at=time.monotonic(),
                mode=mode,
                to=str(to[0].get("email", "")).lower(),
                idempotency_key=headers.get("idempotencyKey"),
                api_key=request.headers.get("api-key"),
                problem=problem,
            )
        )
        if mode == "hang":
            await self._restored.wait()
        if mode != "up":
            return web.json_response(
                {"code": "service_unavailable", "message": "Brevo is down (drill)"}, status=503
            )
        assert self._session is not None
        async with self._session.post(
            self.upstream + SEND_PATH,
            data=body,
            headers={
                "api-key": request.headers.get("api-key", ""),
                "Content-Type": "application/json",
            },
        ) as upstream:
            return web.Response(
                body=await upstream.read(),
                status=upstream.status,
                content_type="application/json",
            )


def drill_prefix() -> str:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    return f"test:{worker}:{secrets.token_hex(4)}:events"


def drill_env(notify_env: dict[str, str], **overrides: str) -> dict[str, str]:
    env = {k: v for k, v in notify_env.items() if k not in SESSION_ONLY}
    return {**env, **DRILL_ENV, "EVENTS_STREAM_PREFIX": drill_prefix(), **overrides}


async def start_worker(env: dict[str, str], log_dir: Path) -> ManagedProcess:
    return await asyncio.to_thread(
        start_worker_process,
        "xtyl_notify.worker",
        env,
        log_dir=log_dir,
        name="notify-worker-drill",
        ready_log=b"consumer_started",
    )


@pytest.fixture
async def workers() -> AsyncIterator[list[ManagedProcess]]:
    started: list[ManagedProcess] = []
    yield started
    for process in started:
        await asyncio.to_thread(process.stop)


@pytest.fixture
async def front(brevo: LocalBrevo) -> AsyncIterator[BrevoFront]:
    async with BrevoFront(brevo.url) as server:
        yield server


async def rows_by_key(db: asyncpg.Pool, keys: list[str]) -> dict[str, dict[str, Any]]:
    rows = await db.fetch("select * from xtyl_notify.emails where dedupe_key = any($1)", keys)
    return {row["dedupe_key"]: dict(row.items()) for row in rows}


async def sleep_until(deadline: float) -> None:
    await asyncio.sleep(max(0.0, deadline - time.monotonic()))


def address_of(event: UserCreated) -> str:
    assert event.payload.email is not None
    return event.payload.email


@pytest.mark.slow(reason="Brevo stays down for 5 minutes, as in the incident")
@pytest.mark.timeout(600)
async def test_brevo_down_five_minutes_every_email_is_sent_exactly_once_after_it_returns(
    notify_env: dict[str, str],
    service_log_dir: Path,
    brevo: LocalBrevo,
    front: BrevoFront,
    db: asyncpg.Pool,
    redis: Redis,
    workers: list[ManagedProcess],
) -> None:
    env = drill_env(
        notify_env,
        BREVO_API_URL=front.url,
        BREVO_CONNECT_TIMEOUT_S="1",
        BREVO_TIMEOUT_S="3",  # a hanging Brevo costs an attempt 3 s
    )
    bus = Bus(redis, env["EVENTS_STREAM_PREFIX"])
    early = [user_created() for _ in range(12)]
    late = [user_created() for _ in range(8)]
    events = early + late
    keys = [f"user.created:{e.payload.user_id}" for e in events]
    workers.append(await start_worker(env, service_log_dir))

    front.outage("down")  # 503 for 150 s, then no answer at all for 150 s
    began = time.monotonic()
    for event in early:
        await bus.publish(event)

    await sleep_until(began + 20)  # past the old budget (1+2+4+5 s over 5 tries)
    rows = await rows_by_key(db, keys[:12])
    assert sorted(r["status"] for r in rows.values()) == ["retrying"] * 12

    await sleep_until(began + 60)  # the worker dies mid-outage; another one takes over
    os.kill(workers[0].pid or 0, signal.SIGKILL)
    await asyncio.to_thread(workers[0].stop)
    workers.append(await start_worker(env, service_log_dir))
    for event in late:
        await bus.publish(event)

    await sleep_until(began + 150)
    front.outage("hang")
    await sleep_until(began + 300)

    rows = await rows_by_key(db, keys)
    assert sorted(r["status"] for r in rows.values()) == ["retrying"] * 20
    assert await bus.dead_letters("users") == []
    [users] = [s for s in await streams_report(redis, bus.prefix) if s.stream.endswith(":users")]
    [group] = [g for g in users.groups if g.name == GROUP]
    assert (group.pending, group.retrying, group.dead) == (20, 20, 0)

    front.restore()
    restored = time.monotonic()
    for event in events:
        await brevo.wait_for_emails(address_of(event), timeout_s=60)
    await bus.drained("users", timeout_s=30)
    sent_within_s = time.monotonic() - restored

    rows = await rows_by_key(db, keys)
    assert await bus.dead_letters("users") == []
    for event, key in zip(events, keys, strict=True):
        address, row = address_of(event), rows[key]
        [email] = brevo.emails_to(address)  # exactly once at Brevo
        assert brevo.requests_to(address) == [201]  # one send got through, no duplicate
        assert (row["status"], row["brevo_message_id"]) == ("sent", email["messageId"])
        seen = front.to(address)
        assert [s.mode for s in seen][-1] == "up"
        assert {s.mode for s in seen[:-1]} == {"down", "hang"}  # retried all along
        assert {(s.idempotency_key, s.api_key, s.problem) for s in seen} == {
            (str(row["id"]), BREVO_KEY, None)
        }
    assert sent_within_s < 30  # the backoff cap (5 s) bounds the wait once Brevo is back


@pytest.mark.slow(reason="Postgres stays down for 30 seconds")
@pytest.mark.timeout(240)
async def test_postgres_down_30_seconds_dead_letters_nothing_and_sends_each_email_once(
    notify_env: dict[str, str],
    service_log_dir: Path,
    brevo: LocalBrevo,
    postgres_control: PostgresServer,
    redis: Redis,
    workers: list[ManagedProcess],
) -> None:
    dsn = postgres_control.dsn("xtyl")
    await migrate(dsn)
    env = drill_env(notify_env, DATABASE_URL=dsn, EVENTS_RETRY_BACKOFF_MAX_S="4")
    bus = Bus(redis, env["EVENTS_STREAM_PREFIX"])
    events = [user_created() for _ in range(15)]
    workers.append(await start_worker(env, service_log_dir))

    for event in events[:5]:
        await bus.publish(event)
    await brevo.wait_for_emails(address_of(events[0]))  # the worker is at work
    for event in events[5:10]:
        await bus.publish(event)
    await asyncio.to_thread(postgres_control.stop)  # under the entries still in flight
    try:
        for event in events[10:]:
            await bus.publish(event)
        await asyncio.sleep(30)  # four times the old budget (0.5+1+2+4 s over 5 tries)
        assert await bus.dead_letters("users") == []
        [users] = [
            s for s in await streams_report(redis, bus.prefix) if s.stream.endswith(":users")
        ]
        [group] = [g for g in users.groups if g.name == GROUP]
        assert group.retrying >= 5  # waiting for Postgres, not given up
    finally:
        await asyncio.to_thread(postgres_control.start)

    for event in events:
        await brevo.wait_for_emails(address_of(event), timeout_s=60)
    await bus.drained("users", timeout_s=30)

    assert await bus.dead_letters("users") == []
    conn = await asyncpg.connect(dsn)
    try:
        statuses = await conn.fetch(
            "select dedupe_key, status from xtyl_notify.emails where dedupe_key = any($1)",
            [f"user.created:{e.payload.user_id}" for e in events],
        )
    finally:
        await conn.close()
    assert sorted(r["status"] for r in statuses) == ["sent"] * 15
    for event in events:
        assert len(brevo.emails_to(address_of(event))) == 1
