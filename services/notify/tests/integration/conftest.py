"""The notify service on the real test stack: the Brevo stand-in in this process (tests program
its failures and read what it received), the notify-worker and the API as real processes, events
published on the session's own streams."""

from __future__ import annotations

import asyncio
import os
import secrets
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from redis.asyncio import Redis

from xtyl_common.events import (
    DocumentFailed,
    DocumentFailedPayload,
    DocumentIndexed,
    DocumentIndexedPayload,
    Event,
    UserCreated,
    UserCreatedPayload,
    encode_event,
    stream_key,
)
from xtyl_common.events.contracts import dead_letter_key
from xtyl_common.redis_client import create_redis
from xtyl_devstack.brevo import LocalBrevo
from xtyl_devstack.issuer import LocalIssuer
from xtyl_devstack.processes import ManagedProcess
from xtyl_devstack.service_process import (
    RunningService,
    running_service_async,
    start_worker_process,
)
from xtyl_devstack.testing import eventually
from xtyl_notify.domain.addresses import AddressHasher
from xtyl_notify.service import NotifyService

GROUP = "notify"
BREVO_KEY = "test-brevo-api-key"
WEBHOOK_SECRET = "test-webhook-secret-0123456789"
APP_URL = "https://app.example.test"
#: The gateway's public URL: where unsubscribe links point.
PUBLIC_API_URL = "https://api.example.test"
EMAIL_HASH_PEPPER = "test-email-hash-pepper-0123456789abcdef"
UNSUBSCRIBE_SECRET = "test-unsubscribe-secret-0123456789abcdef"
#: The session worker's document window: one document email per user per window.
DOCUMENT_WINDOW_S = 5.0
MAX_TRIES = 3
#: The session worker's retry horizon: Brevo failing longer than this fails the email.
RETRY_HORIZON_S = 4.0


@pytest.fixture(scope="session")
def stream_prefix() -> str:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    return f"test:{worker}:{secrets.token_hex(4)}:events"


@pytest.fixture(scope="session")
async def brevo(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LocalBrevo]:
    async with LocalBrevo(tmp_path_factory.mktemp("brevo"), api_key=BREVO_KEY) as stand_in:
        yield stand_in


@pytest.fixture(scope="session")
def notify_env(
    migrated_database_url: str,
    redis_url: str,
    auth_env: dict[str, str],
    stream_prefix: str,
    brevo: LocalBrevo,
) -> dict[str, str]:
    return {
        **auth_env,
        "DATABASE_URL": migrated_database_url,
        "REDIS_URL": redis_url,
        "BREVO_API_URL": brevo.url,
        "BREVO_API_KEY": BREVO_KEY,
        "BREVO_TIMEOUT_S": "5",
        "EMAIL_SENDER": "xtyl tests <no-reply@xtyl.test>",
        "APP_URL": APP_URL,
        "PUBLIC_API_URL": PUBLIC_API_URL,
        "EMAIL_HASH_PEPPER": EMAIL_HASH_PEPPER,
        "UNSUBSCRIBE_SECRET": UNSUBSCRIBE_SECRET,
        "DOCUMENT_EMAIL_WINDOW_S": str(DOCUMENT_WINDOW_S),
        "DIGEST_POLL_INTERVAL_S": "0.2",
        "BREVO_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "EVENTS_STREAM_PREFIX": stream_prefix,
        "EVENTS_READ_BLOCK_MS": "200",
        "EVENTS_MAX_TRIES": str(MAX_TRIES),
        "EVENTS_RETRY_BACKOFF_S": "0.2",
        "EVENTS_RETRY_BACKOFF_MAX_S": "1",
        "EVENTS_RETRY_HORIZON_S": str(RETRY_HORIZON_S),
        "EVENTS_RETRY_POLL_S": "0.05",
    }


@pytest.fixture(scope="session")
async def notify_worker(
    notify_env: dict[str, str], service_log_dir: Path
) -> AsyncIterator[ManagedProcess]:
    process = await asyncio.to_thread(
        start_worker_process,
        "xtyl_notify.worker",
        notify_env,
        log_dir=service_log_dir,
        name="notify-worker",
        ready_log=b"consumer_started",
    )
    yield process
    await asyncio.to_thread(process.stop)


@pytest.fixture(scope="session")
async def notify_api(
    notify_env: dict[str, str], service_log_dir: Path, issuer: LocalIssuer
) -> AsyncIterator[RunningService]:
    async with running_service_async(
        "xtyl_notify", notify_env, log_dir=service_log_dir, name="notify", ready_path="/readyz"
    ) as service:
        yield service


