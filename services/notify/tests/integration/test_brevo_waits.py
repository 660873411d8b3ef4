"""How long a send waits for Brevo, measured at a scripted Brevo endpoint: a rate-limited send
is tried again when Brevo's ``x-sib-ratelimit-reset`` says (not after a generic backoff), by the
stream's retry for event emails and in process for the auth hook's, and the hook answers before
Supabase's deadline whatever Brevo does."""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import msgspec
import pytest
from redis.asyncio import Redis

from xtyl_common.settings import load_settings
from xtyl_devstack.processes import ManagedProcess
from xtyl_devstack.service_process import start_worker_process
from xtyl_notify.domain.auth_emails import SendEmailHook, auth_dedupe_key
from xtyl_notify.domain.emails import EmailStatus
from xtyl_notify.service import (
    AUTH_EMAIL_SENDS,
    AUTH_HOOK_ANSWER_S,
    AUTH_HOOK_DEADLINE_S,
    EmailNotSentInTime,
    NotifyService,
    open_service,
)
from xtyl_notify.settings import NotifySettings

from .conftest import Bus, email_rows, user_created, wait_for_status, warm_pool
from .scripted_brevo import Answer, ScriptedBrevo, rate_limited

pytestmark = pytest.mark.integration

#: The worker below gives up on an email this long after its first failure ...
RETRY_HORIZON_S = 2.0
#: ... and, without a wait from Brevo, tries again after 0.2 s doubling up to 1 s.
BACKOFF_S, BACKOFF_MAX_S = 0.2, 1.0
#: Time the stream consumer adds to a retry's due time (its polling, the handler's start).
CONSUMER_SLACK_S = 0.6


@pytest.fixture(scope="module")
async def scripted() -> AsyncIterator[ScriptedBrevo]:
    async with ScriptedBrevo() as server:
        yield server


@pytest.fixture
def fresh(scripted: ScriptedBrevo) -> ScriptedBrevo:
    """The scripted Brevo, with nothing left from an earlier test."""
    scripted.script.clear()
    scripted.arrivals.clear()
    scripted.statuses.clear()
    return scripted


@pytest.fixture(scope="module")
def reset_prefix() -> str:
    return f"test:brevo-waits:{secrets.token_hex(4)}:events"


@pytest.fixture(scope="module")
async def reset_worker(
    notify_env: dict[str, str], service_log_dir: Path, scripted: ScriptedBrevo, reset_prefix: str
) -> AsyncIterator[ManagedProcess]:
    """A notify-worker on streams of its own, sending to the scripted Brevo."""
    env = {
        **notify_env,
        "BREVO_API_URL": scripted.url,
        "EVENTS_STREAM_PREFIX": reset_prefix,
        "EVENTS_RETRY_HORIZON_S": str(RETRY_HORIZON_S),
        "EVENTS_RETRY_BACKOFF_S": str(BACKOFF_S),
        "EVENTS_RETRY_BACKOFF_MAX_S": str(BACKOFF_MAX_S),
    }
    process = await asyncio.to_thread(
        start_worker_process,
        "xtyl_notify.worker",
        env,
        log_dir=service_log_dir,
        name="notify-worker-waits",
        ready_log=b"consumer_started",
    )
    yield process
    await asyncio.to_thread(process.stop)


@pytest.fixture(scope="module")
async def hook_service(
    notify_env: dict[str, str], scripted: ScriptedBrevo
) -> AsyncIterator[NotifyService]:
    """The service as the API opens it, sending to the scripted Brevo."""
    settings = load_settings(NotifySettings, environ={**notify_env, "BREVO_API_URL": scripted.url})
    async with open_service(settings) as service:
        await warm_pool(service)
        yield service


