"""notify-worker end to end: events on the streams -> emails at the Brevo stand-in, once."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable
from typing import cast

import asyncpg
import pytest

from xtyl_common.events import encode_event, stream_key
from xtyl_common.events.streams import retries_key
from xtyl_devstack.brevo import LocalBrevo
from xtyl_devstack.testing import eventually

from .conftest import (
    APP_URL,
    DOCUMENT_WINDOW_S,
    GROUP,
    MAX_TRIES,
    PUBLIC_API_URL,
    RETRY_HORIZON_S,
    Bus,
    document_failed,
    document_indexed,
    email_rows,
    user_created,
    wait_for_status,
)

pytestmark = pytest.mark.integration


async def test_welcome_is_sent_once_when_the_entry_is_delivered_twice(
    bus: Bus, brevo: LocalBrevo, db: asyncpg.Pool
) -> None:
    event = user_created(full_name="Ada <script>alert(1)</script> Lovelace")
    address = event.payload.email
    assert address is not None
    await bus.publish(event)
    await bus.publish(event)  # the relay's at-least-once: the same event in a second entry

    [email] = await brevo.wait_for_emails(address)
    await bus.drained("users")
    row = await wait_for_status(db, f"user.created:{event.payload.user_id}", "sent")

    assert brevo.emails_to(address) == [email]
    assert brevo.requests_to(address) == [201]
    assert row["attempts"] == 1
    assert row["brevo_message_id"] == email["messageId"]
    assert row["user_id"] == event.payload.user_id
    assert email["sender"] == {"email": "no-reply@xtyl.test", "name": "xtyl tests"}
    assert email["to"] == [{"email": address, "name": "Ada <script>alert(1)</script> Lovelace"}]
    assert email["subject"] == "Welcome to xtyl"
    assert "Hi Ada &lt;script&gt;alert(1)&lt;/script&gt; Lovelace," in email["htmlContent"]
    assert "<script>" not in email["htmlContent"]
    assert email["textContent"].startswith("Hi Ada <script>alert(1)</script> Lovelace,")
    assert f'href="{APP_URL}/"' in email["htmlContent"]
    assert email["tags"] == ["welcome"]
    assert email["headers"]["idempotencyKey"] == str(row["id"])


async def test_a_user_without_a_name_gets_a_neutral_greeting(bus: Bus, brevo: LocalBrevo) -> None:
    event = user_created(full_name=None)
    assert event.payload.email is not None
    await bus.publish(event)
    [email] = await brevo.wait_for_emails(event.payload.email)
    assert email["textContent"].startswith("Hello,\n")
    assert email["to"] == [{"email": event.payload.email}]


async def test_rate_limited_send_is_retried_and_sent_once(
    bus: Bus, brevo: LocalBrevo, db: asyncpg.Pool
) -> None:
    event = user_created()
    address = event.payload.email
    assert address is not None
    brevo.fail_next(429, to=address)
    await bus.publish(event)

    await brevo.wait_for_emails(address)
    row = await wait_for_status(db, f"user.created:{event.payload.user_id}", "sent")
    await bus.drained("users")

    assert brevo.requests_to(address) == [429, 201]
    assert len(brevo.emails_to(address)) == 1
    assert row["attempts"] == 2
    assert "too_many_requests" in row["last_error"]


async def test_brevo_refusal_fails_the_email_and_dead_letters_the_event_at_once(
    bus: Bus, brevo: LocalBrevo, db: asyncpg.Pool
) -> None:
    event = user_created()
    address = event.payload.email
    assert address is not None
    brevo.fail_next(400, to=address, code="invalid_parameter")
    await bus.publish(event)

    row = await wait_for_status(db, f"user.created:{event.payload.user_id}", "failed")
    await bus.drained("users")

    assert brevo.requests_to(address) == [400]
    assert brevo.emails_to(address) == []
    assert row["attempts"] == 1
    assert row["last_error"].startswith("invalid_parameter:")
    [dead] = [d for d in await bus.dead_letters("users") if d[b"event"] == encode_event(event)]
    assert dead[b"deliveries"] == b"1"
    assert dead[b"error"].startswith(b"permanent failure: BrevoRejected: brevo 400 invalid_param")


async def test_brevo_down_past_the_retry_horizon_fails_the_email_after_retrying(
    bus: Bus, brevo: LocalBrevo, db: asyncpg.Pool
) -> None:
    event = user_created()
    address = event.payload.email
    assert address is not None
    key = f"user.created:{event.payload.user_id}"
    brevo.fail_next(503, to=address, times=1_000)
    try:
        await bus.publish(event)

        waiting = await wait_for_status(db, key, "retrying")
        assert waiting["last_error"] == "service_unavailable: programmed failure"
        row = await wait_for_status(db, key, "failed", timeout_s=RETRY_HORIZON_S + 15)
        await bus.drained("users")
    finally:
        brevo.failures.clear()

    requests = brevo.requests_to(address)
    assert requests == [503] * len(requests)
    assert len(requests) > MAX_TRIES  # a try count no longer ends a dependency's outage
    assert row["attempts"] == len(requests)
    assert row["last_error"].startswith(f"gave up after {len(requests)} attempts; service_unav")
    assert brevo.emails_to(address) == []
    [dead] = [d for d in await bus.dead_letters("users") if d[b"event"] == encode_event(event)]
    assert dead[b"error"].startswith(b"still failing ")
    assert f"({len(requests)} failures)".encode() in dead[b"error"]


async def test_brevo_back_within_the_horizon_sends_the_email_once(
    bus: Bus, brevo: LocalBrevo, db: asyncpg.Pool
) -> None:
    event = user_created()
    address = event.payload.email
    assert address is not None
    brevo.fail_next(503, to=address, times=MAX_TRIES + 2)
    await bus.publish(event)

    [email] = await brevo.wait_for_emails(address)
    row = await wait_for_status(db, f"user.created:{event.payload.user_id}", "sent")
    await bus.drained("users")

    assert brevo.requests_to(address) == [503] * (MAX_TRIES + 2) + [201]
    assert row["attempts"] == MAX_TRIES + 3
    assert row["brevo_message_id"] == email["messageId"]
    assert not [d for d in await bus.dead_letters("users") if d[b"event"] == encode_event(event)]

    async def nothing_retrying() -> bool:
        key = retries_key(stream_key("users", bus.prefix), GROUP)
        return not await cast("Awaitable[int]", bus.redis.hlen(key))

    await eventually(nothing_retrying)


async def test_document_events_email_the_owner_known_from_user_created(
    bus: Bus, brevo: LocalBrevo, db: asyncpg.Pool
) -> None:
    created = user_created(full_name="Grace")
    owner = created.payload.user_id
    address = created.payload.email
    assert address is not None
    await bus.publish(created)
    await brevo.wait_for_emails(address)

    indexed = document_indexed(owner, title="Q3 <b>numbers</b>.pdf")
    failed = document_failed(owner, reason="encrypted")
    await bus.publish(indexed)
    await bus.publish(indexed)
    await brevo.wait_for_emails(address, 2)  # the first document email goes at once
    await bus.publish(failed)
    # the failure, within the window, comes as the digest
    emails = await brevo.wait_for_emails(address, 3, timeout_s=DOCUMENT_WINDOW_S + 15)
    await bus.drained("documents")

    welcome, ready, digest = emails
    assert welcome["subject"] == "Welcome to xtyl"
    assert "List-Unsubscribe" not in welcome["headers"]  # sent once: nothing to stop
    assert ready["subject"] == "Your document is ready: Q3 <b>numbers</b>.pdf"
    assert "<strong>Q3 &lt;b&gt;numbers&lt;/b&gt;.pdf</strong>" in ready["htmlContent"]
    assert f"{APP_URL}/documents/{indexed.payload.document_id}" in ready["textContent"]
    assert ready["tags"] == ["document_ready"]
    assert ready["headers"]["List-Unsubscribe"].startswith(
        f"<{PUBLIC_API_URL}/v1/notifications/unsubscribe?token="
    )
    assert ready["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert digest["subject"] == "Your documents: 1 document could not be processed"
    assert "password-protected" in digest["textContent"]
    assert digest["textContent"].startswith("Hi Grace,")
    assert f"{APP_URL}/documents/{failed.payload.document_id}" in digest["textContent"]
    assert digest["tags"] == ["document_digest"]
    assert "List-Unsubscribe" in digest["headers"]
    row = await wait_for_status(db, f"document.indexed:{indexed.payload.document_id}", "sent")
    assert row["user_id"] == owner
    assert row["kind"] == "document_ready"
    assert (
        await db.fetchval(
            "select count(*) from xtyl_notify.emails where user_id = $1 and kind = $2",
            owner,
            "document_digest",
        )
        == 1
    )


async def test_document_event_for_an_unknown_user_sends_nothing(bus: Bus, db: asyncpg.Pool) -> None:
    event = document_indexed(uuid.uuid4())
    await bus.publish(event)
    await bus.drained("documents")
    assert await email_rows(db, f"document.indexed:{event.payload.document_id}") == []


async def test_user_without_email_is_skipped(bus: Bus, db: asyncpg.Pool) -> None:
    event = user_created(email="")
    await bus.publish(event)
    await bus.drained("users")
    assert await email_rows(db, f"user.created:{event.payload.user_id}") == []
