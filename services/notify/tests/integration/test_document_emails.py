"""Document emails as a person receives them: at most one per window, the rest in one digest
listing every document; the kinds they turned off neither sent nor listed; a one-click
unsubscribe link on every one of them."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import asyncpg
import pytest

from xtyl_common.events import Event
from xtyl_common.settings import load_settings
from xtyl_devstack.brevo import LocalBrevo
from xtyl_devstack.issuer import LocalIssuer
from xtyl_devstack.service_process import RunningService
from xtyl_devstack.testing import eventually
from xtyl_notify.adapters.documents import DocumentNotice, Outcome
from xtyl_notify.service import NotifyService, open_service
from xtyl_notify.settings import NotifySettings

from .conftest import (
    APP_URL,
    DOCUMENT_WINDOW_S,
    PUBLIC_API_URL,
    Bus,
    document_failed,
    document_indexed,
    user_created,
    warm_pool,
)

pytestmark = pytest.mark.integration

UNSUBSCRIBE = f"<{PUBLIC_API_URL}/v1/notifications/unsubscribe?token="
#: How long a digest may take after its window ends (the loop's interval, a busy machine).
DIGEST_SLACK_S = 15.0


async def signed_up(bus: Bus, brevo: LocalBrevo, name: str = "Ada") -> tuple[uuid.UUID, str]:
    created = user_created(full_name=name)
    address = created.payload.email
    assert address is not None
    await bus.publish(created)
    await brevo.wait_for_emails(address)  # the welcome email
    return created.payload.user_id, address


def document_links(email: dict[str, Any]) -> set[str]:
    return set(
        re.findall(rf"{re.escape(APP_URL)}/documents/([0-9a-f-]{{36}})", email["textContent"])
    )


async def nothing_pending(db: asyncpg.Pool, user_id: uuid.UUID) -> None:
    """Nothing more can be sent to the user: no notice waits, no digest is due or open."""
    assert not await db.fetchval(
        "select count(*) from xtyl_notify.document_notices"
        " where user_id = $1 and status = 'pending'",
        user_id,
    )
    assert (
        await db.fetchval(
            "select due_at from xtyl_notify.document_windows where user_id = $1", user_id
        )
        is None
    )

    async def all_settled() -> bool:
        # The Brevo stand-in holds an email as soon as it is posted; notify marks it sent
        # only when Brevo's answer is back, a moment later.
        return not await db.fetchval(
            "select count(*) from xtyl_notify.emails"
            " where user_id = $1 and status in ('queued', 'retrying')",
            user_id,
        )

    await eventually(all_settled, timeout_s=10)


async def preferences(
    http: aiohttp.ClientSession, api: RunningService, token: str, body: dict[str, bool]
) -> None:
    async with http.put(
        f"{api.url}/v1/notifications/preferences",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
    ) as resp:
        assert resp.status == 200, await resp.text()


@pytest.mark.timeout(180)
async def test_317_document_events_in_a_minute_make_two_emails_listing_every_document(
    bus: Bus, brevo: LocalBrevo, db: asyncpg.Pool
) -> None:
    user_id, address = await signed_up(bus, brevo)
    ready = [document_indexed(user_id, title=f"Report {i:03d}.pdf") for i in range(300)]
    failed = [document_failed(user_id, reason="encrypted") for _ in range(17)]
    await bus.publish(ready[0])
    await brevo.wait_for_emails(address, 2)  # the first goes at once
    events: list[Event] = [*ready[1:], *failed]
    events.insert(150, ready[3])  # a redelivery in the middle of the burst
    await bus.publish_all(events)
    await bus.drained("documents", timeout_s=60)

    welcome, first, digest = await brevo.wait_for_emails(
        address, 3, timeout_s=DOCUMENT_WINDOW_S + DIGEST_SLACK_S
    )
    await nothing_pending(db, user_id)  # no third email can come
    assert len(brevo.emails_to(address)) == 3
    assert welcome["subject"] == "Welcome to xtyl"
    assert first["subject"] == "Your document is ready: Report 000.pdf"
    assert digest["subject"] == (
        "Your documents: 299 documents are ready, 17 documents could not be processed"
    )
    assert digest["receivedAt"] > first["receivedAt"]
    every = {str(e.payload.document_id) for e in ready} | {
        str(e.payload.document_id) for e in failed
    }
    assert len(every) == 317
    assert document_links(first) | document_links(digest) == every
    assert document_links(first).isdisjoint(document_links(digest))
    assert digest["textContent"].count("Could not be processed:") == 17
    for email in (first, digest):
        assert email["headers"]["List-Unsubscribe"].startswith(UNSUBSCRIBE)
        assert email["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        unsubscribe = email["headers"]["List-Unsubscribe"][1:-1]
        assert unsubscribe in email["textContent"]  # the same link in the footer
    sent = await db.fetch(
        "select kind, status from xtyl_notify.emails where user_id = $1 order by created_at",
        user_id,
    )
    assert [(r["kind"], r["status"]) for r in sent] == [
        ("welcome", "sent"),
        ("document_ready", "sent"),
        ("document_digest", "sent"),
    ]


async def test_a_kind_turned_off_is_neither_sent_nor_listed(
    bus: Bus,
    brevo: LocalBrevo,
    db: asyncpg.Pool,
    notify_api: RunningService,
    http: aiohttp.ClientSession,
    issuer: LocalIssuer,
) -> None:
    user_id, address = await signed_up(bus, brevo, "Grace")
    token = issuer.mint(user_id=user_id, email=address)
    first = document_failed(user_id, reason="no_text")
    ready_later = document_indexed(user_id, title="Later.pdf")
    failed_later = document_failed(user_id, reason="timeout")
    await bus.publish(first)
    await brevo.wait_for_emails(address, 2)
    await bus.publish_all([ready_later, failed_later])
    await bus.drained("documents")
    # within the window: the user turns "ready" emails off before the digest is made
    await preferences(http, notify_api, token, {"document_ready": False, "document_failed": True})
    ready_after = document_indexed(user_id, title="After.pdf")
    await bus.publish(ready_after)
    await bus.drained("documents")

    _, single, digest = await brevo.wait_for_emails(
        address, 3, timeout_s=DOCUMENT_WINDOW_S + DIGEST_SLACK_S
    )
    await nothing_pending(db, user_id)
    assert single["subject"] == "We could not process your document"
    assert digest["subject"] == "Your documents: 1 document could not be processed"
    assert document_links(digest) == {str(failed_later.payload.document_id)}
    assert "Later.pdf" not in digest["textContent"]
    assert "After.pdf" not in digest["textContent"]
    assert len(brevo.emails_to(address)) == 3
    statuses = await db.fetch(
        "select document_id, status from xtyl_notify.document_notices where user_id = $1",
        user_id,
    )
    assert {r["document_id"]: r["status"] for r in statuses} == {
        first.payload.document_id: "emailed",
        ready_later.payload.document_id: "dropped",  # turned off before its digest
        failed_later.payload.document_id: "emailed",
    }  # After.pdf came when the kind was off: not even noted


async def test_both_kinds_off_send_nothing_at_all(
    bus: Bus,
    brevo: LocalBrevo,
    db: asyncpg.Pool,
    notify_api: RunningService,
    http: aiohttp.ClientSession,
    issuer: LocalIssuer,
) -> None:
    user_id, address = await signed_up(bus, brevo, "Edsger")
    token = issuer.mint(user_id=user_id, email=address)
    await preferences(http, notify_api, token, {"document_ready": False, "document_failed": False})
    await bus.publish_all(
        [document_indexed(user_id) for _ in range(5)] + [document_failed(user_id) for _ in range(5)]
    )
    await bus.drained("documents")

    await nothing_pending(db, user_id)
    assert not await db.fetchval(
        "select count(*) from xtyl_notify.document_notices where user_id = $1", user_id
    )
    assert [e["subject"] for e in brevo.emails_to(address)] == ["Welcome to xtyl"]
    assert not await db.fetchval(
        "select count(*) from xtyl_notify.emails where user_id = $1 and kind <> 'welcome'",
        user_id,
    )


async def test_a_digest_waits_out_brevo_and_is_sent_once(
    bus: Bus, brevo: LocalBrevo, db: asyncpg.Pool
) -> None:
    """Brevo down when the digest is due: the digest row is ``retrying`` and the worker's loop
    tries it again (Brevo's rate-limit reset) until Brevo takes it, once."""
    user_id, address = await signed_up(bus, brevo, "Barbara")
    await bus.publish(document_indexed(user_id, title="D0.pdf"))
    await brevo.wait_for_emails(address, 2)  # welcome, the first document
    await bus.publish_all([document_indexed(user_id, title=f"D{i}.pdf") for i in (1, 2)])
    brevo.fail_next(429, to=address)  # the digest's first try: rate limited (reset: 1 s)
    await bus.drained("documents")

    emails = await brevo.wait_for_emails(address, 3, timeout_s=DOCUMENT_WINDOW_S + DIGEST_SLACK_S)
    await nothing_pending(db, user_id)
    assert brevo.requests_to(address)[-2:] == [429, 201]
    assert emails[-1]["subject"] == "Your documents: 2 documents are ready"
    row = await db.fetchrow(
        "select status, attempts, last_error, first_failed_at from xtyl_notify.emails"
        " where user_id = $1 and kind = 'document_digest'",
        user_id,
    )
    assert row is not None
    assert (row["status"], row["attempts"]) == ("sent", 2)
    assert row["last_error"].startswith("too_many_requests")
    assert row["first_failed_at"] is not None
    assert len(brevo.emails_to(address)) == 3


@pytest.fixture(scope="module")
async def service(notify_env: dict[str, str]) -> AsyncIterator[NotifyService]:
    async with open_service(load_settings(NotifySettings, environ=notify_env)) as opened:
        await warm_pool(opened)
        yield opened


async def test_concurrent_workers_send_one_first_email_and_one_digest(
    service: NotifyService, bus: Bus, brevo: LocalBrevo, db: asyncpg.Pool
) -> None:
    """Events of one user handled at once by many consumers: one of them is the window's
    first email; a due window seen by several digest passes at once (this process's, and the
    session's worker's loop): one digest, sent once."""
    user_id, address = await signed_up(bus, brevo, "Leslie")
    notices = [
        DocumentNotice(
            user_id=user_id,
            document_id=uuid.uuid4(),
            kind="document_ready",
            occurred_at=datetime.now(UTC),
            title=f"Paper {i}.pdf",
        )
        for i in range(20)
    ]
    decisions = await asyncio.gather(
        *(
            service.documents.notices.record(
                notice, email_key=f"document.indexed:{notice.document_id}", window_s=600
            )
            for notice in notices
        )
    )
    outcomes = [decision.outcome for decision in decisions]
    assert outcomes.count(Outcome.SEND_NOW) == 1
    assert outcomes.count(Outcome.PENDING) == 19

    # the window ends now (its clock moved on): every digest pass looks at once
    await db.execute(
        "update xtyl_notify.document_windows set due_at = now() where user_id = $1", user_id
    )
    await asyncio.gather(*(service.documents.send_due() for _ in range(3)))

    async def sent() -> bool:
        return (
            await db.fetchval(
                "select status from xtyl_notify.emails"
                " where user_id = $1 and kind = 'document_digest'",
                user_id,
            )
            == "sent"
        )

    await eventually(sent)
    await nothing_pending(db, user_id)
    digests = [e for e in brevo.emails_to(address) if e["tags"] == ["document_digest"]]
    assert len(digests) == 1
    assert digests[0]["subject"] == "Your documents: 19 documents are ready"
    assert brevo.requests_to(address) == [201, 201]  # the welcome email and the digest