@pytest.mark.parametrize(
    "reset_s",
    [
        1.5,  # within the retry horizon: the stream's retry waits the reset, not its backoff
        3.0,  # past it: the email is not failed at the horizon, one last try after the reset
    ],
)
async def test_a_rate_limited_event_email_is_sent_again_when_brevo_s_limit_resets(
    fresh: ScriptedBrevo,
    reset_worker: ManagedProcess,
    redis: Redis,
    db: asyncpg.Pool,
    reset_prefix: str,
    reset_s: float,
) -> None:
    fresh.then(rate_limited(reset_s))
    event = user_created()
    await Bus(redis, reset_prefix).publish(event)

    row = await wait_for_status(db, f"user.created:{event.payload.user_id}", "sent", 15.0)
    assert fresh.statuses == [429, 201]
    (gap,) = fresh.gaps()
    # Backoff alone would have tried again within BACKOFF_S (jittered): Brevo's reset decides.
    assert reset_s <= gap < reset_s * 1.1 + CONSUMER_SLACK_S, gap
    assert row["attempts"] == 2
    assert "too_many_requests" in row["last_error"]


def hook_call(address: str) -> SendEmailHook:
    return msgspec.convert(
        {
            "user": {"id": str(uuid.uuid4()), "email": address},
            "email_data": {
                "email_action_type": "recovery",
                "token": "123456",
                "token_hash": "ab" * 28,
                "site_url": "https://project.supabase.co/auth/v1",
            },
        },
        SendEmailHook,
    )


def unique_address() -> str:
    return f"hook-{secrets.token_hex(6)}@example.com"


async def test_the_hook_waits_a_short_rate_limit_reset_and_sends(
    fresh: ScriptedBrevo, hook_service: NotifyService, db: asyncpg.Pool
) -> None:
    fresh.then(rate_limited(0.6))
    webhook_id = str(uuid.uuid4())

    statuses = await hook_service.send_auth_emails(webhook_id, hook_call(unique_address()))

    assert statuses == [EmailStatus.SENT]
    assert fresh.statuses == [429, 201]
    (gap,) = fresh.gaps()
    # AUTH_EMAIL_SENDS' own backoff is 0.1 s: the 0.6 s are Brevo's
    assert 0.6 <= gap < 0.6 + 0.3, gap
    [row] = await email_rows(db, auth_dedupe_key(webhook_id, "to"))
    assert (row["status"], row["attempts"]) == ("sent", 2)


async def test_the_hook_does_not_wait_a_reset_past_its_deadline(
    fresh: ScriptedBrevo, hook_service: NotifyService, db: asyncpg.Pool
) -> None:
    fresh.then(rate_limited(30))
    webhook_id = str(uuid.uuid4())

    started = time.monotonic()
    with pytest.raises(EmailNotSentInTime) as raised:
        await hook_service.send_auth_emails(webhook_id, hook_call(unique_address()))

    assert time.monotonic() - started < 1.0  # answered at once: Supabase would not wait 30 s
    assert raised.value.retry_after_s == 30
    assert fresh.statuses == [429]
    [row] = await email_rows(db, auth_dedupe_key(webhook_id, "to"))
    assert row["status"] == "failed"
    assert row["last_error"].startswith("gave up after 1 attempts; too_many_requests")


async def test_the_hook_answers_before_supabase_s_deadline_when_brevo_does_not(
    fresh: ScriptedBrevo, hook_service: NotifyService, db: asyncpg.Pool
) -> None:
    fresh.then(Answer(201, hold_s=30))  # BREVO_TIMEOUT_S is 5 s: longer than the hook has
    webhook_id = str(uuid.uuid4())

    started = time.monotonic()
    with pytest.raises(EmailNotSentInTime):
        await hook_service.send_auth_emails(webhook_id, hook_call(unique_address()))
    elapsed = time.monotonic() - started

    assert AUTH_EMAIL_SENDS.timeout_s is not None
    assert AUTH_EMAIL_SENDS.timeout_s - 0.1 <= elapsed < AUTH_HOOK_ANSWER_S < AUTH_HOOK_DEADLINE_S
    [row] = await email_rows(db, auth_dedupe_key(webhook_id, "to"))
    assert row["status"] == "failed"
    assert "timeout" in row["last_error"]