@pytest.fixture(scope="session")
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = create_redis(redis_url)
    yield client
    await client.aclose()


@pytest.fixture(scope="session")
async def db(migrated_database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool: asyncpg.Pool = await asyncpg.create_pool(migrated_database_url, min_size=1, max_size=2)
    yield pool
    await pool.close()


@dataclass(frozen=True)
class Bus:
    """Publishes events on the session's streams the way the outbox relay does."""

    redis: Redis
    prefix: str

    async def publish(self, event: Event) -> None:
        await self.redis.xadd(
            stream_key(event.domain, self.prefix),
            {b"type": event.type.encode(), b"event": encode_event(event)},
        )

    async def publish_all(self, events: Sequence[Event]) -> None:
        """Publish ``events`` in order, in one round trip (a burst, as a busy relay sends)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for event in events:
                pipe.xadd(  # pyright: ignore[reportUnknownMemberType]
                    stream_key(event.domain, self.prefix),
                    {b"type": event.type.encode(), b"event": encode_event(event)},
                )
            await pipe.execute()

    async def dead_letters(self, domain: str) -> list[dict[bytes, bytes]]:
        """The entries the ``notify`` group moved to ``<stream>:dead``."""
        dead = await self.redis.xrange(dead_letter_key(stream_key(domain, self.prefix)))
        return [fields for _, fields in dead if fields[b"group"] == GROUP.encode()]

    async def drained(self, domain: str, timeout_s: float = 15.0) -> None:
        """Wait until the ``notify`` group has read and acknowledged everything on ``domain``."""
        stream = stream_key(domain, self.prefix)
        async with asyncio.timeout(timeout_s):
            while True:
                groups: list[dict[Any, Any]] = await self.redis.xinfo_groups(stream)
                group = next((g for g in groups if g["name"] == GROUP.encode()), None)
                if group is not None and group["pending"] == 0 and group["lag"] == 0:
                    return
                await asyncio.sleep(0.05)


@pytest.fixture
def bus(redis: Redis, stream_prefix: str, notify_worker: ManagedProcess) -> Bus:
    return Bus(redis, stream_prefix)


def user_created(
    user_id: uuid.UUID | None = None, *, email: str | None = None, full_name: str | None = None
) -> UserCreated:
    user_id = user_id or uuid.uuid4()
    return UserCreated(
        producer="test",
        payload=UserCreatedPayload(
            user_id=user_id,
            email=email if email is not None else f"{user_id.hex[:12]}@example.com",
            full_name=full_name,
        ),
    )


def document_indexed(owner_id: uuid.UUID, title: str = "Quarterly report.pdf") -> DocumentIndexed:
    return DocumentIndexed(
        producer="test",
        payload=DocumentIndexedPayload(
            document_id=uuid.uuid4(), owner_id=owner_id, title=title, chunk_count=3
        ),
    )


def document_failed(owner_id: uuid.UUID, reason: str = "encrypted") -> DocumentFailed:
    return DocumentFailed(
        producer="test",
        payload=DocumentFailedPayload(document_id=uuid.uuid4(), owner_id=owner_id, reason=reason),
    )


def address_hash(address: str) -> str:
    """How the session's notify keeps ``address`` in suppressions (and an erased log)."""
    return AddressHasher(EMAIL_HASH_PEPPER).hash(address)


async def email_rows(db: asyncpg.Pool, dedupe_key: str) -> list[dict[str, Any]]:
    rows = await db.fetch("select * from xtyl_notify.emails where dedupe_key = $1", dedupe_key)
    return [dict(row.items()) for row in rows]


async def wait_for_status(
    db: asyncpg.Pool, dedupe_key: str, status: str, timeout_s: float = 15.0
) -> dict[str, Any]:
    async def final() -> bool:
        rows = await email_rows(db, dedupe_key)
        return bool(rows) and rows[0]["status"] == status

    await eventually(final, timeout_s)
    [row] = await email_rows(db, dedupe_key)
    return row


async def warm_pool(service: NotifyService, connections: int = 6) -> None:
    """Open the pool's connections now: asyncpg's connect stats ~/.pgpass, a blocking call the
    blockbuster fixture would (rightly) flag inside a test."""
    check = service.readiness["postgres"]
    await asyncio.gather(*(check() for _ in range(connections)))
